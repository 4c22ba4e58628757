package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"github.com/kakuremichi/kakuremichi/internal/testlog"
)

// TestRouteByHost: each Host reaches its own tunnel's application through
// its own agent, whatever the case of the Host and its port.
func TestRouteByHost(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t)
	agentB := newAgent(t, "agent-b", "100.64.0.3")
	appB := startApp(t, "b")
	agentB.forward(t, "api", "http://"+appB.addr(), true)
	e.gw.apply(t, sliceOf([]*testAgent{e.agent, agentB},
		httpRoute("fuga", hostA, e.agent), httpRoute("api", hostB, agentB)))
	agentB.start(t, e.gw)
	waitHandshake(t, e.gw, agentB)

	tests := []struct {
		host     string
		wantBody string
	}{
		{hostA, "app a: host=" + hostA + " path=/x"},
		{"FUGA.Example.COM:8080", "app a: host=FUGA.Example.COM:8080 path=/x"},
		{hostA + ".", "app a: host=" + hostA + ". path=/x"},
		{hostB, "app b: host=" + hostB + " path=/x"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			code, h, body := get(t, e.http, "http://"+hostA+"/x", "Host", tt.host)
			if code != http.StatusOK || body != tt.wantBody {
				t.Fatalf("got %d %q (%s), want 200 %q", code, body, h.Get(ErrorHeader), tt.wantBody)
			}
		})
	}
}

// TestUnknownHostReachesNoAgent: a Host that no route names is answered
// 404 by the gateway without a single stream to any agent.
func TestUnknownHostReachesNoAgent(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t)
	dials := e.gw.dials.Load()
	for _, host := range []string{"nope.example.com", "127.0.0.1", "", "fuga.example.com.evil.com", "[::1]:80", "fuga"} {
		t.Run(host, func(t *testing.T) {
			code, h, body := get(t, e.http, "http://x/", "Host", host)
			if code != http.StatusNotFound || h.Get(ErrorHeader) != ReasonNoSuchTunnel {
				t.Errorf("got %d %s, want 404 %s", code, h.Get(ErrorHeader), ReasonNoSuchTunnel)
			}
			if !strings.Contains(body, "No such tunnel") {
				t.Errorf("body: got %q, want the no-such-tunnel page", body)
			}
		})
	}
	if got := e.gw.dials.Load(); got != dials {
		t.Errorf("streams opened to agents: got %d, want %d", got-dials, 0)
	}
}

// TestErrorPages: every way a tunnel can be unavailable gets its own page,
// status and reason, as HTML for a browser and JSON when asked.
func TestErrorPages(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t)
	// An agent in the slice that never comes up: WireGuard never answers.
	offline := newAgent(t, "agent-off", "100.64.0.9") // never started
	closedPort := listenLoopback(t)
	closedAddr := closedPort.Addr().String()
	closedPort.Close()

	e.agent.forward(t, "refused", "http://"+closedAddr, true)
	e.agent.forward(t, "agent-disabled", "http://"+e.app.addr(), false)
	noAddr := httpRoute("noaddr", "noaddr.example.com", e.agent)
	noAddr.AgentAddress = netip.Addr{}
	disabled := httpRoute("disabled", "disabled.example.com", e.agent)
	disabled.Enabled = false
	e.gw.apply(t, sliceOf([]*testAgent{e.agent, offline},
		httpRoute("fuga", hostA, e.agent),
		noAddr, disabled,
		httpRoute("offline", "offline.example.com", offline),
		httpRoute("refused", "refused.example.com", e.agent),
		httpRoute("agent-disabled", "agentdisabled.example.com", e.agent),
		httpRoute("unknown", "unknown.example.com", e.agent),
	))

	tests := []struct {
		host       string
		wantCode   int
		wantReason string
		wantTitle  string
	}{
		{"missing.example.com", 404, ReasonNoSuchTunnel, "no such tunnel"},
		{"disabled.example.com", 503, ReasonTunnelDisabled, "tunnel disabled"},
		{"noaddr.example.com", 502, ReasonAgentOffline, "agent offline"},
		{"offline.example.com", 502, ReasonAgentOffline, "agent offline"},
		{"refused.example.com", 502, ReasonTargetUnreachable, "the service behind the tunnel refused the connection"},
		{"agentdisabled.example.com", 503, ReasonTunnelDisabled, "tunnel disabled"},
		{"unknown.example.com", 502, ReasonAgentUnknownTunnel, "the agent does not serve this tunnel yet"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			// In parallel: each request to the offline agent takes the
			// whole dial timeout.
			for _, accept := range []string{"", "text/html,application/xhtml+xml,*/*;q=0.8", "application/json", "text/html;q=0.5, application/json"} {
				t.Run(accept, func(t *testing.T) {
					t.Parallel()
					checkErrorPage(t, e.http, tt.host, accept, tt.wantCode, tt.wantReason, tt.wantTitle)
				})
			}
		})
	}
	// The tunnel that works still works next to the broken ones.
	if code, _, body := get(t, e.http, "http://x/", "Host", hostA); code != 200 {
		t.Errorf("working tunnel: got %d %q, want 200", code, body)
	}
}

