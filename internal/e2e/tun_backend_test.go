package e2e

import (
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// TestGatewayTUNBackend runs a gateway process with --wireguard-backend
// tun in a network namespace of its own (joined to the host by a veth
// pair), with Control, an agent and an app on the host: the gateway's
// WireGuard device is a kernel TUN interface there, with the overlay
// address and a route to the agent, and a tunnel serves through it,
// small requests and a bulk body alike. When the gateway stops, its
// interface goes with it.
func TestGatewayTUNBackend(t *testing.T) {
	n := newIsoNetwork(t)
	ns := n.ns["a"]
	c := n.clusterOn(t, n.hostAddr["a"])
	control := c.control

	inner := n.innerAddr["a"]
	wgPort := freeUDPPort(t)
	g := &gatewayProc{name: "gw1", httpAddr: netip.AddrPortFrom(inner, 18080).String(), httpsAddr: netip.AddrPortFrom(inner, 18443).String(), wgPort: wgPort}
	g.controlProc = n.startIn(t, ns, "gateway-gw1", []string{"gateway", "--name", "gw1", "--state-dir", filepath.Join(t.TempDir(), "state"),
		"--control-url", control.url(), "--http-listen", g.httpAddr, "--https-listen", g.httpsAddr,
		"--wireguard-listen", fmt.Sprintf(":%d", wgPort), "--public-endpoint", netip.AddrPortFrom(inner, uint16(wgPort)).String(),
		"--wireguard-backend", "tun", "--wireguard-interface", "kkmgw0", "--shutdown-grace", "5s"},
		[]string{"API_KEY=" + c.gwKey})
	c.gateways = append(c.gateways, g)
	app := c.addApp("app")
	c.addAgent("home")
	c.waitNodesReady(40 * time.Second)
	c.applyTunnel("web", "web.tun.test", "home", app)

	client := gatewayClient(g.httpAddr, 30*time.Second)
	waitServing(t, client, "http://web.tun.test/", 200, "Hello from app", 15*time.Second)

	t.Run("the interface carries the overlay address and a route to the agent", func(t *testing.T) {
		gwAddr := isoOverlayAddress(t, c, "gateways", "gw1")
		agentAddr := isoOverlayAddress(t, c, "agents", "home")
		addrs, err := exec.Command("ip", "-n", ns, "-o", "addr", "show", "dev", "kkmgw0").CombinedOutput()
		if err != nil || !strings.Contains(string(addrs), " "+gwAddr.String()+"/32") {
			t.Errorf("addresses of kkmgw0: %v %s, want %s/32", err, addrs, gwAddr)
		}
		routes, err := exec.Command("ip", "-n", ns, "route", "show", "dev", "kkmgw0").CombinedOutput()
		if err != nil || !strings.Contains(string(routes), agentAddr.String()) {
			t.Errorf("routes of kkmgw0: %v %s, want one to %s", err, routes, agentAddr)
		}
	})

	t.Run("the gateway reports its data path", func(t *testing.T) {
		pathsPoll(t, 30*time.Second, "gw1 to report dataPath tun", func() bool {
			_, out := c.api("GET", "/gateways/gw1", "")
			var gw api.Gateway
			decodeJSON(t, out, &gw)
			return gw.Status.DataPath == "tun"
		})
	})

	t.Run("requests and a bulk body through the kernel's TCP", func(t *testing.T) {
		for i := range 20 {
			if code, body, err := get(client, "http://web.tun.test/"); err != nil || code != 200 || !strings.Contains(body, "Hello from app") {
				t.Fatalf("request %d: got %d %v", i, code, err)
			}
		}
		const size = 32 << 20
		resp, err := client.Get(fmt.Sprintf("http://web.tun.test/bytes?n=%d", size))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || got != size {
			t.Fatalf("bulk body: got %d bytes (%v), want %d", got, err, size)
		}
	})

	t.Run("the interface goes with the gateway", func(t *testing.T) {
		g.stop()
		out, err := exec.Command("ip", "-n", ns, "link", "show", "kkmgw0").CombinedOutput()
		if err == nil {
			t.Fatalf("kkmgw0 still there after the gateway stopped:\n%s", out)
		}
	})
}
