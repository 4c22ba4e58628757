package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// Hostnames of the test tunnels.
const (
	hostA = "fuga.example.com"
	hostB = "api.example.com"
)

// env is a gateway, one agent and one application: the smallest complete
// data path.
type env struct {
	gw    *testGateway
	agent *testAgent
	app   *testApp
	// http reaches the gateway's plain-HTTP listener.
	http *http.Client
	// slice is what was applied.
	slice bridge.Slice
}

// newEnv starts a gateway and an agent serving tunnel "fuga" (hostA) to a
// test application, and waits until the agent's WireGuard handshake is
// done.
func newEnv(t testing.TB, opts ...func(*Config)) *env {
	t.Helper()
	e := &env{gw: startGateway(t, opts...)}
	e.agent = newAgent(t, "agent-a", "100.64.0.2")
	e.app = startApp(t, "a")
	e.agent.forward(t, "fuga", "http://"+e.app.addr(), true)
	e.slice = sliceOf([]*testAgent{e.agent}, httpRoute("fuga", hostA, e.agent))
	e.gw.apply(t, e.slice)
	e.agent.start(t, e.gw)
	e.http = client(e.gw.httpAddr)
	t.Cleanup(e.http.CloseIdleConnections)
	waitHandshake(t, e.gw, e.agent)
	return e
}

// waitHandshake waits until the gateway has a WireGuard session with a.
func waitHandshake(t testing.TB, gw *testGateway, a *testAgent) {
	t.Helper()
	waitFor(t, "handshake with "+a.name, 10*time.Second, func() bool {
		for _, p := range gw.Status().Peers {
			if p.Name == a.name && !p.LastHandshake.IsZero() {
				return true
			}
		}
		return false
	})
}

// testApp is the application behind a tunnel.
type testApp struct {
	name string
	srv  *httptest.Server
	// events feeds /sse: each value sent is one event; closing ends it.
	events chan string
	// release unblocks /block requests.
	release chan struct{}
	// blocked receives a value when a /block request has arrived.
	blocked chan struct{}

	// mu guards requests.
	mu       sync.Mutex
	requests int
}

func startApp(t testing.TB, name string) *testApp {
	t.Helper()
	a := &testApp{name: name, events: make(chan string), release: make(chan struct{}), blocked: make(chan struct{}, 16)}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.requests++
		a.mu.Unlock()
		fmt.Fprintf(w, "app %s: host=%s path=%s", a.name, r.Host, r.URL.Path)
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		json.NewEncoder(w).Encode(h)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app %s health", a.name)
	})
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev, ok := <-a.events:
				if !ok {
					return
				}
				fmt.Fprintf(w, "data: %s\n\n", ev)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	})
	mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.Copy(w, patternReader(2, n))
	})
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		a.blocked <- struct{}{}
		select {
		case <-a.release:
			fmt.Fprint(w, "released")
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	})
	a.srv = httptest.NewServer(mux)
	t.Cleanup(a.srv.Close)
	return a
}

func (a *testApp) addr() string { return a.srv.Listener.Addr().String() }

func (a *testApp) requestCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests
}

// patternReader yields n pseudo-random bytes, the same for the same seed.
func patternReader(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return io.LimitReader(rand.NewChaCha8(s), n)
}
