package wgnet

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuffer is a slog handler that keeps every record, so tests can look
// for a message (or for a key that must not be there) and print the lot
// when they fail.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *logBuffer) handler() slog.Handler {
	return slog.NewTextHandler(lockedWriter{b}, &slog.HandlerOptions{Level: slog.LevelDebug})
}

type lockedWriter struct{ b *logBuffer }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.b.mu.Lock()
	defer w.b.mu.Unlock()
	return w.b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// node is one device in a test topology.
type node struct {
	name string
	priv PrivateKey
	addr netip.Addr
	dev  *Device
	logs *logBuffer
}

// newNode starts a device with a fresh key on addr, closed when t ends.
func newNode(t testing.TB, name, addr string, opts ...func(*Config)) *node {
	t.Helper()
	priv, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return startNode(t, name, priv, netip.MustParseAddr(addr), 0, opts...)
}

// startNode starts a device with the given identity.
func startNode(t testing.TB, name string, priv PrivateKey, addr netip.Addr, port int, opts ...func(*Config)) *node {
	t.Helper()
	n := &node{name: name, priv: priv, addr: addr, logs: &logBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs of %s:\n%s", name, n.logs)
		}
	})
	cfg := Config{
		PrivateKey: priv,
		Address:    addr,
		ListenPort: port,
		Logger:     slog.New(n.logs.handler()).With("node", name),
	}
	for _, o := range opts {
		o(&cfg)
	}
	dev, err := New(cfg)
	if err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() { dev.Close() })
	n.dev = dev
	return n
}

// endpoint is where other test nodes reach n: loopback only.
func (n *node) endpoint() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(n.dev.ListenPort()))
}

func (n *node) host() netip.Prefix { return netip.PrefixFrom(n.addr, n.addr.BitLen()) }

// asDialed is n as a peer that is dialled at its endpoint with keepalive
// (how an agent sees a gateway).
func (n *node) asDialed(allowed ...netip.Prefix) Peer {
	if allowed == nil {
		allowed = []netip.Prefix{n.host()}
	}
	return Peer{PublicKey: n.priv.PublicKey(), Endpoint: n.endpoint(), AllowedIPs: allowed, PersistentKeepalive: 15 * time.Second}
}

// asPassive is n as a peer without endpoint that must dial in first (how a
// gateway sees an agent).
func (n *node) asPassive() Peer {
	return Peer{PublicKey: n.priv.PublicKey(), AllowedIPs: []netip.Prefix{n.host()}}
}

func (n *node) setPeers(t testing.TB, peers ...Peer) bool {
	t.Helper()
	changed, err := n.dev.SetPeers(peers)
	if err != nil {
		t.Fatalf("%s: SetPeers: %v", n.name, err)
	}
	return changed
}

// peer returns n's view of the peer with key k.
func (n *node) peer(t testing.TB, k Key) (PeerStatus, bool) {
	t.Helper()
	ps, err := n.dev.Peers()
	if err != nil {
		t.Fatalf("%s: Peers: %v", n.name, err)
	}
	for _, p := range ps {
		if p.PublicKey == k {
			return p, true
		}
	}
	return PeerStatus{}, false
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting %v for %s: gave up", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitHandshake waits until n has completed a handshake with peer more
// recent than after.
func waitHandshake(t testing.TB, n, peer *node, after time.Time) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%s to handshake with %s", n.name, peer.name), func() bool {
		p, ok := n.peer(t, peer.priv.PublicKey())
		return ok && p.LastHandshake.After(after)
	})
}

// pair connects an agent (dials with keepalive) and a gateway (passive),
// configuring the gateway first so the agent's first handshake is answered.
func pair(t testing.TB) (agent, gw *node) {
	t.Helper()
	return pairOn(t, "100.64.0.1", "100.64.0.2")
}

// pairOn is pair with the given overlay addresses.
func pairOn(t testing.TB, gwAddr, agentAddr string, opts ...func(*Config)) (agent, gw *node) {
	t.Helper()
	gw = newNode(t, "gateway", gwAddr, opts...)
	agent = newNode(t, "agent", agentAddr, opts...)
	start := time.Now().Add(-time.Second)
	gw.setPeers(t, agent.asPassive())
	agent.setPeers(t, gw.asDialed())
	waitHandshake(t, agent, gw, start)
	waitHandshake(t, gw, agent, start)
	return agent, gw
}

func dialTimeout(n *node, addr string, d time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return n.dev.DialContext(ctx, "tcp", addr)
}

func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}

func containsAny(s string, subs ...string) string {
	for _, sub := range subs {
		if sub != "" && strings.Contains(s, sub) {
			return sub
		}
	}
	return ""
}
