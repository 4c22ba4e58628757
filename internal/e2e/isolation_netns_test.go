package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kakuremichi/kakuremichi/api"
)

// isoNetwork is two network namespaces, "a" and "b", each joined to the
// host by a veth pair with a /30 of its own. The host ends carry .1 and
// .5, the namespace ends .2 and .6 of 10.231.N.0/29. Namespace a routes
// only its /30; namespace b routes its /30 and, to reach Control and the
// gateway's WireGuard port, the host end of a's pair as a /32 (delivered
// by the host itself, never forwarded). Neither namespace has a route to
// the other's /30, to the overlay 100.64.0.0/10, or a default route.
type isoNetwork struct {
	ns        map[string]string // "a"/"b" -> namespace name
	hostAddr  map[string]netip.Addr
	innerAddr map[string]netip.Addr
}

// isoRun runs a command and fails the test with its output if it fails.
func isoRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newIsoNetwork creates the namespaces and their links; t.Cleanup deletes
// them, also when the test fails. It skips the test where namespaces
// cannot be made.
func newIsoNetwork(t *testing.T) *isoNetwork {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the ip command (iproute2) is missing")
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	suffix := hex.EncodeToString(rnd[:2])
	// A /29 of 10.231.0.0/16 that no interface of the host uses yet.
	existing, err := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	if err != nil {
		t.Fatalf("ip addr show: %v", err)
	}
	var base netip.Addr
	for i := range 256 {
		third := (int(rnd[2]) + i) % 256
		if !strings.Contains(string(existing), fmt.Sprintf(" 10.231.%d.", third)) {
			base = netip.AddrFrom4([4]byte{10, 231, byte(third), 0})
			break
		}
	}
	if !base.IsValid() {
		t.Skip("no free /24 in 10.231.0.0/16 on this host")
	}
	n := &isoNetwork{ns: map[string]string{}, hostAddr: map[string]netip.Addr{}, innerAddr: map[string]netip.Addr{}}
	for i, side := range []string{"a", "b"} {
		ns := "kmiso-" + side + "-" + suffix
		host, inner := "kmh"+side+suffix, "kmn"+side+suffix
		n.ns[side] = ns
		b4 := base.As4()
		b4[3] = byte(4*i + 1)
		n.hostAddr[side] = netip.AddrFrom4(b4)
		b4[3] = byte(4*i + 2)
		n.innerAddr[side] = netip.AddrFrom4(b4)

		isoRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			// Deleting the namespace destroys its end of the pair and
			// with it the host's end.
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v %s", ns, err, out)
			}
			exec.Command("ip", "link", "del", host).Run()
		})
		isoRun(t, "ip", "link", "add", host, "type", "veth", "peer", "name", inner)
		isoRun(t, "ip", "link", "set", inner, "netns", ns)
		isoRun(t, "ip", "addr", "add", n.hostAddr[side].String()+"/30", "dev", host)
		isoRun(t, "ip", "link", "set", host, "up")
		isoRun(t, "ip", "-n", ns, "addr", "add", n.innerAddr[side].String()+"/30", "dev", inner)
		isoRun(t, "ip", "-n", ns, "link", "set", inner, "up")
		isoRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	isoRun(t, "ip", "-n", n.ns["b"], "route", "add", n.hostAddr["a"].String()+"/32", "via", n.hostAddr["b"].String())
	return n
}

// clusterOn starts Control listening on addr, an address of the host
// that the namespaces reach, with the admin token and the node API keys
// of a cluster; nodes are added by the test.
func (n *isoNetwork) clusterOn(t *testing.T, addr netip.Addr) *cluster {
	t.Helper()
	dir := t.TempDir()
	ctlAddr := netip.AddrPortFrom(addr, uint16(freePort(t))).String()
	control := &controlProc{t: t, dataDir: filepath.Join(dir, "data"), addr: ctlAddr, logPath: filepath.Join(dir, "control.log")}
	control.start()
	t.Cleanup(control.kill)
	c := &cluster{t: t, control: control, agents: map[string]*controlProc{}, apps: map[string]string{}}
	c.token = control.adminToken()
	c.gwKey = c.apiKey("gateways", api.RoleGateway)
	c.agentKey = c.apiKey("agents", api.RoleAgent)
	return c
}

// startIn starts `kakuremichi args...` inside namespace ns as a process the
// harness can kill and read the log of, like the ones it starts itself.
func (n *isoNetwork) startIn(t *testing.T, ns, name string, args, env []string) *controlProc {
	t.Helper()
	dir := t.TempDir()
	p := &controlProc{t: t, dataDir: dir, logPath: filepath.Join(dir, name+".log"), args: args, env: env, readyURL: "-"}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	// ip netns exec enters the namespace and execs the binary: the pid is
	// the node's own.
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, filepath.Join(binDir, "kakuremichi")}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	t.Cleanup(p.kill)
	return p
}

