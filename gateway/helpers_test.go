package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/agent"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/testlog"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

func newKey(t testing.TB) wgnet.PrivateKey {
	t.Helper()
	k, err := wgnet.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// gatewayAddr is the test gateway's overlay address.
var gatewayAddr = netip.MustParseAddr("100.64.0.1")

// testGateway is a running Gateway on loopback listeners.
type testGateway struct {
	*Gateway
	priv      wgnet.PrivateKey
	httpAddr  string
	httpsAddr string
	done      chan error
	cancel    context.CancelFunc
}

// startGateway runs a gateway with loopback listeners and applies a first
// slice with only "self", so that its WireGuard port is known. Options
// may change cfg before New. The gateway stops when t ends.
func startGateway(t testing.TB, opts ...func(*Config)) *testGateway {
	t.Helper()
	priv := newKey(t)
	httpLn, httpsLn := listenLoopback(t), listenLoopback(t)
	cfg := Config{
		PrivateKey:    priv,
		HTTPListener:  httpLn,
		HTTPSListener: httpsLn,
		TCPListenHost: "127.0.0.1",
		ShutdownGrace: 5 * time.Second,
		Logger:        testlog.New(t, "gateway"),
	}
	for _, o := range opts {
		o(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		httpLn.Close()
		httpsLn.Close()
		t.Fatalf("New: %v", err)
	}
	tg := &testGateway{Gateway: g, priv: priv, httpAddr: httpLn.Addr().String(), httpsAddr: httpsLn.Addr().String(), done: make(chan error, 1)}
	if err := g.Apply(bridge.Slice{"self": selfItem(gatewayAddr, true)}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tg.cancel = cancel
	go func() { tg.done <- g.Run(ctx) }()
	t.Cleanup(func() { tg.stop(t) })
	return tg
}

// stop cancels Run and waits for it to return nil; calling it again is
// fine.
func (tg *testGateway) stop(t testing.TB) {
	t.Helper()
	tg.cancel()
	tg.wait(t)
}

// wait waits for Run to return nil, once its context has been canceled.
func (tg *testGateway) wait(t testing.TB) {
	t.Helper()
	select {
	case err, ok := <-tg.done:
		if ok && err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
		if ok {
			close(tg.done)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not return within 30 s of its context ending")
	}
}

// apply applies s, failing the test on an error.
func (tg *testGateway) apply(t testing.TB, s bridge.Slice) {
	t.Helper()
	if err := tg.Apply(s); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// endpoint is where agents send WireGuard to the gateway.
func (tg *testGateway) endpoint() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(tg.WireGuardPort()))
}

func selfItem(addr netip.Addr, enabled bool) bridge.Item {
	return bridge.Item{Key: "self", Self: &bridge.Self{Name: "gw1", Address: addr, Enabled: enabled}}
}

// sliceOf builds a gateway slice: self, a peer per agent, and routes.
func sliceOf(agents []*testAgent, routes ...bridge.Route) bridge.Slice {
	s := bridge.Slice{"self": selfItem(gatewayAddr, true)}
	for _, a := range agents {
		s["peer/"+a.name] = bridge.Item{Key: "peer/" + a.name, Peer: &bridge.Peer{
			Name: a.name, PublicKey: a.priv.PublicKey().String(), Address: a.addr,
		}}
	}
	for _, r := range routes {
		key := "route/" + r.Hostname
		if r.Protocol == protocolTCP {
			key = fmt.Sprintf("tcp/%d", r.PublicPort)
		}
		rr := r
		s[key] = bridge.Item{Key: key, Route: &rr}
	}
	return s
}

// httpRoute is an enabled http route of tunnel on agent a.
func httpRoute(tunnel, host string, a *testAgent) bridge.Route {
	return bridge.Route{Tunnel: tunnel, Hostname: host, Protocol: protocolHTTP, Agent: a.name, AgentAddress: a.addr, Enabled: true}
}

// testAgent is a real agent (package agent) with what a test needs to
// drive it: its identity, and the forwards it serves, applied as the
// agent's slice (self, the gateway as its peer, a forward per tunnel), as
// Control would compute it.
type testAgent struct {
	name string
	priv wgnet.PrivateKey
	addr netip.Addr
	// gwAddr is the gateway's overlay address; zero means gatewayAddr.
	gwAddr netip.Addr

	// mu guards forwards, ag and gw.
	mu       sync.Mutex
	forwards map[string]bridge.Forward
	// ag is the running agent, nil until start; gw is its gateway.
	ag *agent.Agent
	gw *testGateway
}

// newAgent makes an agent's identity; start brings it up. Apply the
// gateway's slice with the agent as a peer before starting it, as Control
// does: a handshake the gateway refuses is only retried after 5 s.
func newAgent(t testing.TB, name, addr string) *testAgent {
	return &testAgent{name: name, priv: newKey(t), addr: netip.MustParseAddr(addr), forwards: map[string]bridge.Forward{}}
}

// slice is the agent's slice: itself, the gateway, its forwards.
func (a *testAgent) sliceLocked() bridge.Slice {
	gwAddr := a.gwAddr
	if !gwAddr.IsValid() {
		gwAddr = gatewayAddr
	}
	s := bridge.Slice{
		"self": {Key: "self", Self: &bridge.Self{Name: a.name, Address: a.addr, Enabled: true, KeepaliveSeconds: 5}},
		"peer/gw1": {Key: "peer/gw1", Peer: &bridge.Peer{
			Name: "gw1", PublicKey: a.gw.priv.PublicKey().String(), Address: gwAddr, Endpoint: a.gw.endpoint().String(),
		}},
	}
	for name, f := range a.forwards {
		ff := f
		s["forward/"+name] = bridge.Item{Key: "forward/" + name, Forward: &ff}
	}
	return s
}

// start runs the agent, talking to gw, until t ends.
func (a *testAgent) start(t testing.TB, gw *testGateway) {
	t.Helper()
	ag, err := agent.New(agent.Config{
		PrivateKey: a.priv,
		// Pooled streams from the gateway stay open until it goes: do
		// not wait long for them when the test ends.
		ShutdownGrace: 200 * time.Millisecond,
		Logger:        testlog.New(t, a.name),
	})
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.ag, a.gw = ag, gw
	err = ag.Apply(a.sliceLocked())
	a.mu.Unlock()
	if err != nil {
		t.Fatalf("agent %s: Apply: %v", a.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent %s: Run: got %v, want nil", a.name, err)
		}
	})
}

// forward makes the agent serve tunnel to target (a URL such as
// http://127.0.0.1:8080 or tcp://127.0.0.1:5432).
func (a *testAgent) forward(t testing.TB, tunnel, target string, enabled bool) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.forwards[tunnel] = bridge.Forward{Tunnel: tunnel, Target: target, Enabled: enabled}
	if a.ag != nil {
		if err := a.ag.Apply(a.sliceLocked()); err != nil {
			t.Fatalf("agent %s: Apply: %v", a.name, err)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// client is an HTTP client that sends every request to addr whatever the
// URL's host, so URLs can carry the routed hostname.
func client(addr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			DisableCompression: true,
		},
		Timeout: 60 * time.Second,
	}
}

// get fetches url through c and returns the status, the headers and the
// body.
func get(t testing.TB, c *http.Client, url string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if strings.EqualFold(header[i], "Host") {
			req.Host = header[i+1]
			continue
		}
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, resp.Header, b.String()
}