// checkErrorPage requests host with an Accept header and checks the error
// page: status, reason, and the body as HTML or JSON.
func checkErrorPage(t *testing.T, c *http.Client, host, accept string, wantCode int, wantReason, wantTitle string) {
	t.Helper()
	start := time.Now()
	code, h, body := get(t, c, "http://x/", "Host", host, "Accept", accept)
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("answered in %v, want within 3 s", elapsed)
	}
	if code != wantCode || h.Get(ErrorHeader) != wantReason {
		t.Fatalf("got %d %s, want %d %s", code, h.Get(ErrorHeader), wantCode, wantReason)
	}
	if strings.Contains(accept, "application/json") && !strings.HasPrefix(accept, "text/html,") {
		var got errorBody
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("body %q is not JSON: %v", body, err)
		}
		if got.Error != wantTitle || got.Reason != wantReason || got.Status != wantCode || !strings.Contains(got.Message, host) {
			t.Errorf("got %+v, want error %q reason %s status %d mentioning %s", got, wantTitle, wantReason, wantCode, host)
		}
		if ct := h.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type: got %q, want application/json", ct)
		}
		return
	}
	if ct := h.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type: got %q, want text/html; charset=utf-8", ct)
	}
	title := strings.ToUpper(wantTitle[:1]) + wantTitle[1:]
	if !strings.Contains(body, "<h1>"+title+"</h1>") || !strings.Contains(body, host) {
		t.Errorf("HTML page lacks %q or the host:\n%s", title, body)
	}
}

// TestGatewayDisabled: a disabled gateway keeps its routes out of service.
func TestGatewayDisabled(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t)
	s := sliceOf([]*testAgent{e.agent}, httpRoute("fuga", hostA, e.agent))
	s["self"] = selfItem(gatewayAddr, false)
	e.gw.apply(t, s)
	code, h, _ := get(t, e.http, "http://x/", "Host", hostA)
	if code != 503 || h.Get(ErrorHeader) != ReasonGatewayDisabled {
		t.Errorf("got %d %s, want 503 %s", code, h.Get(ErrorHeader), ReasonGatewayDisabled)
	}
	if got := e.gw.Status().Routes; len(got) != 0 {
		t.Errorf("routes served while disabled: got %v, want none", got)
	}
	e.gw.apply(t, e.slice)
	if code, _, _ := get(t, e.http, "http://x/", "Host", hostA); code != 200 {
		t.Errorf("enabled again: got %d, want 200", code)
	}
}

// TestForwardedHeaders: whatever the client claims in X-Forwarded-*,
// Forwarded or X-Real-IP is dropped; the application sees the gateway's
// own view of the client.
func TestForwardedHeaders(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t)
	code, _, body := get(t, e.http, "http://x/headers",
		"Host", hostA,
		"X-Forwarded-For", "203.0.113.9",
		"X-Forwarded-Host", "evil.example.net",
		"X-Forwarded-Proto", "https",
		"X-Forwarded-Port", "443",
		"X-Forwarded-Server", "evil",
		"Forwarded", "for=203.0.113.9;proto=https",
		"X-Real-IP", "203.0.113.9",
	)
	if code != 200 {
		t.Fatalf("got %d %q, want 200", code, body)
	}
	var got http.Header
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"Host":               hostA,
		"X-Forwarded-For":    "127.0.0.1",
		"X-Forwarded-Host":   hostA,
		"X-Forwarded-Proto":  "http",
		"X-Real-Ip":          "127.0.0.1",
		"X-Forwarded-Port":   "",
		"X-Forwarded-Server": "",
		"Forwarded":          "",
	}
	for k, v := range want {
		if g := strings.Join(got.Values(k), ","); g != v {
			t.Errorf("%s at the app: got %q, want %q", k, g, v)
		}
	}
}

// TestHealth: the gateway's health answers on its own path on every Host,
// and at /healthz only where no route claims the Host.
func TestHealth(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t)
	tests := []struct {
		host, path string
		want       string
	}{
		{hostA, HealthPath, `{"status":"ok"}`},
		{"127.0.0.1", HealthPath, `{"status":"ok"}`},
		{"127.0.0.1", "/healthz", `{"status":"ok"}`},
		{"unrouted.example.com", "/healthz", `{"status":"ok"}`},
		{hostA, "/healthz", "app a health"},
	}
	for _, tt := range tests {
		code, _, body := get(t, e.http, "http://x"+tt.path, "Host", tt.host)
		if code != 200 || strings.TrimSpace(body) != tt.want {
			t.Errorf("%s%s: got %d %q, want 200 %q", tt.host, tt.path, code, body, tt.want)
		}
	}
}

