package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"github.com/kakuremichi/kakuremichi/internal/testlog"
)

// TestReapplyUnchanged: applying the same slice again changes nothing: the
// same routing table and device, pooled streams to the agent reused, tcp
// relays untouched.
func TestReapplyUnchanged(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t)
	svc := lineServer(t)
	e.agent.forward(t, "db", "tcp://"+svc.Addr().String(), true)
	port := freePort(t)
	db := httpRoute("db", "db.example.com", e.agent)
	db.Protocol, db.PublicPort = protocolTCP, port
	e.gw.apply(t, sliceOf([]*testAgent{e.agent}, httpRoute("fuga", hostA, e.agent), db))

	if code, _, _ := get(t, e.http, "http://x/", "Host", hostA); code != 200 {
		t.Fatalf("got %d, want 200", code)
	}
	c, r := lineClient(t, port)
	dials := e.gw.dials.Load()
	table, dev, routes := e.gw.table.Load(), e.gw.dev.Load(), e.gw.Status().Routes

	// A slice equal in content, built anew.
	e.gw.apply(t, sliceOf([]*testAgent{e.agent}, httpRoute("fuga", hostA, e.agent), db))

	if e.gw.table.Load() != table {
		t.Errorf("routing table: replaced, want the same")
	}
	if e.gw.dev.Load() != dev {
		t.Errorf("wireguard device: replaced, want the same")
	}
	if got := e.gw.Status().Routes; fmt.Sprint(got) != fmt.Sprint(routes) {
		t.Errorf("routes: got %v, want %v", got, routes)
	}
	if code, _, _ := get(t, e.http, "http://x/", "Host", hostA); code != 200 {
		t.Fatalf("got %d, want 200", code)
	}
	if n := e.gw.dials.Load() - dials; n != 0 {
		t.Errorf("new streams to the agent after re-Apply: got %d, want 0 (the pooled one reused)", n)
	}
	roundTrip(t, c, r, "still relayed")
	c.Close()
	waitFor(t, "relay of a closed connection gone", 10*time.Second, func() bool {
		return e.gw.relays(port) == 0
	})
}

// TestAddressChange: a new overlay address for the gateway recreates its
// WireGuard device on the same UDP port, and traffic flows through it.
func TestAddressChange(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t)
	oldDev, port := e.gw.dev.Load(), e.gw.WireGuardPort()
	newAddr := netip.MustParseAddr("100.64.0.10")

	agent := newAgent(t, "agent-c", "100.64.0.4")
	agent.gwAddr = newAddr
	app := startApp(t, "c")
	agent.forward(t, "fuga", "http://"+app.addr(), true)
	s := sliceOf([]*testAgent{agent}, httpRoute("fuga", hostA, agent))
	s["self"] = selfItem(newAddr, true)
	e.gw.apply(t, s)
	agent.start(t, e.gw)

	if e.gw.dev.Load() == oldDev {
		t.Fatalf("device: kept, want a new one for %s", newAddr)
	}
	if got := e.gw.dev.Load().Address(); got != newAddr {
		t.Errorf("device address: got %s, want %s", got, newAddr)
	}
	if got := e.gw.WireGuardPort(); got != port {
		t.Errorf("wireguard port: got %d, want %d (kept)", got, port)
	}
	if _, err := oldDev.Peers(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("old device: got %v, want it closed", err)
	}
	waitHandshake(t, e.gw, agent)
	if code, _, body := get(t, e.http, "http://x/", "Host", hostA); code != 200 || !strings.HasPrefix(body, "app c:") {
		t.Errorf("got %d %q, want 200 from app c", code, body)
	}

	// Without "self" there is no device.
	delete(s, "self")
	e.gw.apply(t, s)
	if e.gw.dev.Load() != nil || e.gw.WireGuardPort() != 0 {
		t.Errorf("device without self: got one, want none")
	}
	code, h, _ := get(t, e.http, "http://x/", "Host", hostA)
	if code != 503 || h.Get(ErrorHeader) != ReasonGatewayNotReady {
		t.Errorf("without a device: got %d %s, want 503 %s", code, h.Get(ErrorHeader), ReasonGatewayNotReady)
	}
}

// TestDrainOnShutdown: once Run's context ends, the gateway stops
// accepting, answers its health as draining, lets in-flight requests and
// tcp relays finish, and returns as soon as they have.
func TestDrainOnShutdown(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t, func(c *Config) { c.ShutdownGrace = 20 * time.Second })
	svc := lineServer(t)
	e.agent.forward(t, "db", "tcp://"+svc.Addr().String(), true)
	port := freePort(t)
	db := httpRoute("db", "db.example.com", e.agent)
	db.Protocol, db.PublicPort = protocolTCP, port
	e.gw.apply(t, sliceOf([]*testAgent{e.agent}, httpRoute("fuga", hostA, e.agent), db))
	tc, tr := lineClient(t, port)

	type result struct {
		code int
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://x/block", nil)
		req.Host = hostA
		resp, err := e.http.Do(req)
		if err != nil {
			inflight <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		inflight <- result{resp.StatusCode, string(b), err}
	}()
	<-e.app.blocked

	e.gw.cancel()
	waitFor(t, "listener closed", 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", e.gw.httpAddr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if !e.gw.draining.Load() {
		t.Errorf("draining: got false, want true")
	}
	// An open tcp relay keeps working through the grace period.
	roundTrip(t, tc, tr, "during drain")
	tc.Close()

	released := time.Now()
	close(e.app.release)
	res := <-inflight
	if res.err != nil || res.code != 200 || res.body != "released" {
		t.Errorf("in-flight request: got %d %q %v, want 200 released", res.code, res.body, res.err)
	}
	e.gw.wait(t)
	if elapsed := time.Since(released); elapsed > 5*time.Second {
		t.Errorf("Run returned %v after the last request ended, want at once (grace is 20 s)", elapsed)
	}
	if err := e.gw.Apply(e.slice); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Apply after Run: got %v, want net.ErrClosed", err)
	}
}

