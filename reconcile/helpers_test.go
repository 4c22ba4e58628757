package reconcile_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
)

// tunnel returns a valid tunnel to create.
func tunnel(name, host string) *api.Tunnel {
	return &api.Tunnel{
		Metadata: api.ObjectMeta{Name: name},
		Spec:     api.TunnelSpec{Hostname: host, Agent: "agent-1", Target: "http://localhost:8080"},
	}
}

// eventually polls cond until it holds or 5 seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still false after 5s, want true", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runAll runs each Run function until the test ends, then cancels them
// and waits for them to return nil.
func runAll(t *testing.T, runs ...func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, len(runs))
	for _, run := range runs {
		wg.Go(func() { errs <- run(ctx) })
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("Run: got %v, want nil", err)
			}
		}
	})
}

// recorder keeps every change an informer reported.
type recorder struct {
	mu      sync.Mutex // guards changes
	changes []reconcile.Change
}

func (r *recorder) handle(c reconcile.Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
}

// summary returns "TYPE name" for each change from index from on,
// leaving out resyncs.
func (r *recorder) summary(from int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.changes[min(from, len(r.changes)):] {
		if !c.Resync {
			out = append(out, string(c.Type)+" "+c.Object().GetMeta().Name)
		}
	}
	return out
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.changes)
}
