package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kakuremichi/kakuremichi/api"
)

// benchNetns is a network namespace joined to the host by a veth pair, for
// a gateway on the kernel's TCP/IP (--wireguard-backend tun) whose
// interface and routes must not touch the host's.
type benchNetns struct {
	name        string
	host, inner netip.Addr
}

// benchRun runs a command and fails the benchmark with its output if it
// fails.
func benchRun(b *testing.B, args ...string) {
	b.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		b.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newBenchNetns makes the namespace; b.Cleanup deletes it. It needs root
// and iproute2.
func newBenchNetns(b *testing.B) *benchNetns {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Fatal("KAKUREMICHI_BENCH_TUN: a gateway on a TUN interface needs root (network namespaces, /dev/net/tun)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		b.Fatal("KAKUREMICHI_BENCH_TUN: the ip command (iproute2) is missing")
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	suffix := hex.EncodeToString(rnd[:2])
	existing, err := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	if err != nil {
		b.Fatalf("ip addr show: %v", err)
	}
	// A /30 of 10.233.0.0/16 that no interface of the host uses yet.
	var base netip.Addr
	for i := range 256 {
		third := (int(rnd[2]) + i) % 256
		if !strings.Contains(string(existing), fmt.Sprintf(" 10.233.%d.", third)) {
			base = netip.AddrFrom4([4]byte{10, 233, byte(third), 0})
			break
		}
	}
	if !base.IsValid() {
		b.Fatal("KAKUREMICHI_BENCH_TUN: no free /24 in 10.233.0.0/16 on this host")
	}
	b4 := base.As4()
	b4[3] = 1
	hostAddr := netip.AddrFrom4(b4)
	b4[3] = 2
	n := &benchNetns{name: "kmbench-" + suffix, host: hostAddr, inner: netip.AddrFrom4(b4)}
	hostIf, innerIf := "kmbh"+suffix, "kmbn"+suffix
	benchRun(b, "ip", "netns", "add", n.name)
	b.Cleanup(func() {
		// Deleting the namespace destroys its end of the pair and with it
		// the host's end.
		exec.Command("ip", "netns", "del", n.name).Run()
		exec.Command("ip", "link", "del", hostIf).Run()
	})
	benchRun(b, "ip", "link", "add", hostIf, "type", "veth", "peer", "name", innerIf)
	benchRun(b, "ip", "link", "set", innerIf, "netns", n.name)
	benchRun(b, "ip", "addr", "add", n.host.String()+"/30", "dev", hostIf)
	benchRun(b, "ip", "link", "set", hostIf, "up")
	benchRun(b, "ip", "-n", n.name, "addr", "add", n.inner.String()+"/30", "dev", innerIf)
	benchRun(b, "ip", "-n", n.name, "link", "set", innerIf, "up")
	benchRun(b, "ip", "-n", n.name, "link", "set", "lo", "up")
	return n
}

// newClusterAt is newCluster with Control listening on addr, so that a
// node in a network namespace can reach it.
func newClusterAt(b *testing.B, addr netip.Addr) *cluster {
	b.Helper()
	dir := b.TempDir()
	control := &controlProc{t: b, dataDir: filepath.Join(dir, "data"), addr: netip.AddrPortFrom(addr, uint16(freePort(b))).String(),
		logPath: filepath.Join(dir, "control.log")}
	control.start()
	b.Cleanup(control.kill)
	c := &cluster{t: b, control: control, agents: map[string]*controlProc{}, apps: map[string]string{}}
	c.token = control.adminToken()
	c.gwKey = c.apiKey("gateways", api.RoleGateway)
	c.agentKey = c.apiKey("agents", api.RoleAgent)
	return c
}

// addTUNGateway starts a gateway with --wireguard-backend tun inside the
// namespace and returns it with its HTTPS address (on the namespace's end
// of the veth pair).
func addTUNGateway(b *testing.B, c *cluster, n *benchNetns, name string) (*benchProc, string) {
	b.Helper()
	wgPort := freeUDPPort(b)
	https := netip.AddrPortFrom(n.inner, 18443).String()
	p := startBenchProc(b, "gateway-"+name, "ip", []string{"API_KEY=" + c.gwKey}, "netns", "exec", n.name, filepath.Join(binDir, "kakuremichi"),
		"gateway", "--name", name, "--state-dir", filepath.Join(b.TempDir(), "state"), "--control-url", c.control.url(),
		"--http-listen", netip.AddrPortFrom(n.inner, 18080).String(), "--https-listen", https,
		"--wireguard-listen", fmt.Sprintf(":%d", wgPort), "--public-endpoint", netip.AddrPortFrom(n.inner, uint16(wgPort)).String(),
		"--tcp-listen-host", n.inner.String(), "--wireguard-backend", "tun", "--wireguard-interface", "kmbench0", "--shutdown-grace", "5s")
	return p, https
}
