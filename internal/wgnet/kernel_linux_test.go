//go:build linux

package wgnet

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

const netnsEnv = "KAKUREMICHI_TEST_NETNS"

// inNetns runs the calling test again in a network namespace of its own
// (this test binary, only this test), so that the TUN interface, its
// routes and the forwarding switch it turns on touch nothing of the host.
// It returns true in that child, where the test's body runs, and false in
// the parent once the child has passed.
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == t.Name() {
		loUp(t)
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace and a TUN interface")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN device: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), netnsEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("in its own network namespace: %v\n%s", err, out)
	}
	t.Logf("passed in its own network namespace:\n%s", out)
	return false
}

// loUp brings up the loopback interface of a new network namespace.
func loUp(tb testing.TB) {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		tb.Fatalf("bringing up lo in the test's namespace: %v", err)
	}
}

func tunNode(t testing.TB, name, addr string) *node {
	t.Helper()
	return newNode(t, name, addr, func(c *Config) {
		c.Backend = BackendTUN
		c.Interface = "kkmtest0"
	})
}

// TestTUNBackend: a gateway on the kernel's TCP/IP through a TUN
// interface and agents on the netstack reach each other both ways, carry
// 64 MiB intact each way, keep one route per peer, and the gateway is
// never a router between its peers even with forwarding on.
func TestTUNBackend(t *testing.T) {
	if !inNetns(t) {
		return
	}
	gw := tunNode(t, "gateway", "100.64.0.1")
	if gw.dev.Backend() != BackendTUN {
		t.Fatalf("backend %q, want tun", gw.dev.Backend())
	}
	a1 := newNode(t, "agent1", "100.64.0.2")
	a2 := newNode(t, "agent2", "100.64.0.3")
	start := time.Now().Add(-time.Second)
	gw.setPeers(t, a1.asPassive(), a2.asPassive())
	// Both agents would send anything in the overlay to the gateway, and
	// take anything from it: only the gateway stands between them.
	a1.setPeers(t, gw.asDialed(netip.MustParsePrefix("100.64.0.0/24")))
	a2.setPeers(t, gw.asDialed(netip.MustParsePrefix("100.64.0.0/24")))
	waitHandshake(t, a1, gw, start)
	waitHandshake(t, a2, gw, start)

	t.Run("routes", func(t *testing.T) {
		if got, want := tunRoutes(t), []string{"100.64.0.2/32", "100.64.0.3/32"}; !slices.Equal(got, want) {
			t.Fatalf("routes on the interface: %v, want %v", got, want)
		}
	})

	t.Run("http both ways", func(t *testing.T) {
		port := serveHTTP(t, a1, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "agent1 via "+r.RemoteAddr)
		}))
		c, err := dialTimeout(gw, hostPort(a1.addr, port), 5*time.Second)
		if err != nil {
			t.Fatalf("gateway dialling agent1: %v", err)
		}
		io.WriteString(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
		body, _ := io.ReadAll(c)
		c.Close()
		if !strings.Contains(string(body), "agent1 via 100.64.0.1:") {
			t.Fatalf("got %q, want agent1's answer to 100.64.0.1", body)
		}
		l, err := gw.dev.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Write([]byte("hello from the gateway"))
				c.Close()
			}
		}()
		c, err = dialTimeout(a2, l.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatalf("agent2 dialling the gateway: %v", err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != "hello from the gateway" {
			t.Fatalf("got %q", got)
		}
	})

	t.Run("bulk", func(t *testing.T) {
		const size = 64 << 20
		want := sha256.New()
		io.Copy(want, patternReader(3, size))
		for _, dir := range []struct {
			name     string
			from, to *node
		}{{"gateway to agent", gw, a1}, {"agent to gateway", a1, gw}} {
			l, err := dir.to.dev.Listen("tcp", ":0")
			if err != nil {
				t.Fatal(err)
			}
			go sinkServer(l)
			c, err := dialTimeout(dir.from, l.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", dir.name, err)
			}
			c.SetDeadline(time.Now().Add(60 * time.Second))
			got, err := sendAndHash(c, 3, size)
			c.Close()
			l.Close()
			if err != nil || !bytes.Equal(got, want.Sum(nil)) {
				t.Fatalf("%s: sha256 %x (%v), want %x", dir.name, got, err, want.Sum(nil))
			}
		}
	})

	t.Run("not a router", func(t *testing.T) {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			t.Fatalf("turning forwarding on in the test's namespace: %v", err)
		}
		l, err := a2.dev.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		if c, err := dialTimeout(a1, l.Addr().String(), 3*time.Second); err == nil {
			c.Close()
			t.Fatal("agent1 reached agent2 through the gateway")
		}
		// The same listener is reachable from the gateway itself.
		c, err := dialTimeout(gw, l.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatalf("gateway dialling agent2: %v", err)
		}
		c.Close()
	})

	t.Run("a removed peer takes its route", func(t *testing.T) {
		gw.setPeers(t, a1.asPassive())
		if got, want := tunRoutes(t), []string{"100.64.0.2/32"}; !slices.Equal(got, want) {
			t.Fatalf("routes on the interface: %v, want %v", got, want)
		}
		if _, err := dialTimeout(gw, hostPort(a2.addr, 80), time.Second); err == nil {
			t.Fatal("dialled a removed peer")
		}
	})
}

// tunRoutes lists the routes this package put on the test interface.
func tunRoutes(t *testing.T) []string {
	t.Helper()
	l, err := netlink.LinkByName("kkmtest0")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := netlink.RouteListFiltered(syscall.AF_INET, &netlink.Route{LinkIndex: l.Attrs().Index, Protocol: routeProtocol}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Dst.String())
	}
	slices.Sort(out)
	return out
}
