package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pathsErrorHeader is the response header in which the gateway names the
// reason of every error it answers itself.
const pathsErrorHeader = "X-Kakuremichi-Error"

// TestPathsRefusals holds what the data path must refuse, and how, with
// Control, one gateway and one agent as processes:
//   - quality.md 9: a tunnel whose target is down answers a clear 502 within
//     1 s (the agent down is TestPathsAgentKilled);
//   - quality.md 19: an unknown Host gets 404 and reaches no agent;
//   - a disabled tunnel answers 503, and serves again once enabled;
//   - quality.md 20: a slowloris client is cut off by the read-header
//     timeout (10 s) while everyone else is served; 64 KiB of headers get
//     431.
func TestPathsRefusals(t *testing.T) {
	t.Setenv("KAKUREMICHI_LOG_LEVEL", "debug") // the agent logs every stream it accepts
	c := newCluster(t)
	gw := c.addGateway("gw1")
	c.addAgent("home")
	c.waitNodesReady(30 * time.Second)

	web := newPathsTarget(t)
	var webRequests atomic.Int64
	webCounted := pathsCountingProxy(t, web.url, &webRequests)
	c.applyTunnel("web", "web.example.com", "home", webCounted)
	// The slowloris and huge-header checks send the requests they expect
	// served to a tunnel of their own, uncounted: they run beside the
	// unknown-host check, which counts what reaches web's target.
	c.applyTunnel("busy", "busy.example.com", "home", web.url)
	c.applyTunnel("down", "down.example.com", "home", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	pathsCreateTunnel(t, c, "off", "off.example.com", "home", webCounted, false)

	client := gatewayClient(gw.httpAddr, 10*time.Second)
	waitServing(t, client, "http://web.example.com/", 200, "Hello from target", 10*time.Second)
	waitServing(t, client, "http://busy.example.com/", 200, "Hello from target", 10*time.Second)
	// Until the agent has the tunnel the gateway answers 502 too, for
	// another reason: wait for the agent's own answer.
	pathsWaitReason(t, client, "http://down.example.com/", 502, "TargetUnreachable", 10*time.Second)
	pathsWaitReason(t, client, "http://off.example.com/", 503, "Disabled", 10*time.Second)

	// They run side by side: the slowloris takes the read-header timeout.
	t.Run("refusals", func(t *testing.T) {
		t.Run("slowloris", func(t *testing.T) {
			t.Parallel()
			pathsSlowloris(t, gw, client)
		})
		t.Run("target down", func(t *testing.T) {
			t.Parallel()
			pathsTargetDown(t, client)
		})
		t.Run("unknown host", func(t *testing.T) {
			t.Parallel()
			pathsUnknownHost(t, c, client, &webRequests)
		})
		t.Run("disabled", func(t *testing.T) {
			t.Parallel()
			pathsExpectError(t, client, "http://off.example.com/", 503, "Disabled", "disabled", time.Second)
		})
		t.Run("huge headers", func(t *testing.T) {
			t.Parallel()
			pathsHugeHeaders(t, gw)
		})
	})

	t.Run("disabled then enabled", func(t *testing.T) {
		if code, out := c.api("PATCH", "/tunnels/off", `{"spec":{"enabled":true}}`); code != 200 {
			t.Fatalf("enable: got %d %s, want 200", code, out)
		}
		waitServing(t, client, "http://off.example.com/", 200, "Hello from target", 5*time.Second)
	})

	t.Run("no secrets in logs or arguments", func(t *testing.T) {
		pathsCheckNoSecrets(t, c)
	})
}

// TestPathsAgentKilled holds quality.md 9 for an agent that is gone: after
// kill -9 of the agent, its tunnels answer a clear 502 "agent offline"
// within 3 s, every time, never a hang. Control still believes the agent
// online (its lease is 40 s), so the gateway must find out by itself. Two
// tunnels of the agent: "cold" never served a request, so the gateway
// has to open a stream; "warm" served several at once just before the
// kill, which leaves streams in the gateway's pool.
func TestPathsAgentKilled(t *testing.T) {
	c := newCluster(t)
	gw := c.addGateway("gw1")
	app := c.addApp("app")
	c.addAgent("doomed")
	c.waitNodesReady(30 * time.Second)
	c.applyTunnel("warm", "warm.example.com", "doomed", app)
	c.applyTunnel("cold", "cold.example.com", "doomed", app)
	client := gatewayClient(gw.httpAddr, 10*time.Second)
	waitServing(t, client, "http://warm.example.com/", 200, "Hello from app", 10*time.Second)
	// "cold" is never asked for: the gateway's saved slice says when it
	// routes it (changes close together may reach a node in two deltas).
	slice := filepath.Join(pathsStateDir(t, gw.controlProc), "slice.json")
	pathsPoll(t, 10*time.Second, "the gateway to route cold.example.com", func() bool {
		for _, it := range savedSliceItems(t, slice) {
			if it.Route != nil && it.Route.Hostname == "cold.example.com" {
				return true
			}
		}
		return false
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if code, _, err := get(client, "http://warm.example.com/slow?d=100ms"); err != nil || code != 200 {
				t.Errorf("before the kill: got %d %v, want 200", code, err)
			}
		})
	}
	wg.Wait()
	c.agents["doomed"].kill()
	killed := time.Now()

	for _, tc := range []struct{ name, host string }{
		{"no stream pooled", "cold.example.com"},
		{"streams pooled", "warm.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var worst time.Duration
			var mu sync.Mutex // guards worst
			check := func() {
				d := pathsExpectError(t, client, "http://"+tc.host+"/", 502, "AgentOffline", "agent offline", 3*time.Second)
				mu.Lock()
				worst = max(worst, d)
				mu.Unlock()
			}
			// At once, as many as the pool holds, then one by one.
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(check)
			}
			wg.Wait()
			for range 2 {
				check()
			}
			t.Logf("agent killed: the slowest of 10 answers took %v; %v since the kill",
				worst.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
		})
	}
}

