package wgnet

import (
	"net/http"
	"net/netip"
	"testing"

	"time"

	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"golang.zx2c4.com/wireguard/device"
)

// getOK fetches url through c and fails t unless it answers "ok".
func getOK(t testing.TB, c *http.Client, url string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: got status %d, want 200", url, resp.StatusCode)
	}
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })

// waitEndpoint waits until n sends to peer at want.
func waitEndpoint(t testing.TB, n, peer *node, want netip.AddrPort, within time.Duration) {
	t.Helper()
	waitFor(t, within, n.name+" to learn "+peer.name+"'s endpoint "+want.String(), func() bool {
		p, ok := n.peer(t, peer.priv.PublicKey())
		return ok && p.Endpoint == want
	})
}

// TestNATRebinding: the agent's source port changes under the gateway,
// which never dials agents and so has no endpoint configured for them. The
// gateway follows the agent from its next authenticated packet, with no
// SetPeers, and a resync afterwards does not undo it.
func TestNATRebinding(t *testing.T) {
	const keepalive = time.Second
	tests := []struct {
		name string
		// move changes the agent's source port and returns the node that
		// now is the agent.
		move func(t *testing.T, agent, gw *node) *node
	}{
		{"socket rebound, session kept", func(t *testing.T, agent, gw *node) *node {
			// What a NAT does: same process and session, new source port.
			if err := agent.dev.wg.IpcSet("listen_port=0\n"); err != nil {
				t.Fatalf("rebinding: %v", err)
			}
			return agent
		}},
		{"agent restarted with the same key", func(t *testing.T, agent, gw *node) *node {
			// The gateway ignores a second initiation from one key within
			// HandshakeInitationRate (flood guard) or with a timestamp no
			// newer than the last (TAI64N is coarsened to ~16 ms), and the
			// agent would retry only after 5 s. A real restart takes far
			// longer than that; this test must wait it out explicitly.
			if p, _ := gw.peer(t, agent.priv.PublicKey()); !p.LastHandshake.IsZero() {
				time.Sleep(time.Until(p.LastHandshake.Add(device.HandshakeInitationRate + 5*time.Millisecond)))
			}
			// Started before the old one closes, so its port is sure to differ.
			moved := startNode(t, "agent-restarted", agent.priv, agent.addr, 0)
			agent.dev.Close()
			p := gw.asDialed()
			p.PersistentKeepalive = keepalive
			moved.setPeers(t, p)
			return moved
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Goroutines(t)
			agent, gw := pair(t)
			p := gw.asDialed()
			p.PersistentKeepalive = keepalive
			agent.setPeers(t, p)
			old := agent.endpoint()
			waitEndpoint(t, gw, agent, old, 5*time.Second)

			moved := tt.move(t, agent, gw)
			st, err := moved.dev.state()
			if err != nil {
				t.Fatal(err)
			}
			now := netip.AddrPortFrom(old.Addr(), st.listenPort)
			if now == old {
				t.Fatalf("agent's port after the move: got %v, want a different one", now)
			}
			// quality.md 6: traffic resumes within two keepalive intervals.
			waitEndpoint(t, gw, moved, now, 2*keepalive+500*time.Millisecond)

			port := serveHTTP(t, moved, okHandler)
			getOK(t, httpClient(t, gw), "http://"+hostPort(moved.addr, port)+"/")
			if gw.setPeers(t, moved.asPassive()) {
				t.Errorf("gateway resync after the move: got changed=true, want false")
			}
			if p, _ := gw.peer(t, moved.priv.PublicKey()); p.Endpoint != now {
				t.Errorf("gateway's endpoint for the agent after resync: got %v, want %v", p.Endpoint, now)
			}
		})
	}
}

// TestEndpointUpdate: a gateway comes back on another port; the agent is
// told the new endpoint by SetPeers and is through again at once, not after
// WireGuard's 15 s dead-session timeout.
func TestEndpointUpdate(t *testing.T) {
	leakcheck.Goroutines(t)
	agent, gw := pair(t)
	port := serveHTTP(t, agent, okHandler)

	moved := startNode(t, "gateway-moved", gw.priv, gw.addr, 0)
	gw.dev.Close()
	moved.setPeers(t, agent.asPassive())
	start := time.Now()
	if !agent.setPeers(t, moved.asDialed()) {
		t.Fatalf("new endpoint: got changed=false, want true")
	}
	if p, _ := agent.peer(t, moved.priv.PublicKey()); p.Endpoint != moved.endpoint() {
		t.Errorf("agent's endpoint for the gateway: got %v, want %v", p.Endpoint, moved.endpoint())
	}
	waitHandshake(t, agent, moved, start)
	getOK(t, httpClient(t, moved), "http://"+hostPort(agent.addr, port)+"/")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("traffic resumed after %v, want well under WireGuard's 15 s", d)
	}
	if agent.setPeers(t, moved.asDialed()) {
		t.Errorf("resync with the same endpoint: got changed=true, want false")
	}
}
