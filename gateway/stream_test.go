package gateway

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
)

// TestWebSocketEcho: a WebSocket upgrade passes through the gateway and the
// tunnel, over plain HTTP and over HTTPS.
func TestWebSocketEcho(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t)
	tests := []struct {
		name string
		url  string
		hc   *http.Client
	}{
		{"ws", "ws://" + e.gw.httpAddr + "/ws", http.DefaultClient},
		{"wss", "wss://" + e.gw.httpsAddr + "/ws", &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{ServerName: hostA, InsecureSkipVerify: true},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, tt.url, &websocket.DialOptions{HTTPClient: tt.hc, Host: hostA})
			if err != nil {
				t.Fatalf("dial: %v (response %v)", err, resp)
			}
			defer c.CloseNow()
			for i := range 3 {
				msg := fmt.Sprintf("hello %d", i)
				if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					t.Fatalf("write: %v", err)
				}
				_, got, err := c.Read(ctx)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if want := "echo: " + msg; string(got) != want {
					t.Fatalf("got %q, want %q", got, want)
				}
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Errorf("close: %v", err)
			}
		})
	}
}

// TestServerSentEvents: each event reaches the client as soon as the
// application sends it; the application sends the next one only after the
// client has read the previous, so a buffering proxy would hang here.
func TestServerSentEvents(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t)
	req, _ := http.NewRequest(http.MethodGet, "http://x/sse", nil)
	req.Host = hostA
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("got %d %q, want 200 text/event-stream", resp.StatusCode, ct)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() != "" {
				lines <- sc.Text()
			}
		}
	}()
	for i := range 5 {
		ev := fmt.Sprintf("event %d", i)
		e.app.events <- ev
		select {
		case got := <-lines:
			if want := "data: " + ev; got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s not delivered within 5 s of being sent: the stream is buffered", ev)
		}
	}
	close(e.app.events)
	for l := range lines {
		t.Errorf("after the end of the stream: got %q, want nothing", l)
	}
}

// TestHTTPS: TLS with a self-signed certificate for the routed hostname,
// HTTP/2 negotiated, and X-Forwarded-Proto https.
func TestHTTPS(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t)
	hc := tlsClient(e.gw.httpsAddr, hostA)
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + hostA + "/headers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Errorf("got %d over %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
	}
	leaf := resp.TLS.PeerCertificates[0]
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: hostA, Roots: roots}); err != nil {
		t.Errorf("self-signed certificate for %s: %v", hostA, err)
	}
	var h http.Header
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	if got := h.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto: got %q, want https", got)
	}

	// A name the gateway does not route gets the generic certificate, and
	// the 404 page.
	other := tlsClient(e.gw.httpsAddr, "nope.example.com")
	defer other.CloseIdleConnections()
	resp2, err := other.Get("https://nope.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if got := resp2.TLS.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != fallbackName {
		t.Errorf("certificate for an unrouted name: got %v, want [%s]", got, fallbackName)
	}
	if resp2.StatusCode != 404 {
		t.Errorf("unrouted name: got %d, want 404", resp2.StatusCode)
	}
}

// TestCertificateSources: the GetCertificate hook comes first, then the
// certificate files, then the self-signed fallback.
func TestCertificateSources(t *testing.T) {
	leakcheck.Goroutines(t)
	fileCert, err := selfSignedCertificate("files.example.com")
	if err != nil {
		t.Fatal(err)
	}
	hookCert, err := selfSignedCertificate("hook.example.com")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	keyDER, err := x509.MarshalPKCS8PrivateKey(fileCert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fileCert.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	hook := func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if hello.ServerName == "hook.example.com" {
			return hookCert, nil
		}
		return nil, nil
	}

	tests := []struct {
		name     string
		cfg      func(*Config)
		sni      string
		wantName string
	}{
		{"hook answers", func(c *Config) { c.GetCertificate = hook; c.CertFile, c.KeyFile = certFile, keyFile }, "hook.example.com", "hook.example.com"},
		{"hook passes to files", func(c *Config) { c.GetCertificate = hook; c.CertFile, c.KeyFile = certFile, keyFile }, hostA, "files.example.com"},
		{"files", func(c *Config) { c.CertFile, c.KeyFile = certFile, keyFile }, "anything.example.com", "files.example.com"},
		{"self-signed", func(c *Config) {}, "anything.example.com", fallbackName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := startGateway(t, tt.cfg)
			c, err := tls.Dial("tcp", gw.httpsAddr, &tls.Config{ServerName: tt.sni, InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.ConnectionState().PeerCertificates[0].DNSNames[0]; got != tt.wantName {
				t.Errorf("certificate for %s: got %s, want %s", tt.sni, got, tt.wantName)
			}
		})
	}

	if _, err := New(Config{PrivateKey: newKey(t), CertFile: certFile, KeyFile: filepath.Join(dir, "missing.pem")}); err == nil {
		t.Errorf("New with a missing key file: got nil error, want one")
	}
}

// tlsClient is an HTTP/2-capable client that sends every request to addr
// with SNI name, trusting any certificate.
func tlsClient(addr, name string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			TLSClientConfig:   &tls.Config{ServerName: name, InsecureSkipVerify: true},
			ForceAttemptHTTP2: true,
		},
		Timeout: 30 * time.Second,
	}
}