// dialFrom opens a TCP connection to addr from inside namespace ns: the
// socket is created by a thread that has entered the namespace, so the
// namespace's routes decide where it goes. The thread goes back to the
// test's namespace afterwards, or is thrown away if it cannot.
func (n *isoNetwork) dialFrom(ns, addr string, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering %s: %w", ns, err)
			return
		}
		conn, dialErr := net.DialTimeout("tcp", addr, timeout)
		if conn != nil {
			conn.Close()
		}
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and ends with this goroutine
		errc <- dialErr
	}()
	return <-errc
}

// TestIsolationNetns holds quality.md 14 with real packets between network
// namespaces: agent A with its app in namespace a, agent B with its app in
// namespace b, Control and a gateway on the host. Each agent reaches
// Control and the gateway's WireGuard port over its veth link, and its
// tunnel serves its own app through the gateway.
//
// What it proves, exactly:
//   - a tunnel of agent A can only reach what agent A itself can reach: a
//     tunnel on agent A whose target is agent B's overlay address
//     (100.64.x.y:7000, where B accepts gateway streams) answers 502
//     TargetUnreachable at once, because the agent dials targets from its
//     own network namespace, which has no route to the overlay; the same
//     for a target of B's app at B's veth address, and for the gateway's
//     overlay address;
//   - B's app is not reachable from namespace a over the veth network
//     (connecting fails with "network is unreachable"), while it is
//     reachable from the host, so it is the lack of a route between the
//     namespaces that stops it, not a dead app (whatever the host's
//     forwarding settings: neither namespace has a route that would hand
//     such a packet to the host);
//   - from inside namespace a, B's overlay address cannot be reached
//     either: the overlay lives only inside the agent processes (userspace
//     WireGuard), never in a namespace's routing table.
//
// That the gateway itself never forwards overlay packets between agents,
// and drops packets whose source is another peer's address, is
// TestIsolationImpostorAgent.
func TestIsolationNetns(t *testing.T) {
	n := newIsoNetwork(t)

	// Control listens on the host end of a's link, which b reaches through
	// its /32 route.
	c := n.clusterOn(t, n.hostAddr["a"])
	control := c.control

	// The gateway: HTTP for the test on loopback, WireGuard on every host
	// address (wireguard-go binds them all), announced on a's host end.
	g := &gatewayProc{name: "gw1", httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		httpsAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), wgPort: freeUDPPort(t)}
	g.controlProc = c.proc("gateway-gw1", []string{"gateway", "--name", "gw1", "--state-dir", filepath.Join(t.TempDir(), "state"),
		"--control-url", control.url(), "--http-listen", g.httpAddr, "--https-listen", g.httpsAddr,
		"--wireguard-listen", fmt.Sprintf(":%d", g.wgPort),
		"--public-endpoint", netip.AddrPortFrom(n.hostAddr["a"], uint16(g.wgPort)).String(),
		"--tcp-listen-host", "127.0.0.1", "--shutdown-grace", "5s"},
		[]string{"API_KEY=" + c.gwKey}, "http://"+g.httpAddr+"/healthz")
	c.gateways = append(c.gateways, g)

	const appPort = 8080
	for _, side := range []string{"a", "b"} {
		name := "agent-" + side
		// The app listens on every address of its namespace: the veth
		// address too, so that the host can check it is up.
		n.startIn(t, n.ns[side], "app-"+side, []string{"demo", "--listen", fmt.Sprintf("0.0.0.0:%d", appPort), "--name", "app-" + side}, nil)
		c.apps["app-"+side] = fmt.Sprintf("http://%s:%d", n.innerAddr[side], appPort)
		c.agents[name] = n.startIn(t, n.ns[side], name, []string{"agent", "--name", name,
			"--state-dir", filepath.Join(t.TempDir(), "state"), "--control-url", control.url(), "--shutdown-grace", "5s"},
			[]string{"API_KEY=" + c.agentKey})
	}
	direct := &http.Client{Timeout: 2 * time.Second}
	for _, side := range []string{"a", "b"} {
		url := c.apps["app-"+side] + "/healthz"
		pathsPoll(t, 15*time.Second, "app "+side+" from the host at "+url, func() bool {
			code, _, err := get(direct, url)
			return err == nil && code == 200
		})
	}
	c.waitNodesReady(40 * time.Second)

	overlayB := isoOverlayAddress(t, c, "agents", "agent-b")
	overlayGW := isoOverlayAddress(t, c, "gateways", "gw1")
	appB := netip.AddrPortFrom(n.innerAddr["b"], appPort).String()
	local := fmt.Sprintf("http://127.0.0.1:%d", appPort) // each namespace's own app
	c.applyTunnel("a", "a.iso.test", "agent-a", local)
	c.applyTunnel("b", "b.iso.test", "agent-b", local)
	c.applyTunnel("a-to-b-overlay", "a-to-b-overlay.iso.test", "agent-a", "http://"+netip.AddrPortFrom(overlayB, 7000).String())
	c.applyTunnel("a-to-b-app", "a-to-b-app.iso.test", "agent-a", "http://"+appB)
	c.applyTunnel("a-to-gateway-overlay", "a-to-gateway-overlay.iso.test", "agent-a", "http://"+netip.AddrPortFrom(overlayGW, 80).String())

	client := gatewayClient(g.httpAddr, 10*time.Second)
	t.Run("each tunnel serves its own agent's app", func(t *testing.T) {
		waitServing(t, client, "http://a.iso.test/", 200, "Hello from app-a", 10*time.Second)
		waitServing(t, client, "http://b.iso.test/", 200, "Hello from app-b", 10*time.Second)
		// The gateway sees each agent's WireGuard packets come from its
		// namespace's veth address: the packets are real and cross the
		// links.
		_, out := c.api("GET", "/gateways/gw1", "")
		var gw api.Gateway
		decodeJSON(t, out, &gw)
		seen := map[string]string{}
		for _, p := range gw.Status.Agents {
			seen[p.Name] = p.Endpoint
		}
		for _, side := range []string{"a", "b"} {
			ep, err := netip.ParseAddrPort(seen["agent-"+side])
			if err != nil || ep.Addr() != n.innerAddr[side] {
				t.Errorf("agent-%s's endpoint at the gateway: got %q, want %s:<port>", side, seen["agent-"+side], n.innerAddr[side])
			}
		}
	})

	t.Run("a tunnel of agent A reaches nothing of B's", func(t *testing.T) {
		for _, host := range []string{"a-to-b-overlay.iso.test", "a-to-b-app.iso.test", "a-to-gateway-overlay.iso.test"} {
			pathsWaitReason(t, client, "http://"+host+"/", 502, "TargetUnreachable", 10*time.Second)
			took := pathsExpectError(t, client, "http://"+host+"/", 502, "TargetUnreachable", "refused the connection", time.Second)
			t.Logf("%s: 502 TargetUnreachable in %v", host, took.Round(time.Millisecond))
		}
		// Agent A says why in its status.
		_, out := c.api("GET", "/agents/agent-a", "")
		var a api.Agent
		decodeJSON(t, out, &a)
		for _, ts := range a.Status.Targets {
			if ts.Tunnel == "a-to-b-overlay" && (ts.Reachable || !strings.Contains(ts.Message, "unreachable")) {
				t.Errorf("agent-a's target status for a-to-b-overlay: got %+v, want unreachable", ts)
			}
		}
	})

	t.Run("namespace a reaches neither B's app nor B's overlay address", func(t *testing.T) {
		// The positive controls: the host reaches B's app on its veth
		// address, and namespace a reaches Control.
		if conn, err := net.DialTimeout("tcp", appB, 2*time.Second); err != nil {
			t.Fatalf("B's app from the host: %v, want it reachable (else this test proves nothing)", err)
		} else {
			conn.Close()
		}
		if err := n.dialFrom(n.ns["a"], control.addr, 2*time.Second); err != nil {
			t.Fatalf("Control from namespace a: %v, want it reachable", err)
		}
		for _, addr := range []string{appB, netip.AddrPortFrom(overlayB, 7000).String(), netip.AddrPortFrom(n.innerAddr["b"], 22).String()} {
			err := n.dialFrom(n.ns["a"], addr, 2*time.Second)
			if err == nil {
				t.Errorf("from namespace a, %s: connected, want no route", addr)
				continue
			}
			if !errors.Is(err, syscall.ENETUNREACH) {
				t.Errorf("from namespace a, %s: got %v, want network unreachable", addr, err)
			}
		}
	})
}

// isoOverlayAddress reads a node's overlay address from its status.
func isoOverlayAddress(t *testing.T, c *cluster, kind, name string) netip.Addr {
	t.Helper()
	code, out := c.api("GET", "/"+kind+"/"+name, "")
	if code != 200 {
		t.Fatalf("get %s/%s: %d %s", kind, name, code, out)
	}
	var st struct {
		Status api.NodeStatus `json:"status"`
	}
	decodeJSON(t, out, &st)
	a, err := netip.ParseAddr(st.Status.OverlayAddress)
	if err != nil {
		t.Fatalf("%s/%s overlay address %q: %v", kind, name, st.Status.OverlayAddress, err)
	}
	return a
}
