package store

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// testLog is a slog handler target that writes to t.Log until the test's
// cleanup silences it: etcd may log from its own goroutines while
// stopping, and t.Log after the test ended panics.
type testLog struct {
	t  testing.TB
	mu sync.Mutex // guards done
	// done is set once the test no longer accepts log lines.
	done bool
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func newTestLogger(t testing.TB) *slog.Logger {
	w := &testLog{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testContext returns a context that ends with the test, bounded so a
// stuck etcd fails the test instead of hanging it.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openTestStore opens an embedded store in a fresh temporary directory and
// closes it when the test ends.
func openTestStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.DataDir == "" && len(cfg.Endpoints) == 0 {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = newTestLogger(t)
	}
	s, err := Open(testContext(t), cfg)
	if err != nil {
		t.Fatalf("Open: got error %v, want nil", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: got error %v, want nil", err)
		}
	})
	return s
}

func newTunnel(name, hostname string) *api.Tunnel {
	return &api.Tunnel{
		TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tunnel"},
		Metadata: api.ObjectMeta{Name: name},
		Spec:     api.TunnelSpec{Hostname: hostname, Agent: "home", Target: "http://localhost:8080"},
	}
}

func mustCreate(t testing.TB, s *Store, obj api.Object) api.Object {
	t.Helper()
	out, err := s.Create(testContext(t), obj, WriteOptions{})
	if err != nil {
		t.Fatalf("Create %s: got error %v, want nil", obj.GetMeta().Name, err)
	}
	return out
}

func tunnelOf(t testing.TB, obj api.Object) *api.Tunnel {
	t.Helper()
	tun, ok := obj.(*api.Tunnel)
	if !ok {
		t.Fatalf("got %T, want *api.Tunnel", obj)
	}
	return tun
}

// waitGoroutines polls until the number of goroutines is at most want, and
// fails with a dump of them when it does not get there in time.
func waitGoroutines(t testing.TB, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: got %d, want at most %d\n%s", n, want, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
