package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kakuremichi/kakuremichi/internal/demoapp"
)

// pathsHost is the hostname the path tests publish.
const pathsHost = "paths.example.com"

// TestPathsStreams holds what a tunnel must carry, through one gateway and
// one agent as processes, over HTTP and HTTPS: WebSocket echo, server-sent
// events delivered one by one, forwarding headers replaced by the
// gateway's own (quality.md 19), and a large upload and download arriving
// intact. Afterwards no secret is in any log or command line (quality.md
// 21), with every process logging at debug level.
func TestPathsStreams(t *testing.T) {
	t.Setenv("KAKUREMICHI_LOG_LEVEL", "debug")
	c := newCluster(t)
	gw := c.addGateway("gw1")
	app := c.addApp("app")
	c.addAgent("home")
	c.waitNodesReady(30 * time.Second)
	c.applyTunnel("web", pathsHost, "home", app)
	waitServing(t, gatewayClient(gw.httpAddr, 5*time.Second), "http://"+pathsHost+"/", 200, "Hello from app", 10*time.Second)

	schemes := []struct {
		scheme, addr string
	}{
		{"http", gw.httpAddr},
		{"https", gw.httpsAddr},
	}

	t.Run("websocket", func(t *testing.T) {
		for _, s := range schemes {
			t.Run(s.scheme, func(t *testing.T) {
				pathsWebSocketEcho(t, pathsHTTP1Client(s.addr), strings.Replace(s.scheme, "http", "ws", 1)+"://"+pathsHost+"/ws")
			})
		}
	})

	t.Run("sse", func(t *testing.T) {
		for _, s := range schemes {
			t.Run(s.scheme, func(t *testing.T) {
				pathsSSE(t, gatewayClient(s.addr, 0), s.scheme+"://"+pathsHost)
			})
		}
	})

	t.Run("forwarded headers replaced", func(t *testing.T) {
		for _, s := range schemes {
			t.Run(s.scheme, func(t *testing.T) {
				pathsForwardedHeaders(t, gatewayClient(s.addr, 10*time.Second), s.scheme)
			})
		}
	})

	t.Run("bulk", func(t *testing.T) {
		// The promise is a 1 GiB upload and download: over plain
		// HTTP always; over HTTPS too with KAKUREMICHI_LONG_TESTS=1 (it
		// costs another half minute on two cores).
		for _, s := range schemes {
			size := int64(1 << 30)
			if s.scheme == "https" && !pathsLongTests() {
				size = 256 << 20
			}
			t.Run(s.scheme, func(t *testing.T) {
				pathsBulk(t, gatewayClient(s.addr, 0), s.scheme+"://"+pathsHost, size)
			})
		}
	})

	t.Run("no secrets in logs or arguments", func(t *testing.T) {
		pathsCheckNoSecrets(t, c)
	})
}

// pathsWebSocketEcho sends text and binary messages of several sizes and
// checks that each comes back unchanged, in order.
func pathsWebSocketEcho(t *testing.T, client *http.Client, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	defer conn.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("dial %s: got status %d, want 101", url, resp.StatusCode)
	}
	conn.SetReadLimit(1 << 20)
	pattern := make([]byte, 512<<10)
	io.ReadFull(&demoapp.Pattern{}, pattern)
	msgs := []struct {
		typ  websocket.MessageType
		data []byte
	}{
		{websocket.MessageText, []byte("hello through the tunnel")},
		{websocket.MessageBinary, pattern[:1]},
		{websocket.MessageBinary, pattern[:64<<10]},
		{websocket.MessageText, bytes.Repeat([]byte("ü"), 100_000)},
		{websocket.MessageBinary, pattern},
	}
	for i := range 50 {
		msgs = append(msgs, struct {
			typ  websocket.MessageType
			data []byte
		}{websocket.MessageText, []byte(fmt.Sprintf("message %d", i))})
	}
	for i, m := range msgs {
		if err := conn.Write(ctx, m.typ, m.data); err != nil {
			t.Fatalf("message %d: write: %v", i, err)
		}
		typ, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: read: %v", i, err)
		}
		if typ != m.typ || !bytes.Equal(data, m.data) {
			t.Fatalf("message %d: got %v of %d bytes, want the %v of %d bytes sent", i, typ, len(data), m.typ, len(m.data))
		}
	}
	if err := conn.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Errorf("close: got %v, want a clean closing handshake", err)
	}
}

// pathsSSE reads an event stream and checks that every event reaches the
// client before the app sends the next one: the gateway flushes each
// event at once instead of buffering the stream.
func pathsSSE(t *testing.T, client *http.Client, base string) {
	const n, interval = 5, 400 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/sse?n=%d&interval=%v", base, n, interval), nil)
	req.Header.Set("Accept", "text/event-stream")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("got %d %q, want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var received, sent []time.Time
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		now := time.Now()
		// "data: event I at RFC3339Nano", the app's clock at sending.
		var i int
		var at string
		if _, err := fmt.Sscanf(line, "data: event %d at %s", &i, &at); err != nil {
			t.Fatalf("event line %q: %v", line, err)
		}
		if i != len(received) {
			t.Fatalf("got event %d, want event %d", i, len(received))
		}
		ts, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			t.Fatalf("event %d time %q: %v", i, at, err)
		}
		received, sent = append(received, now), append(sent, ts)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	if len(received) != n {
		t.Fatalf("got %d events, want %d", len(received), n)
	}
	for i := 0; i+1 < n; i++ {
		if !received[i].Before(sent[i+1]) {
			t.Errorf("event %d arrived at %v, want before event %d was sent at %v", i,
				received[i].Sub(start), i+1, sent[i+1].Sub(start))
		}
	}
	ahead := sent[n-1].Sub(received[0])
	if ahead < (n-1)*interval/2 {
		t.Errorf("first event arrived %v before the last was sent, want at least %v", ahead, (n-1)*interval/2)
	}
	t.Logf("first event after %v; it arrived %v before the last was sent; each event arrived %v after it was sent at most",
		received[0].Sub(start).Round(time.Millisecond), ahead.Round(time.Millisecond), pathsMaxLag(received, sent).Round(time.Microsecond))
}

