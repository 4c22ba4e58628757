package wgnet

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
)

// serveEcho echoes every connection accepted on n's overlay address and
// returns the port. Everything is closed when t ends.
func serveEcho(t testing.TB, n *node) int {
	t.Helper()
	l, err := n.dev.Listen("tcp", ":0")
	if err != nil {
		t.Fatalf("%s: Listen: %v", n.name, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().(*net.TCPAddr).Port
}

// roundTrip sends msg on c and expects it echoed within timeout.
func roundTrip(c net.Conn, msg string, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: got " + string(buf) + ", want " + msg)
	}
	return nil
}

func dialEcho(t testing.TB, from, to *node, port int) net.Conn {
	t.Helper()
	c, err := dialTimeout(from, hostPort(to.addr, port), 10*time.Second)
	if err != nil {
		t.Fatalf("%s dialing %s: %v", from.name, to.name, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := roundTrip(c, "hello", 10*time.Second); err != nil {
		t.Fatalf("%s -> %s round trip: %v", from.name, to.name, err)
	}
	return c
}

// TestSetPeersUnchanged: the same peers, however they are written (order,
// host bits, duplicates), are no change, and applying them leaves a live
// connection and the peer's session alone.
func TestSetPeersUnchanged(t *testing.T) {
	leakcheck.Goroutines(t)
	agent, gw := pair(t)
	other, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	otherPeer := Peer{PublicKey: other.PublicKey(), AllowedIPs: []netip.Prefix{
		netip.MustParsePrefix("100.64.0.9/32"), netip.MustParsePrefix("100.64.1.0/24"),
	}}
	if !gw.setPeers(t, agent.asPassive(), otherPeer) {
		t.Fatalf("adding a peer: got changed=false, want true")
	}
	conn := dialEcho(t, gw, agent, serveEcho(t, agent))
	gwBefore, _ := gw.peer(t, agent.priv.PublicKey())
	agentBefore, _ := agent.peer(t, gw.priv.PublicKey())

	sameOther := otherPeer
	sameOther.AllowedIPs = []netip.Prefix{
		netip.MustParsePrefix("100.64.1.77/24"), netip.MustParsePrefix("100.64.0.9/32"), netip.MustParsePrefix("100.64.1.0/24"),
	}
	tests := []struct {
		name  string
		n     *node
		peers []Peer
	}{
		{"gateway, same order", gw, []Peer{agent.asPassive(), otherPeer}},
		{"gateway, reordered and rewritten", gw, []Peer{sameOther, agent.asPassive()}},
		{"agent", agent, []Peer{gw.asDialed()}},
	}
	for _, tt := range tests {
		if changed := tt.n.setPeers(t, tt.peers...); changed {
			t.Errorf("%s: got changed=true, want false", tt.name)
		}
	}
	if err := roundTrip(conn, "still there", 5*time.Second); err != nil {
		t.Fatalf("round trip after unchanged SetPeers: %v", err)
	}
	for _, c := range []struct {
		n, peer *node
		before  PeerStatus
	}{{gw, agent, gwBefore}, {agent, gw, agentBefore}} {
		after, _ := c.n.peer(t, c.peer.priv.PublicKey())
		if !after.LastHandshake.Equal(c.before.LastHandshake) {
			t.Errorf("%s: last handshake with %s: got %v, want %v (session disturbed)", c.n.name, c.peer.name, after.LastHandshake, c.before.LastHandshake)
		}
		// wireguard-go counts a packet after sending it, so the echo can
		// be back before the sender's counter moves: poll. A recreated
		// peer would have started again from zero.
		deadline := time.Now().Add(5 * time.Second)
		for after.RxBytes <= c.before.RxBytes || after.TxBytes <= c.before.TxBytes {
			if time.Now().After(deadline) {
				t.Errorf("%s: bytes with %s: got rx %d tx %d, want more than rx %d tx %d (counters reset: peer recreated?)",
					c.n.name, c.peer.name, after.RxBytes, after.TxBytes, c.before.RxBytes, c.before.TxBytes)
				break
			}
			time.Sleep(10 * time.Millisecond)
			after, _ = c.n.peer(t, c.peer.priv.PublicKey())
		}
	}
}

// TestSetPeersChanges: each kind of change is applied and reported, and a
// peer that is only updated keeps its session.
func TestSetPeersChanges(t *testing.T) {
	leakcheck.Goroutines(t)
	agent, gw := pair(t)
	conn := dialEcho(t, gw, agent, serveEcho(t, agent))
	hs, _ := gw.peer(t, agent.priv.PublicKey())

	extra := netip.MustParsePrefix("10.99.0.0/16")
	withExtra := agent.asPassive()
	withExtra.AllowedIPs = append(withExtra.AllowedIPs, extra)
	withKeepalive := withExtra
	withKeepalive.PersistentKeepalive = 25 * time.Second

	tests := []struct {
		name string
		peer Peer
		want PeerStatus
	}{
		{"add allowed IP", withExtra, PeerStatus{AllowedIPs: []netip.Prefix{extra, agent.host()}}},
		{"keepalive on", withKeepalive, PeerStatus{AllowedIPs: []netip.Prefix{extra, agent.host()}, PersistentKeepalive: 25 * time.Second}},
		{"back to start", agent.asPassive(), PeerStatus{AllowedIPs: []netip.Prefix{agent.host()}}},
	}
	for _, tt := range tests {
		if !gw.setPeers(t, tt.peer) {
			t.Errorf("%s: got changed=false, want true", tt.name)
		}
		got, ok := gw.peer(t, agent.priv.PublicKey())
		if !ok {
			t.Fatalf("%s: peer gone", tt.name)
		}
		if !equalPrefixes(got.AllowedIPs, tt.want.AllowedIPs) || got.PersistentKeepalive != tt.want.PersistentKeepalive {
			t.Errorf("%s: got allowed %v keepalive %v, want %v %v", tt.name, got.AllowedIPs, got.PersistentKeepalive, tt.want.AllowedIPs, tt.want.PersistentKeepalive)
		}
		if !got.LastHandshake.Equal(hs.LastHandshake) {
			t.Errorf("%s: last handshake: got %v, want %v (peer recreated)", tt.name, got.LastHandshake, hs.LastHandshake)
		}
		if err := roundTrip(conn, tt.name, 5*time.Second); err != nil {
			t.Errorf("%s: round trip: %v", tt.name, err)
		}
	}
}

func equalPrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRemovePeerStopsTraffic: once the gateway drops the agent, nothing
// passes either way: not on an established connection, not on a new one.
func TestRemovePeerStopsTraffic(t *testing.T) {
	leakcheck.Goroutines(t)
	agent, gw := pair(t)
	conn := dialEcho(t, gw, agent, serveEcho(t, agent))

	gwListener, err := gw.dev.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer gwListener.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := gwListener.Accept()
		if err == nil {
			accepted <- c
		}
	}()

	if !gw.setPeers(t) {
		t.Fatalf("removing the only peer: got changed=false, want true")
	}
	if ps, _ := gw.dev.Peers(); len(ps) != 0 {
		t.Fatalf("peers after removal: got %d, want 0", len(ps))
	}

	// New connections from the gateway: no route, at once.
	start := time.Now()
	_, err = dialTimeout(gw, hostPort(agent.addr, 80), 5*time.Second)
	if !errors.Is(err, ErrNoRoute) {
		t.Errorf("gateway dialing removed agent: got %v, want %v", err, ErrNoRoute)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("gateway dialing removed agent: took %v, want an immediate answer", d)
	}
	// The established connection: the echo never comes back.
	if err := roundTrip(conn, "anyone?", time.Second); !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Errorf("round trip on established connection after removal: got %v, want a timeout", err)
	}
	// The agent still has the gateway as a peer, but its handshakes are
	// now ignored: it cannot connect.
	if c, err := dialTimeout(agent, hostPort(gw.addr, 9000), time.Second); err == nil {
		c.Close()
		t.Errorf("agent dialing gateway after removal: got a connection, want an error")
	}
	select {
	case c := <-accepted:
		c.Close()
		t.Errorf("gateway accepted a connection from a removed peer")
	default:
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
