package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
)

// slowOrigin answers /slow only once release is closed, telling entered
// when a request is waiting.
type slowOrigin struct {
	entered     chan struct{}
	release     chan struct{}
	releaseOnce func()
}

func newSlowOrigin(t testing.TB) (*slowOrigin, string) {
	o := &slowOrigin{entered: make(chan struct{}, 16), release: make(chan struct{})}
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	// Registered after srv.Close, so it runs first: Close waits for
	// handlers.
	released := false
	t.Cleanup(func() {
		if !released {
			close(o.release)
		}
	})
	o.releaseOnce = func() { released = true; close(o.release) }
	return o, srv.URL
}

func (o *slowOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.entered <- struct{}{}
	select {
	case <-o.release:
		io.WriteString(w, "done")
	case <-r.Context().Done():
	}
}

// TestDrain: when Run's context ends, the agent stops taking streams at
// once, lets a slow response in flight finish within the grace period,
// and closes what is left when the grace period is over.
func TestDrain(t *testing.T) {
	t.Run("in-flight response completes", func(t *testing.T) {
		leakcheck.Goroutines(t)
		o, url := newSlowOrigin(t)
		const grace = 10 * time.Second
		f := startAgent(t, Config{ShutdownGrace: grace}, bridge.Forward{Tunnel: "web", Target: url, Enabled: true})
		s := f.open(t, "web")
		req, _ := http.NewRequest(http.MethodGet, "http://fuga.sample.com/slow", nil)
		if err := req.Write(s); err != nil {
			t.Fatal(err)
		}
		<-o.entered

		cancelled := time.Now()
		f.cancel()
		// No new streams once draining has begun: they are answered
		// "stopping", which also tells a gateway's check that the agent
		// is still there while its streams finish.
		waitFor(t, 5*time.Second, "new streams to be turned away", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			n, err := f.gw.open(ctx, agentAddr, "web")
			if err == nil {
				n.Close()
				return false
			}
			var re *bridge.RefusedError
			return errors.As(err, &re) && re.Code == bridge.RefuseStopping
		})
		select {
		case err := <-f.runErr:
			t.Fatalf("Run returned (%v) with a response in flight, want it to wait", err)
		default:
		}

		o.releaseOnce()
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(s.r, req)
		if err != nil {
			t.Fatalf("reading the response after cancel: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || string(body) != "done" {
			t.Fatalf("response after cancel: got %q, %v, want \"done\"", body, err)
		}
		s.Close()
		select {
		case err := <-f.runErr:
			close(f.runErr)
			if err != nil {
				t.Errorf("Run: got %v, want nil", err)
			}
			if took := time.Since(cancelled); took >= grace {
				t.Errorf("drain took %v, want it to end with the stream, well within %v", took, grace)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run still running 5 s after the last stream ended")
		}
	})

	t.Run("idle keep-alive streams do not hold the stop", func(t *testing.T) {
		leakcheck.Goroutines(t)
		o, url := newSlowOrigin(t)
		fast := httptest.NewServer(http.HandlerFunc(origin))
		t.Cleanup(fast.Close)
		const grace = 10 * time.Second
		f := startAgent(t, Config{ShutdownGrace: grace},
			bridge.Forward{Tunnel: "web", Target: url, Enabled: true},
			bridge.Forward{Tunnel: "fast", Target: fast.URL, Enabled: true},
			bridge.Forward{Tunnel: "db", Target: "tcp://" + serveTCP(t, lineEcho), Enabled: true},
		)
		// A pooled stream that served a request, one never used, and a
		// tcp stream: only the http ones are known to be idle.
		pooled := f.open(t, "fast")
		if resp, body := get(t, pooled, "fuga.sample.com", "/a"); resp.StatusCode != http.StatusOK {
			t.Fatalf("first request: got %d %q, want 200", resp.StatusCode, body)
		}
		unused := f.open(t, "fast")
		tcp := f.open(t, "db")
		slow := f.open(t, "web")
		req, _ := http.NewRequest(http.MethodGet, "http://fuga.sample.com/slow", nil)
		if err := req.Write(slow); err != nil {
			t.Fatal(err)
		}
		<-o.entered

		start := time.Now()
		f.cancel()
		for name, s := range map[string]*gwStream{"pooled": pooled, "unused": unused} {
			s.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := s.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Errorf("%s stream while draining: got %d bytes, %v, want it closed", name, n, err)
			}
		}
		// The slow request and the tcp stream are still served.
		io.WriteString(tcp, "still\n")
		if got, want := readLine(t, tcp), "echo: still\n"; got != want {
			t.Errorf("tcp stream while draining: got %q, want %q", got, want)
		}
		tcp.Close()
		o.releaseOnce()
		slow.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(slow.r, req)
		if err != nil {
			t.Fatalf("slow response while draining: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "done" {
			t.Errorf("slow response: got %q, want \"done\"", body)
		}
		slow.Close()
		if err := f.stop(t); err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("stop took %v, want the idle streams closed rather than waited for (grace %v)", took, grace)
		}
	})

	t.Run("grace period over", func(t *testing.T) {
		leakcheck.Goroutines(t)
		o, url := newSlowOrigin(t)
		const grace = 300 * time.Millisecond
		f := startAgent(t, Config{ShutdownGrace: grace}, bridge.Forward{Tunnel: "web", Target: url, Enabled: true})
		s := f.open(t, "web")
		req, _ := http.NewRequest(http.MethodGet, "http://fuga.sample.com/slow", nil)
		if err := req.Write(s); err != nil {
			t.Fatal(err)
		}
		<-o.entered
		// A second stream that never even sends its preamble.
		idle, err := f.gw.dev.DialContext(context.Background(), "tcp", s.RemoteAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()

		start := time.Now()
		err = f.stop(t)
		took := time.Since(start)
		if err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
		if took < grace || took > grace+2*time.Second {
			t.Errorf("drain took %v, want the grace period %v and little more", took, grace)
		}
		// The agent closed the slow stream: its gateway end sees EOF or a
		// reset, not a response.
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := s.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("slow stream after the grace period: got %d bytes, %v, want it closed", n, err)
		}
	})
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