// TestHealthBeforeConfiguration: without a slice the gateway says it is
// not ready, and requests get a clear answer rather than a hang.
func TestHealthBeforeConfiguration(t *testing.T) {
	leakcheck.Goroutines(t)
	httpLn := listenLoopback(t)
	g, err := New(Config{PrivateKey: newKey(t), HTTPListener: httpLn, Logger: testlog.New(t, "gateway")})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	}()
	c := client(httpLn.Addr().String())
	defer c.CloseIdleConnections()
	code, _, body := get(t, c, "http://x"+HealthPath)
	if code != 503 || !strings.Contains(body, "waiting for configuration") {
		t.Errorf("health: got %d %q, want 503 waiting for configuration", code, body)
	}
	// Routes without a device: the gateway cannot reach any agent.
	if err := g.Apply(bridge.Slice{"route/" + hostA: {Key: "route/" + hostA, Route: &bridge.Route{
		Tunnel: "fuga", Hostname: hostA, Protocol: "http", Agent: "a", AgentAddress: netip.MustParseAddr("100.64.0.2"), Enabled: true,
	}}}); err != nil {
		t.Fatal(err)
	}
	code, h, _ := get(t, c, "http://x/", "Host", hostA)
	if code != 503 || h.Get(ErrorHeader) != ReasonGatewayNotReady {
		t.Errorf("request: got %d %s, want 503 %s", code, h.Get(ErrorHeader), ReasonGatewayNotReady)
	}
}

// TestHugeHeaders: a header block beyond MaxHeaderBytes is refused with
// 431, and the gateway keeps serving.
func TestHugeHeaders(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t)
	code, _, _ := get(t, e.http, "http://x/", "Host", hostA, "X-Big", strings.Repeat("a", 2*MaxHeaderBytes))
	if code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("got %d, want 431", code)
	}
	if code, _, _ := get(t, e.http, "http://x/", "Host", hostA, "X-Fits", strings.Repeat("a", MaxHeaderBytes/2)); code != 200 {
		t.Errorf("headers within the limit: got %d, want 200", code)
	}
}

// TestSlowloris: a client that trickles its headers is cut off by the
// read-header timeout, not kept forever.
func TestSlowloris(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t, func(c *Config) { c.ReadHeaderTimeout = 300 * time.Millisecond })
	c, err := net.Dial("tcp", e.gw.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: " + hostA + "\r\n")); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() {
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				closed <- err
				return
			}
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-closed:
			if elapsed := time.Since(start); elapsed > 3*time.Second {
				t.Errorf("closed after %v, want within 3 s", elapsed)
			}
			return
		case <-tick.C:
			if i > 200 {
				t.Fatalf("connection still open after %v of trickled headers", time.Since(start))
			}
			// Writes fail once the server has closed; the reader reports it.
			c.Write([]byte("X"))
		}
	}
}

// TestWrapHTTP: the plain-HTTP hook sees every :80 request first (where
// ACME challenges and the HTTPS redirect will go); HTTPS is not wrapped.
func TestWrapHTTP(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t, func(c *Config) {
		c.WrapHTTP = func(routes http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
					io.WriteString(w, "token")
					return
				}
				if r.URL.Path == "/redirect" {
					http.Redirect(w, r, "https://"+r.Host+r.URL.Path, http.StatusPermanentRedirect)
					return
				}
				routes.ServeHTTP(w, r)
			})
		}
	})
	e.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	tests := []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/.well-known/acme-challenge/abc", 200, "token"},
		{"/redirect", 308, ""},
		{"/x", 200, "app a: host=" + hostA + " path=/x"},
	}
	for _, tt := range tests {
		code, h, body := get(t, e.http, "http://x"+tt.path, "Host", hostA)
		if code != tt.wantCode || (tt.wantBody != "" && body != tt.wantBody) {
			t.Errorf("http %s: got %d %q (%s), want %d %q", tt.path, code, body, h.Get("Location"), tt.wantCode, tt.wantBody)
		}
	}
	hc := tlsClient(e.gw.httpsAddr, hostA)
	defer hc.CloseIdleConnections()
	code, _, body := get(t, hc, "https://"+hostA+"/.well-known/acme-challenge/abc")
	if code != 200 || !strings.HasPrefix(body, "app a:") {
		t.Errorf("https: got %d %q, want the application's answer (not wrapped)", code, body)
	}
}