// TestGraceExpires: what is still in flight when the grace period ends is
// cut, and Run returns.
func TestGraceExpires(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t, func(c *Config) { c.ShutdownGrace = 300 * time.Millisecond })
	defer close(e.app.release)
	failed := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://x/block", nil)
		req.Host = hostA
		resp, err := e.http.Do(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		failed <- err
	}()
	<-e.app.blocked
	// An upgraded connection, which http.Server does not track, is cut
	// as well.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+e.gw.httpAddr+"/ws", &websocket.DialOptions{Host: hostA})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if e.gw.upgraded.len() != 1 {
		t.Errorf("upgraded connections tracked: got %d, want 1", e.gw.upgraded.len())
	}

	start := time.Now()
	e.gw.stop(t)
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("Run returned %v after cancel, want about the 300 ms grace", elapsed)
	}
	select {
	case err := <-failed:
		if err == nil {
			t.Errorf("in-flight request: got a whole response, want it cut")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("in-flight request still running 10 s after the gateway stopped")
	}
	if _, _, err := ws.Read(ctx); err == nil || ctx.Err() != nil {
		t.Errorf("WebSocket read after stop: got %v, want the connection closed", err)
	}
}

// TestProbesAndStatus: Status reports peers by name, served routes, and a
// probe per agent through the data path: OK for a live agent, failed for
// one that never came up.
func TestProbesAndStatus(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t, func(c *Config) {
		c.ProbeInterval = 200 * time.Millisecond
		c.ProbeTimeout = 500 * time.Millisecond
	})
	offline := newAgent(t, "agent-off", "100.64.0.9")
	disabled := httpRoute("off", "off.example.com", offline)
	disabled.Enabled = false
	e.gw.apply(t, sliceOf([]*testAgent{e.agent, offline}, httpRoute("fuga", hostA, e.agent), disabled))

	waitFor(t, "probes of both agents", 10*time.Second, func() bool {
		return len(e.gw.Status().Probes) == 2
	})
	st := e.gw.Status()
	for _, p := range st.Probes {
		switch p.Agent {
		case e.agent.name:
			if !p.OK || p.LatencyMS <= 0 || p.CheckedAt.IsZero() {
				t.Errorf("probe of the live agent: got %+v, want OK with a latency", p)
			}
		case offline.name:
			if p.OK || p.Message == "" {
				t.Errorf("probe of the offline agent: got %+v, want failed with a message", p)
			}
		default:
			t.Errorf("probe of unknown agent %q", p.Agent)
		}
	}
	peers := map[string]bridge.PeerStatus{}
	for _, p := range st.Peers {
		peers[p.Name] = p
	}
	if p := peers[e.agent.name]; !strings.HasPrefix(p.Endpoint, "127.0.0.1:") || p.LastHandshake.IsZero() || p.RxBytes == 0 {
		t.Errorf("live peer: got %+v, want a loopback endpoint, a handshake and traffic", p)
	}
	if p, ok := peers[offline.name]; !ok || p.Endpoint != "" || !p.LastHandshake.IsZero() {
		t.Errorf("offline peer: got %+v (present %v), want present with no endpoint and no handshake", p, ok)
	}
	if got := fmt.Sprint(st.Routes); got != "["+hostA+"]" {
		t.Errorf("routes: got %s, want [%s] (the disabled route is not served)", got, hostA)
	}

	// An agent removed from the slice leaves the status.
	e.gw.apply(t, e.slice)
	st = e.gw.Status()
	if len(st.Probes) != 1 || st.Probes[0].Agent != e.agent.name || len(st.Peers) != 1 {
		t.Errorf("after removing %s: got probes %+v peers %+v, want only %s", offline.name, st.Probes, st.Peers, e.agent.name)
	}
}

// TestRunTwice: Run may be called once.
func TestRunTwice(t *testing.T) {
	leakcheck.Goroutines(t)
	gw := startGateway(t)
	waitFor(t, "first Run started", 10*time.Second, func() bool {
		gw.mu.Lock()
		defer gw.mu.Unlock()
		return gw.started
	})
	err := gw.Run(context.Background())
	if !errors.Is(err, api.ErrConflict) {
		t.Errorf("second Run: got %v, want api.ErrConflict", err)
	}
}

// TestRunListenError: a listen address that cannot be bound fails Run, and
// releases what Apply created.
func TestRunListenError(t *testing.T) {
	leakcheck.Goroutines(t)
	busy := listenLoopback(t)
	defer busy.Close()
	g, err := New(Config{PrivateKey: newKey(t), HTTPSListen: busy.Addr().String(), Logger: testlog.New(t, "gateway")})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Apply(bridge.Slice{"self": selfItem(gatewayAddr, true)}); err != nil {
		t.Fatal(err)
	}
	if err := g.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Run: got %v, want address already in use", err)
	}
	if g.dev.Load() != nil {
		t.Errorf("device after a failed Run: got one, want it closed")
	}
}