func pathsMaxLag(received, sent []time.Time) time.Duration {
	var lag time.Duration
	for i := range received {
		lag = max(lag, received[i].Sub(sent[i]))
	}
	return lag
}

// pathsForwardedHeaders sends forged forwarding headers and checks, with
// the app's /headers, that the gateway replaced them with its own view of
// the client.
func pathsForwardedHeaders(t *testing.T, client *http.Client, scheme string) {
	const forged = "203.0.113.66"
	req, _ := http.NewRequest("GET", scheme+"://"+pathsHost+"/headers", nil)
	req.Header.Set("X-Forwarded-For", forged)
	req.Header.Add("X-Forwarded-For", forged+", 198.51.100.7")
	req.Header.Set("Forwarded", "for="+forged+";proto=https;host=evil.example")
	req.Header.Set("X-Real-IP", forged)
	req.Header.Set("X-Forwarded-Host", "evil.example")
	req.Header.Set("X-Forwarded-Proto", "gopher")
	req.Header.Set("X-Forwarded-Port", "1")
	req.Header.Set("X-Forwarded-Server", "evil.example")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("got %d %s, want 200", resp.StatusCode, body)
	}
	var got struct {
		Host    string              `json:"host"`
		Headers map[string][]string `json:"headers"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if scheme == "https" && resp.ProtoMajor != 2 {
		t.Errorf("client protocol: got %s, want HTTP/2 over TLS", resp.Proto)
	}
	want := map[string][]string{
		"X-Forwarded-For":   {"127.0.0.1"},
		"X-Real-Ip":         {"127.0.0.1"},
		"X-Forwarded-Proto": {scheme},
		"X-Forwarded-Host":  {pathsHost},
	}
	for k, v := range want {
		if fmt.Sprint(got.Headers[k]) != fmt.Sprint(v) {
			t.Errorf("%s: got %q, want %q", k, got.Headers[k], v)
		}
	}
	for _, k := range []string{"Forwarded", "X-Forwarded-Port", "X-Forwarded-Server"} {
		if v, ok := got.Headers[k]; ok {
			t.Errorf("%s: got %q, want it removed", k, v)
		}
	}
	if got.Host != pathsHost {
		t.Errorf("Host: got %q, want %q", got.Host, pathsHost)
	}
	for k, vs := range got.Headers {
		for _, v := range vs {
			if strings.Contains(v, forged) || strings.Contains(v, "evil.example") || strings.Contains(v, "198.51.100.7") {
				t.Errorf("%s: %q still carries what the client forged", k, v)
			}
		}
	}
}

// pathsBulk uploads size bytes of demoapp.Pattern and downloads as many,
// checking both by SHA-256 and reporting the throughput.
func pathsBulk(t *testing.T, client *http.Client, base string, size int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// Upload: the app answers "<bytes> <sha256>" of what it received.
	want := sha256.New()
	body := io.TeeReader(io.LimitReader(&demoapp.Pattern{}, size), want)
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/upload", body)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	up := time.Since(start)
	wantSum := hex.EncodeToString(want.Sum(nil))
	if resp.StatusCode != 200 {
		t.Fatalf("upload: got %d %s, want 200", resp.StatusCode, answer)
	}
	if got, wantAnswer := strings.TrimSpace(string(answer)), strconv.FormatInt(size, 10)+" "+wantSum; got != wantAnswer {
		t.Fatalf("upload: the app received %q, want %q", got, wantAnswer)
	}

	// Download: the app streams the pattern; its checksum must match the
	// one of the bytes uploaded, which were the same pattern.
	req, _ = http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/bytes?n=%d", base, size), nil)
	start = time.Now()
	resp, err = client.Do(req)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("download: got %d, want 200", resp.StatusCode)
	}
	got := sha256.New()
	n, err := io.CopyBuffer(got, resp.Body, make([]byte, 256<<10))
	down := time.Since(start)
	if err != nil {
		t.Fatalf("download: after %d bytes: %v", n, err)
	}
	if n != size {
		t.Fatalf("download: got %d bytes, want %d", n, size)
	}
	if gotSum := hex.EncodeToString(got.Sum(nil)); gotSum != wantSum {
		t.Fatalf("download: got sha256 %s, want %s", gotSum, wantSum)
	}
	mb := float64(size) / 1e6
	t.Logf("%d MiB over %s: upload %v (%.0f MB/s), download %v (%.0f MB/s), %s", size>>20, resp.Proto,
		up.Round(time.Millisecond), mb/up.Seconds(), down.Round(time.Millisecond), mb/down.Seconds(), base)
}