// pathsCreateTunnel creates a tunnel, enabled or not.
func pathsCreateTunnel(t *testing.T, c *cluster, name, host, agent, target string, enabled bool) {
	t.Helper()
	body := fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":%q},"spec":{"hostname":%q,"agent":%q,"target":%q,"enabled":%t}}`,
		name, host, agent, target, enabled)
	if code, out := c.api("POST", "/tunnels", body); code != 201 {
		t.Fatalf("create tunnel %s: got %d %s, want 201", name, code, out)
	}
}

// pathsCountingProxy serves in front of target and counts the requests
// that reach it; it returns its URL.
func pathsCountingProxy(t *testing.T, target string, n *atomic.Int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.RequestURI(), r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// pathsWaitReason polls url until the gateway answers code with reason.
func pathsWaitReason(t *testing.T, client *http.Client, url string, code int, reason string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == code && resp.Header.Get(pathsErrorHeader) == reason {
				return
			}
			last = fmt.Sprintf("%d %q", resp.StatusCode, resp.Header.Get(pathsErrorHeader))
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: got %s, want %d %s within %v", url, last, code, reason, within)
}

// pathsExpectError makes one request and checks the gateway's error page:
// status, reason header, an HTML page that says what happened, answered
// within limit; then the same as JSON for a client that asks for it. It
// may run on any goroutine: failures are reported with Errorf.
func pathsExpectError(t *testing.T, client *http.Client, url string, code int, reason, phrase string, limit time.Duration) time.Duration {
	t.Helper()
	var took time.Duration
	for _, accept := range []string{"text/html,application/xhtml+xml,*/*;q=0.8", "application/json"} {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Accept", accept)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("%s: %v after %v", url, err, time.Since(start))
			return time.Since(start)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(start)
		took = max(took, d)
		if err != nil {
			t.Errorf("%s: reading the page: %v", url, err)
			return took
		}
		if d > limit {
			t.Errorf("%s: answered after %v, want within %v", url, d, limit)
		}
		if resp.StatusCode != code || resp.Header.Get(pathsErrorHeader) != reason {
			t.Errorf("%s: got %d %s=%q, want %d %q", url, resp.StatusCode, pathsErrorHeader, resp.Header.Get(pathsErrorHeader), code, reason)
			return took
		}
		if accept == "application/json" {
			var e struct {
				Error, Reason, Message string
				Status                 int
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Reason != reason || e.Status != code || !strings.Contains(strings.ToLower(e.Error+e.Message), phrase) {
				t.Errorf("%s as JSON: got %s (%v), want reason %q, status %d and a message with %q", url, body, err, reason, code, phrase)
			}
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("%s: got Content-Type %q, want an HTML page", url, ct)
		}
		host := strings.ToLower(strings.SplitN(url, "/", 4)[2])
		if page := strings.ToLower(string(body)); !strings.Contains(page, phrase) || !strings.Contains(page, host) {
			t.Errorf("%s: page %q does not say %q about %s", url, body, phrase, host)
		}
	}
	return took
}

// pathsTargetDown: the agent's dial of the target is refused at once, and
// the gateway says so within a second, every time.
func pathsTargetDown(t *testing.T, client *http.Client) {
	var worst time.Duration
	for range 5 {
		worst = max(worst, pathsExpectError(t, client, "http://down.example.com/some/page", 502, "TargetUnreachable", "refused the connection", time.Second))
	}
	t.Logf("target down: 502 TargetUnreachable in %v at worst", worst.Round(time.Millisecond))
}

// pathsUnknownHost: a Host no tunnel has gets 404 from the gateway, and no
// agent sees a stream for it (each agent logs every stream it accepts at
// debug level; the gateway's probes name the tunnel ".probe"), nor does
// any target see a request.
func pathsUnknownHost(t *testing.T, c *cluster, client *http.Client, webRequests *atomic.Int64) {
	before := map[string]int{}
	for name, a := range c.agents {
		before[name] = len(a.logs())
	}
	reqsBefore := webRequests.Load()
	hosts := []string{"unknown.example.com", "web.example.com.evil.test", "example.com", "127.0.0.1", "WEB.example.co"}
	for _, h := range hosts {
		pathsExpectError(t, client, "http://"+h+"/", 404, "NoSuchTunnel", "no tunnel", time.Second)
	}
	// A request with no Host at all (HTTP/1.0).
	conn, err := net.Dial("tcp", c.gateways[0].httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("request without Host: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || resp.Header.Get(pathsErrorHeader) != "NoSuchTunnel" {
		t.Errorf("request without Host: got %d %q, want 404 NoSuchTunnel", resp.StatusCode, resp.Header.Get(pathsErrorHeader))
	}
	for name, a := range c.agents {
		for _, line := range strings.Split(a.logs()[before[name]:], "\n") {
			// The unknown hosts imitate web's name; the other checks
			// running meanwhile (probes, the slowloris check's own
			// tunnel, "down", "off") open streams of their own.
			if strings.Contains(line, `msg="stream`) && strings.Contains(line, "tunnel=web ") {
				t.Errorf("agent %s saw a stream of web while only unknown hosts were asked for: %s", name, line)
			}
		}
	}
	if n := webRequests.Load() - reqsBefore; n != 0 {
		t.Errorf("the target saw %d requests, want 0", n)
	}
}

// pathsSlowloris trickles a request's headers a byte at a time on several
// connections: each must be closed by the gateway's read-header timeout
// (10 s), well within 15 s, while other clients are served throughout.
func pathsSlowloris(t *testing.T, gw *gatewayProc, client *http.Client) {
	const conns = 8
	start := time.Now()
	type result struct {
		sent   int
		closed time.Duration
		err    error
	}
	results := make(chan result, conns)
	var wg sync.WaitGroup
	for i := range conns {
		useTLS := i%2 == 1
		wg.Go(func() {
			results <- pathsTrickle(gw, useTLS, start)
		})
	}
	// Everyone else is served meanwhile.
	served := 0
	stop := make(chan struct{})
	go func() { wg.Wait(); close(stop) }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-tick.C:
			code, body, err := get(client, "http://busy.example.com/")
			if err != nil || code != 200 || !strings.Contains(body, "Hello from target") {
				t.Errorf("a normal request during the slowloris: got %d %v, want 200", code, err)
			}
			served++
		case <-deadline:
			t.Fatal("slowloris connections still open after 20 s")
		}
	}
	close(results)
	for r := range results {
		if r.err != nil {
			t.Errorf("slowloris connection: %v", r.err)
			continue
		}
		if r.closed < 9*time.Second || r.closed > 15*time.Second {
			t.Errorf("slowloris connection closed after %v (%d bytes sent), want between 9 s and 15 s", r.closed, r.sent)
		}
	}
	t.Logf("%d slowloris connections closed by the gateway after %v; %d normal requests served meanwhile", conns, time.Since(start).Round(time.Millisecond), served)
	if served < 20 {
		t.Errorf("got %d normal requests served during the slowloris, want at least 20", served)
	}
}

// pathsTrickle sends a request line and then one header byte every 200 ms
// until the gateway closes the connection, and reports when it did.
func pathsTrickle(gw *gatewayProc, useTLS bool, start time.Time) (r struct {
	sent   int
	closed time.Duration
	err    error
}) {
	var conn net.Conn
	var err error
	if useTLS {
		// The handshake completes at once; the headers trickle inside TLS.
		conn, err = tls.Dial("tcp", gw.httpsAddr, &tls.Config{InsecureSkipVerify: true, ServerName: "web.example.com", NextProtos: []string{"http/1.1"}})
	} else {
		conn, err = net.Dial("tcp", gw.httpAddr)
	}
	if err != nil {
		r.err = err
		return r
	}
	defer conn.Close()
	closed := make(chan time.Duration, 1)
	go func() {
		// The gateway sends nothing back for a request it never got; the
		// read ends when it closes the connection.
		io.Copy(io.Discard, conn)
		closed <- time.Since(start)
	}()
	msg := "GET / HTTP/1.1\r\nHost: web.example.com\r\nUser-Agent: slowloris\r\nX-Slow: " + strings.Repeat("a", 200)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case r.closed = <-closed:
			return r
		case <-tick.C:
			if r.sent < len(msg) {
				// A write may fail once the gateway has closed; the read
				// reports when.
				if _, err := conn.Write([]byte{msg[r.sent]}); err == nil {
					r.sent++
				}
			}
		case <-deadline:
			r.err = fmt.Errorf("still open after %v", time.Since(start))
			return r
		}
	}
}

