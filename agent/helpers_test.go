package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/testlog"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// Overlay addresses of the test topology.
var (
	gwAddr    = netip.MustParseAddr("100.64.0.1")
	agentAddr = netip.MustParseAddr("100.64.0.2")
)

// waitFor polls cond until it holds, failing t after timeout.
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

func mustKey(t testing.TB) wgnet.PrivateKey {
	t.Helper()
	k, err := wgnet.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testGateway is the gateway's side of the data path, spoken with a real
// WireGuard device and the real preamble: what package gateway does for
// each request stream.
type testGateway struct {
	name string
	priv wgnet.PrivateKey
	addr netip.Addr
	dev  *wgnet.Device
}

func newGateway(t testing.TB, name string, addr netip.Addr) *testGateway {
	t.Helper()
	g := &testGateway{name: name, priv: mustKey(t), addr: addr}
	dev, err := wgnet.New(wgnet.Config{PrivateKey: g.priv, Address: addr, Logger: testlog.New(t, name)})
	if err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() { dev.Close() })
	g.dev = dev
	return g
}

// asPeer is the gateway as an agent's slice names it, reachable on
// loopback.
func (g *testGateway) asPeer() bridge.Peer {
	return bridge.Peer{
		Name:      g.name,
		PublicKey: g.priv.PublicKey().String(),
		Address:   g.addr,
		Endpoint:  fmt.Sprintf("127.0.0.1:%d", g.dev.ListenPort()),
	}
}

// admit makes the agent with key k at addr the gateway's only peer, as a
// gateway's slice would: no endpoint, learned from the agent's handshake.
func (g *testGateway) admit(t testing.TB, k wgnet.Key, addr netip.Addr) {
	t.Helper()
	_, err := g.dev.SetPeers([]wgnet.Peer{{PublicKey: k, AllowedIPs: []netip.Prefix{netip.PrefixFrom(addr, addr.BitLen())}}})
	if err != nil {
		t.Fatalf("%s: SetPeers: %v", g.name, err)
	}
}

// handshakeWith reports when the gateway last completed a handshake with
// the peer k.
func (g *testGateway) handshakeWith(t testing.TB, k wgnet.Key) time.Time {
	t.Helper()
	ps, err := g.dev.Peers()
	if err != nil {
		t.Fatalf("%s: Peers: %v", g.name, err)
	}
	for _, p := range ps {
		if p.PublicKey == k {
			return p.LastHandshake
		}
	}
	return time.Time{}
}

// gwStream is one stream from the gateway to an agent, past the answer.
type gwStream struct {
	net.Conn
	r *bufio.Reader
}

func (s *gwStream) Read(p []byte) (int, error) { return s.r.Read(p) }

// open dials the agent at addr, names tunnel and reads the answer: a
// *bridge.RefusedError for a refusal.
func (g *testGateway) open(ctx context.Context, addr netip.Addr, tunnel string) (*gwStream, error) {
	c, err := g.dev.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, bridge.AgentForwardPort).String())
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if err := bridge.WritePreamble(c, tunnel); err != nil {
		c.Close()
		return nil, err
	}
	r := bufio.NewReader(c)
	if err := bridge.ReadAnswer(r); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return &gwStream{Conn: c, r: r}, nil
}

// mustOpen is open that fails t on any error, within 5 s.
func (g *testGateway) mustOpen(t testing.TB, addr netip.Addr, tunnel string) *gwStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := g.open(ctx, addr, tunnel)
	if err != nil {
		t.Fatalf("opening a stream for tunnel %q: %v", tunnel, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// refusalCode returns the refusal's code, or a description of what err
// is instead.
func refusalCode(err error) string {
	var re *bridge.RefusedError
	if errors.As(err, &re) {
		return re.Code
	}
	return fmt.Sprintf("not a refusal: %v", err)
}

// fixture is an agent under test with one gateway, both up and shaken
// hands.
type fixture struct {
	agent *Agent
	gw    *testGateway
	self  bridge.Self
	// runErr receives Run's result.
	runErr chan error
	cancel context.CancelFunc
}

// startAgent starts an agent with cfg (its key and logger filled in) and
// a gateway, applies a slice with fwds, runs the agent and waits for the
// WireGuard handshake. Run is stopped when t ends.
func startAgent(t testing.TB, cfg Config, fwds ...bridge.Forward) *fixture {
	t.Helper()
	gw := newGateway(t, "gw1", gwAddr)
	if cfg.PrivateKey.IsZero() {
		cfg.PrivateKey = mustKey(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = testlog.New(t, "agent")
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f := &fixture{
		agent:  a,
		gw:     gw,
		self:   bridge.Self{Name: "agent-home", Address: agentAddr, Enabled: true},
		runErr: make(chan error, 1),
	}
	gw.admit(t, a.PublicKey(), agentAddr)
	if err := a.Apply(f.slice(fwds...)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() { f.runErr <- a.Run(ctx) }()
	t.Cleanup(func() {
		if err := f.stop(t); err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	})
	waitFor(t, 10*time.Second, "the gateway to handshake with the agent", func() bool {
		return !gw.handshakeWith(t, a.PublicKey()).IsZero()
	})
	return f
}

// stop cancels Run and returns its result; later calls return nil.
func (f *fixture) stop(t testing.TB) error {
	t.Helper()
	f.cancel()
	select {
	case err, ok := <-f.runErr:
		if ok {
			close(f.runErr)
			return err
		}
		return nil
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not return within 30 s of its context ending")
		return nil
	}
}

// slice is the agent's slice: self, the gateway, and fwds.
func (f *fixture) slice(fwds ...bridge.Forward) bridge.Slice {
	return sliceOf(f.self, []bridge.Peer{f.gw.asPeer()}, fwds...)
}

func sliceOf(self bridge.Self, peers []bridge.Peer, fwds ...bridge.Forward) bridge.Slice {
	s := bridge.Slice{"self": {Key: "self", Self: &self}}
	for _, p := range peers {
		s["peer/"+p.Name] = bridge.Item{Key: "peer/" + p.Name, Peer: &p}
	}
	for _, fw := range fwds {
		s["forward/"+fw.Tunnel] = bridge.Item{Key: "forward/" + fw.Tunnel, Forward: &fw}
	}
	return s
}

func (f *fixture) open(t testing.TB, tunnel string) *gwStream {
	t.Helper()
	return f.gw.mustOpen(t, f.self.Address, tunnel)
}

// openErr opens a stream expected to be refused and returns the error
// and how long the answer took.
func (f *fixture) openErr(t testing.TB, tunnel string) (error, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	s, err := f.gw.open(ctx, f.self.Address, tunnel)
	if err == nil {
		s.Close()
	}
	return err, time.Since(start)
}

// serveTCP runs handle for every connection to a loopback listener until
// t ends, and returns the listener's address.
func serveTCP(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns
	conns := map[net.Conn]struct{}{}
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// lineEcho answers each line with "echo: <line>" and, once the client has
// half-closed, with "bye" before closing.
func lineEcho(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err == io.EOF {
				io.WriteString(c, "bye\n")
			}
			return
		}
		if _, err := io.WriteString(c, "echo: "+line); err != nil {
			return
		}
	}
}

// readLine reads one line from s within 5 s.
func readLine(t testing.TB, s *gwStream) string {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer s.SetReadDeadline(time.Time{})
	line, err := s.r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading a line: %v (got %q)", err, line)
	}
	return line
}

// portOf returns the port of a host:port.
func portOf(t testing.TB, hostport string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