// TestLargeTransfer: a large upload and a large download pass through
// intact, with no size cap. 256 MiB each way; less under the race
// detector, whose netstack is ten times slower.
func TestLargeTransfer(t *testing.T) {
	leakcheck.Goroutines(t)
	size := int64(256 << 20)
	if raceEnabled || testing.Short() {
		size = 32 << 20
	}
	want := sha256.New()
	io.Copy(want, patternReader(2, size))
	wantSum := hex.EncodeToString(want.Sum(nil))
	e := newEnv(t)

	t.Run("upload", func(t *testing.T) {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPost, "http://x/upload", patternReader(2, size))
		req.Host = hostA
		req.ContentLength = size
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if got, want := string(body), fmt.Sprintf("%d %s", size, wantSum); resp.StatusCode != 200 || got != want {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, got, want)
		}
		t.Logf("%d MiB up in %v", size>>20, time.Since(start))
	})
	t.Run("download", func(t *testing.T) {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://x/download?n=%d", size), nil)
		req.Host = hostA
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); n != size || got != wantSum {
			t.Fatalf("got %d bytes %s, want %d bytes %s", n, got, size, wantSum)
		}
		t.Logf("%d MiB down in %v", size>>20, time.Since(start))
	})
}

// lineServer is a TCP service that speaks first: it greets, then answers
// each line in upper case until the client closes.
func lineServer(t testing.TB) net.Listener {
	t.Helper()
	ln := listenLoopback(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "HELLO kakuremichi\n")
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s\n", strings.ToUpper(sc.Text()))
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	ln := listenLoopback(t)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// lineClient connects to a public tcp port and reads the greeting.
func lineClient(t testing.TB, port int) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatalf("dialing public port %d: %v", port, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if greeting, err := r.ReadString('\n'); err != nil || greeting != "HELLO kakuremichi\n" {
		t.Fatalf("greeting on port %d: got %q, %v; want HELLO kakuremichi", port, greeting, err)
	}
	return c, r
}

// roundTrip sends a line and checks the upper-case answer.
func roundTrip(t testing.TB, c net.Conn, r *bufio.Reader, line string) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := r.ReadString('\n')
	if want := strings.ToUpper(line) + "\n"; err != nil || got != want {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
}

// TestTCPRoute: a raw TCP tunnel on a public port carries a line protocol
// whose server speaks first, passes half-closes on, survives a port that
// cannot be bound next to it, and closes when the route goes.
func TestTCPRoute(t *testing.T) {
	leakcheck.Goroutines(t)
	e := newEnv(t, func(c *Config) { c.ProbeInterval = 100 * time.Millisecond })
	svc := lineServer(t)
	e.agent.forward(t, "db", "tcp://"+svc.Addr().String(), true)
	port := freePort(t)
	busy := listenLoopback(t) // a port someone else holds
	busyPort := busy.Addr().(*net.TCPAddr).Port
	tcpRoute := func(tunnel string, p int) bridge.Route {
		r := httpRoute(tunnel, tunnel+".example.com", e.agent)
		r.Protocol, r.PublicPort = protocolTCP, p
		return r
	}
	e.agent.forward(t, "db2", "tcp://"+svc.Addr().String(), true)
	full := sliceOf([]*testAgent{e.agent}, httpRoute("fuga", hostA, e.agent), tcpRoute("db", port), tcpRoute("db2", busyPort))
	err := e.gw.Apply(full)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint(busyPort)) {
		t.Errorf("Apply with a busy port: got %v, want an error naming port %d", err, busyPort)
	}
	wantRoutes := fmt.Sprintf("%s tcp/%d", hostA, port)
	if got := strings.Join(e.gw.Status().Routes, " "); got != wantRoutes {
		t.Errorf("routes: got %q, want %q", got, wantRoutes)
	}

	c, r := lineClient(t, port)
	for _, line := range []string{"select 1", "hello world"} {
		roundTrip(t, c, r, line)
	}
	// A half-close reaches the service, which ends; its EOF comes back.
	c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Errorf("after half-close: got %q, %v; want EOF", rest, err)
	}
	if code, _, _ := get(t, e.http, "http://x/", "Host", hostA); code != 200 {
		t.Errorf("http route next to the busy port: got %d, want 200", code)
	}

	// Once the port is free, the probe loop binds it.
	busy.Close()
	waitFor(t, "busy port bound after release", 10*time.Second, func() bool {
		return strings.Contains(strings.Join(e.gw.Status().Routes, " "), fmt.Sprintf("tcp/%d", busyPort))
	})
	c2, r2 := lineClient(t, busyPort)
	roundTrip(t, c2, r2, "second port")

	// Removing the route closes its port and its open connections.
	open, openR := lineClient(t, port)
	e.gw.apply(t, sliceOf([]*testAgent{e.agent}, httpRoute("fuga", hostA, e.agent), tcpRoute("db2", busyPort)))
	if rest, err := io.ReadAll(openR); len(rest) != 0 {
		t.Errorf("connection of a removed route: got %q, %v; want it closed", rest, err)
	}
	open.Close()
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Errorf("port %d of a removed route still accepts connections", port)
	}
	roundTrip(t, c2, r2, "unaffected")

	// The relay ends with the client's connection.
	c2.Close()
	waitFor(t, "relay of a closed connection gone", 10*time.Second, func() bool {
		return e.gw.relays(busyPort) == 0
	})
}

// relays counts the connections relayed on a public tcp port.
func (g *Gateway) relays(port int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if l, ok := g.tcp[port]; ok {
		return l.conns.len()
	}
	return 0
}