// pathsHugeHeaders: a request whose headers exceed 64 KiB gets 431 on
// HTTP and HTTPS, one just below passes, and the gateway serves on. Its
// requests go to busy, whose target nobody counts.
func pathsHugeHeaders(t *testing.T, gw *gatewayProc) {
	cases := []struct {
		name   string
		header int
		tls    bool
		want   int
	}{
		{"http 80 KiB", 80 << 10, false, 431},
		{"https 80 KiB", 80 << 10, true, 431},
		{"http 1 MiB", 1 << 20, false, 431},
		{"http 48 KiB", 48 << 10, false, 200},
		{"https 48 KiB", 48 << 10, true, 200},
	}
	for _, tc := range cases {
		var conn net.Conn
		var err error
		if tc.tls {
			conn, err = tls.Dial("tcp", gw.httpsAddr, &tls.Config{InsecureSkipVerify: true, ServerName: "busy.example.com", NextProtos: []string{"http/1.1"}})
		} else {
			conn, err = net.Dial("tcp", gw.httpAddr)
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		// Written concurrently: the gateway may answer and close before it
		// has read everything.
		go fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: busy.example.com\r\nX-Big: %s\r\nConnection: close\r\n\r\n", strings.Repeat("b", tc.header))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Errorf("%s: reading the answer: %v", tc.name, err)
			conn.Close()
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	code, _, err := get(gatewayClient(gw.httpAddr, 5*time.Second), "http://busy.example.com/")
	if err != nil || code != 200 {
		t.Errorf("after huge headers: got %d %v, want 200", code, err)
	}
}
