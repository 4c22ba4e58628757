package e2e

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// TestIsolationImpostorAgent holds the rest of quality.md 14 against a
// real gateway process: what a malicious agent could send into the
// overlay. Agent A is killed and the test takes its place with A's own
// WireGuard key (read from A's state directory), but routes the whole
// overlay, 100.64.0.0/10, to the gateway instead of the gateway's /32
// only, as a tampered agent would. Then:
//   - its packets reach the gateway, which answers them: a connection to
//     the gateway's overlay address on a closed port is refused at once
//     (the control that makes the rest mean something);
//   - the gateway listens on no port in the overlay: 80, 443, 7000 and
//     others are all refused, so an agent reaches nothing of the gateway
//     beyond what WireGuard itself needs;
//   - agent B's overlay address, port 7000 where B accepts the gateway's
//     streams, cannot be reached through the gateway: the gateway does not
//     forward overlay packets between its peers (and B would drop them
//     anyway: its only peers' AllowedIPs are the gateways' /32s);
//   - with A's key but B's overlay address as its source, the session
//     still handshakes, yet the gateway answers nothing: WireGuard drops
//     packets whose source is not in the sending peer's AllowedIPs, so A
//     cannot pass for B.
func TestIsolationImpostorAgent(t *testing.T) {
	c := newCluster(t)
	gw := c.addGateway("gw1")
	appB := c.addApp("app-b")
	a := c.addAgent("agent-a")
	c.addAgent("agent-b")
	c.waitNodesReady(30 * time.Second)
	c.applyTunnel("b", "b.iso.test", "agent-b", appB)
	waitServing(t, gatewayClient(gw.httpAddr, 5*time.Second), "http://b.iso.test/", 200, "Hello from app-b", 10*time.Second)

	keyData, err := os.ReadFile(filepath.Join(pathsStateDir(t, a), "wireguard.key"))
	if err != nil {
		t.Fatal(err)
	}
	keyA, err := wgnet.ParsePrivateKey(strings.TrimSpace(string(keyData)))
	if err != nil {
		t.Fatal(err)
	}
	overlayA := isoOverlayAddress(t, c, "agents", "agent-a")
	overlayB := isoOverlayAddress(t, c, "agents", "agent-b")
	overlayGW := isoOverlayAddress(t, c, "gateways", "gw1")
	_, out := c.api("GET", "/gateways/gw1", "")
	var g api.Gateway
	decodeJSON(t, out, &g)
	gwKey, err := wgnet.ParseKey(g.Spec.PublicKey)
	if err != nil {
		t.Fatalf("gateway public key %q: %v", g.Spec.PublicKey, err)
	}
	gwPeer := wgnet.Peer{PublicKey: gwKey, Endpoint: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(gw.wgPort)),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}, PersistentKeepalive: time.Second}

	a.kill()
	impostor := isoImpostor(t, keyA, overlayA, gwPeer)

	t.Run("the gateway answers the impostor", func(t *testing.T) {
		// The first attempts may fall into the handshake: retry until
		// the refusal comes, which needs the gateway's answer.
		pathsPoll(t, 10*time.Second, "a refusal from the gateway's overlay address", func() bool {
			return isoRefused(isoDial(impostor, netip.AddrPortFrom(overlayGW, 9), time.Second))
		})
	})

	t.Run("the gateway listens on no overlay port", func(t *testing.T) {
		for _, port := range []uint16{80, 443, 7000, 7070, 22, 53, uint16(gw.wgPort)} {
			if err := isoDial(impostor, netip.AddrPortFrom(overlayGW, port), 3*time.Second); !isoRefused(err) {
				t.Errorf("gateway overlay port %d: got %v, want connection refused", port, err)
			}
		}
	})

	t.Run("no path to agent B through the gateway", func(t *testing.T) {
		target := netip.AddrPortFrom(overlayB, bridge.AgentForwardPort)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		conn, err := impostor.DialContext(ctx, "tcp", target.String())
		if err == nil {
			// Say what could have been done with it.
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			bridge.WritePreamble(conn, "b")
			answer := bridge.ReadAnswer(bufio.NewReader(conn))
			conn.Close()
			t.Fatalf("connected to agent B at %s through the gateway (B's answer to a stream for its tunnel: %v), want no path", target, answer)
		}
		if isoRefused(err) {
			t.Errorf("dial %s: got a refusal (%v), want no answer at all: something answered for agent B", target, err)
		}
	})

	t.Run("a spoofed source gets no answer", func(t *testing.T) {
		impostor.Close()
		spoofer := isoImpostor(t, keyA, overlayB, gwPeer)
		err := isoDial(spoofer, netip.AddrPortFrom(overlayGW, 9), 3*time.Second)
		if err == nil || isoRefused(err) {
			t.Fatalf("dial from A's key with B's address: got %v, want no answer", err)
		}
		// The silence is not a dead session: the handshake completed.
		peers, err := spoofer.Peers()
		if err != nil {
			t.Fatal(err)
		}
		if len(peers) != 1 || peers[0].LastHandshake.IsZero() || peers[0].RxBytes == 0 {
			t.Fatalf("spoofer's session with the gateway: got %+v, want a completed handshake", peers)
		}
	})
}

// isoImpostor brings up a WireGuard device in the test process with the
// given identity and overlay address, and the gateway as its only peer.
func isoImpostor(t *testing.T, key wgnet.PrivateKey, addr netip.Addr, gw wgnet.Peer) *wgnet.Device {
	t.Helper()
	d, err := wgnet.New(wgnet.Config{PrivateKey: key, Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if _, err := d.SetPeers([]wgnet.Peer{gw}); err != nil {
		t.Fatal(err)
	}
	return d
}

// isoDial opens and closes a TCP connection through d.
func isoDial(d *wgnet.Device, to netip.AddrPort, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", to.String())
	if err == nil {
		conn.Close()
	}
	return err
}

// isoRefused reports whether a dial through the overlay was answered with
// a reset: the netstack reports "connection was refused".
func isoRefused(err error) bool {
	return err != nil && strings.Contains(err.Error(), "refused")
}
