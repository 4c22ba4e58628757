package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/gateway"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"github.com/kakuremichi/kakuremichi/internal/testlog"
)

// realGateway is a running gateway.Gateway with its plain-HTTP listener
// on loopback.
type realGateway struct {
	*gateway.Gateway
	priv     string // public key, base64
	httpAddr string
	cancel   context.CancelFunc
	done     chan error
}

func startRealGateway(t testing.TB) *realGateway {
	t.Helper()
	priv := mustKey(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{
		PrivateKey:    priv,
		HTTPListener:  ln,
		ShutdownGrace: time.Second,
		ProbeInterval: 100 * time.Millisecond,
		Logger:        testlog.New(t, "gateway"),
	})
	if err != nil {
		ln.Close()
		t.Fatalf("gateway.New: %v", err)
	}
	rg := &realGateway{Gateway: g, priv: priv.PublicKey().String(), httpAddr: ln.Addr().String(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	rg.cancel = cancel
	go func() { rg.done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-rg.done:
			if err != nil {
				t.Errorf("gateway Run: got %v, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("gateway Run did not return within 30 s")
		}
	})
	return rg
}

// TestEndToEndWithGateway: the real gateway routes by Host through
// WireGuard to the real agent, which forwards to the app; the gateway's
// error pages follow the agent's answers; the gateway's probe through the
// data path finds the agent; and the agent's stop is not held up by the
// gateway's pool of idle streams.
func TestEndToEndWithGateway(t *testing.T) {
	leakcheck.Goroutines(t)
	app := httptest.NewServer(http.HandlerFunc(origin))
	t.Cleanup(app.Close)
	down := closedPort(t)

	gw := startRealGateway(t)
	a, err := New(Config{PrivateKey: mustKey(t), ShutdownGrace: 10 * time.Second, Logger: testlog.New(t, "agent")})
	if err != nil {
		t.Fatal(err)
	}
	self := bridge.Self{Name: "agent-home", Address: agentAddr, Enabled: true}
	route := func(tunnel, host string, enabled bool) bridge.Item {
		return bridge.Item{Key: "route/" + host, Route: &bridge.Route{
			Tunnel: tunnel, Hostname: host, Protocol: "http", Agent: self.Name, AgentAddress: agentAddr, Enabled: enabled,
		}}
	}
	// The gateway's slice first, as Control delivers it: a handshake the
	// gateway refuses is retried only 5 s later.
	if err := gw.Apply(bridge.Slice{
		"self":            {Key: "self", Self: &bridge.Self{Name: "gw1", Address: gwAddr, Enabled: true}},
		"peer/agent-home": {Key: "peer/agent-home", Peer: &bridge.Peer{Name: self.Name, PublicKey: a.PublicKey().String(), Address: agentAddr}},
		"route/fuga.test": route("web", "fuga.test", true),
		"route/down.test": route("down", "down.test", true),
		"route/gone.test": route("gone", "gone.test", true),
		"route/off.test":  route("off", "off.test", true),
	}); err != nil {
		t.Fatalf("gateway Apply: %v", err)
	}
	gwPeer := bridge.Peer{Name: "gw1", PublicKey: gw.priv, Address: gwAddr, Endpoint: fmt.Sprintf("127.0.0.1:%d", gw.WireGuardPort())}
	if err := a.Apply(sliceOf(self, []bridge.Peer{gwPeer},
		bridge.Forward{Tunnel: "web", Target: app.URL, Enabled: true},
		bridge.Forward{Tunnel: "down", Target: "tcp://" + down, Enabled: true},
		bridge.Forward{Tunnel: "off", Target: app.URL, Enabled: false},
	)); err != nil {
		t.Fatalf("agent Apply: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	stopped := false
	stop := func() time.Duration {
		start := time.Now()
		cancel()
		select {
		case err := <-runErr:
			if err != nil {
				t.Errorf("agent Run: got %v, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("agent Run did not return within 30 s")
		}
		stopped = true
		return time.Since(start)
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})

	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, gw.httpAddr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	fetch := func(host string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://" + host + "/path")
		if err != nil {
			t.Fatalf("GET %s: %v", host, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	waitFor(t, 10*time.Second, "the tunnel to answer through the gateway", func() bool {
		code, _ := fetch("fuga.test")
		return code == http.StatusOK
	})
	tests := []struct {
		host     string
		wantCode int
		wantBody string
	}{
		{"fuga.test", http.StatusOK, "http fuga.test /path"},
		{"down.test", http.StatusBadGateway, ""},
		{"gone.test", http.StatusBadGateway, ""},
		{"off.test", http.StatusServiceUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			start := time.Now()
			code, body := fetch(tt.host)
			if code != tt.wantCode || (tt.wantBody != "" && body != tt.wantBody) {
				t.Errorf("GET %s: got %d %q, want %d %q", tt.host, code, firstLine(body), tt.wantCode, tt.wantBody)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("GET %s took %v, want < 1s", tt.host, took)
			}
		})
	}

	waitFor(t, 5*time.Second, "the gateway's probe to reach the agent", func() bool {
		for _, p := range gw.Status().Probes {
			if p.Agent == self.Name && p.OK {
				return true
			}
		}
		return false
	})
	st := a.Status()
	if len(st.Peers) != 1 || st.Peers[0].Name != "gw1" || st.Peers[0].LastHandshake.IsZero() {
		t.Errorf("agent status peers: got %+v, want gw1 with a handshake", st.Peers)
	}

	// The gateway now pools an idle stream to the agent; stopping the
	// agent closes it instead of waiting out the 10 s grace period.
	if took := stop(); took > 5*time.Second {
		t.Errorf("agent stop with the gateway's idle streams: took %v, want well under its 10 s grace", took)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
