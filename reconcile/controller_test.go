package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

// calls counts reconciles per key name.
type calls struct {
	mu sync.Mutex // guards n
	n  map[string]int
}

func (c *calls) inc(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[name]++
	return c.n[name]
}

func (c *calls) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

// startController runs an informer of tunnels and a controller over it
// until the test ends.
func startController(t *testing.T, src *reconciletest.Source, workers int, rec reconcile.Reconciler,
	mapFunc func(api.Object) []reconcile.Request) (*reconcile.Informer, *reconcile.Controller) {
	t.Helper()
	inf := newInformer(src, 0)
	c := reconcile.NewController(reconcile.ControllerConfig{
		Name: "test", Reconciler: rec, Workers: workers,
		Backoff: reconcile.Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond},
	})
	c.Watch(inf, mapFunc)
	runAll(t, inf.Run, c.Run)
	return inf, c
}

// quiet waits a little to let a reconcile that should not happen show up.
// Absence cannot be waited on, so this is the one place tests sleep.
func quiet() { time.Sleep(100 * time.Millisecond) }

func TestControllerOutcomes(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name string
		// outcome returns what the n-th reconcile (from 1) of the key does.
		outcome   func(n int) (reconcile.Result, error)
		wantCalls int
	}{
		{"success is reconciled once", func(int) (reconcile.Result, error) { return reconcile.Result{}, nil }, 1},
		{"errors are retried until success", func(n int) (reconcile.Result, error) {
			if n <= 3 {
				return reconcile.Result{}, fmt.Errorf("attempt %d: %w", n, errBoom)
			}
			return reconcile.Result{}, nil
		}, 4},
		{"a terminal error is not retried", func(int) (reconcile.Result, error) {
			return reconcile.Result{}, reconcile.Terminal(errBoom)
		}, 1},
		{"a conflict is retried", func(n int) (reconcile.Result, error) {
			if n == 1 {
				return reconcile.Result{}, fmt.Errorf("update status: %w", api.ErrConflict)
			}
			return reconcile.Result{}, nil
		}, 2},
		{"RequeueAfter calls again later", func(n int) (reconcile.Result, error) {
			if n <= 2 {
				return reconcile.Result{RequeueAfter: 10 * time.Millisecond}, nil
			}
			return reconcile.Result{}, nil
		}, 3},
		{"a panic is an error", func(n int) (reconcile.Result, error) {
			if n == 1 {
				panic("bad object")
			}
			return reconcile.Result{}, nil
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Goroutines(t)
			src := reconciletest.NewSource(reconciletest.Config{})
			mustCreate(t, src, tunnel("a", "a.example.com"))
			var c calls
			startController(t, src, 2, reconcile.ReconcilerFunc(func(_ context.Context, r reconcile.Request) (reconcile.Result, error) {
				return tt.outcome(c.inc(r.Key.Name))
			}), nil)
			eventually(t, fmt.Sprintf("%d reconciles", tt.wantCalls), func() bool { return c.get("a") >= tt.wantCalls })
			quiet()
			if got := c.get("a"); got != tt.wantCalls {
				t.Fatalf("reconciles of a: got %d, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestTerminalWrapsAndIsRecognised(t *testing.T) {
	base := fmt.Errorf("spec: %w", api.ErrInvalid)
	tests := []struct {
		name         string
		err          error
		wantTerminal bool
	}{
		{"nil", reconcile.Terminal(nil), false},
		{"plain", base, false},
		{"terminal", reconcile.Terminal(base), true},
		{"wrapped terminal", fmt.Errorf("reconcile: %w", reconcile.Terminal(base)), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := reconcile.IsTerminal(tt.err); got != tt.wantTerminal {
				t.Fatalf("IsTerminal(%v): got %v, want %v", tt.err, got, tt.wantTerminal)
			}
			if tt.err != nil && !errors.Is(tt.err, api.ErrInvalid) {
				t.Fatalf("errors.Is(%v, ErrInvalid): got false, want true through the mark", tt.err)
			}
		})
	}
}

// TestControllerTerminalComesBackOnChange checks that a key given up on
// is reconciled again when its object changes.
func TestControllerTerminalComesBackOnChange(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx := context.Background()
	src := reconciletest.NewSource(reconciletest.Config{})
	mustCreate(t, src, tunnel("a", "a.example.com"))
	var c calls
	startController(t, src, 1, reconcile.ReconcilerFunc(func(_ context.Context, r reconcile.Request) (reconcile.Result, error) {
		c.inc(r.Key.Name)
		return reconcile.Result{}, reconcile.Terminal(errors.New("cannot work"))
	}), nil)
	eventually(t, "first reconcile", func() bool { return c.get("a") == 1 })
	a, _ := src.Get(ctx, "Tunnel", "a")
	a.(*api.Tunnel).Spec.Target = "http://localhost:9999"
	if _, err := src.Update(ctx, a); err != nil {
		t.Fatalf("update a: %v", err)
	}
	eventually(t, "reconcile after the change", func() bool { return c.get("a") == 2 })
}

// TestControllerNeverReconcilesOneKeyTwiceAtOnce runs many workers over a
// few objects that change all the time.
func TestControllerNeverReconcilesOneKeyTwiceAtOnce(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx := context.Background()
	src := reconciletest.NewSource(reconciletest.Config{})
	const objects = 3
	for i := range objects {
		mustCreate(t, src, tunnel(fmt.Sprintf("t%d", i), fmt.Sprintf("t%d.example.com", i)))
	}
	var busy [objects]atomic.Int32
	var overlaps, total atomic.Int64
	startController(t, src, 8, reconcile.ReconcilerFunc(func(_ context.Context, r reconcile.Request) (reconcile.Result, error) {
		var i int
		fmt.Sscanf(r.Key.Name, "t%d", &i)
		if busy[i].Add(1) != 1 {
			overlaps.Add(1)
		}
		for range 3 {
			runtime.Gosched()
		}
		busy[i].Add(-1)
		total.Add(1)
		return reconcile.Result{}, nil
	}), nil)
	for n := range 300 {
		name := fmt.Sprintf("t%d", n%objects)
		o, err := src.Get(ctx, "Tunnel", name)
		if err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		o.GetMeta().Labels = map[string]string{"n": fmt.Sprint(n)}
		if _, err := src.Update(ctx, o); err != nil {
			t.Fatalf("update %s: %v", name, err)
		}
	}
	eventually(t, "reconciles happen", func() bool { return total.Load() >= objects })
	if got := overlaps.Load(); got != 0 {
		t.Fatalf("overlapping reconciles of one key: got %d, want 0", got)
	}
}

// TestControllerMapsOldAndNewState checks that a change of the field a
// map function reads enqueues the keys of both the old and the new value.
func TestControllerMapsOldAndNewState(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx := context.Background()
	src := reconciletest.NewSource(reconciletest.Config{})
	mustCreate(t, src, tunnel("a", "old.example.com"))
	var mu sync.Mutex // guards seen
	var seen []string
	byHost := func(o api.Object) []reconcile.Request {
		return []reconcile.Request{{Key: api.Key{Kind: "Hostname", Name: o.(*api.Tunnel).Spec.Hostname}}}
	}
	startController(t, src, 1, reconcile.ReconcilerFunc(func(_ context.Context, r reconcile.Request) (reconcile.Result, error) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r.Key.Name)
		return reconcile.Result{}, nil
	}), byHost)
	eventually(t, "initial reconcile", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 1 })
	a, _ := src.Get(ctx, "Tunnel", "a")
	a.(*api.Tunnel).Spec.Hostname = "new.example.com"
	if _, err := src.Update(ctx, a); err != nil {
		t.Fatalf("update a: %v", err)
	}
	eventually(t, "both hostnames reconciled", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) >= 3 })
	mu.Lock()
	got := slices.Clone(seen[1:])
	mu.Unlock()
	slices.Sort(got)
	if want := []string{"new.example.com", "old.example.com"}; !slices.Equal(got, want) {
		t.Fatalf("keys enqueued by the hostname change: got %v, want %v", got, want)
	}
}

// TestControllerStopsPromptly checks that Run returns soon after its
// context ends, even with a reconcile in progress that honours ctx and
// keys still queued.
func TestControllerStopsPromptly(t *testing.T) {
	leakcheck.Goroutines(t)
	src := reconciletest.NewSource(reconciletest.Config{})
	for i := range 20 {
		mustCreate(t, src, tunnel(fmt.Sprintf("t%d", i), fmt.Sprintf("t%d.example.com", i)))
	}
	inf := newInformer(src, 0)
	started := make(chan struct{}, 20)
	c := reconcile.NewController(reconcile.ControllerConfig{Reconciler: reconcile.ReconcilerFunc(
		func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
			started <- struct{}{}
			<-ctx.Done()
			return reconcile.Result{}, ctx.Err()
		})})
	c.Watch(inf, nil)
	ctx, cancel := context.WithCancel(context.Background())
	infDone, ctrlDone := make(chan error, 1), make(chan error, 1)
	go func() { infDone <- inf.Run(ctx) }()
	go func() { ctrlDone <- c.Run(ctx) }()
	<-started
	cancel()
	for name, ch := range map[string]chan error{"informer": infDone, "controller": ctrlDone} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("%s Run: got %v, want nil", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s Run: still running 5s after cancel, want it returned", name)
		}
	}
	if got := len(started); got != 0 {
		t.Fatalf("reconciles started after shutdown: got %d, want 0", got)
	}
	if err := c.Run(context.Background()); err == nil {
		t.Fatalf("second Run: got nil, want an error")
	}
}

func TestControllerWithoutReconcilerFails(t *testing.T) {
	c := reconcile.NewController(reconcile.ControllerConfig{})
	if err := c.Run(context.Background()); err == nil {
		t.Fatalf("Run without a reconciler: got nil, want an error")
	}
}

// TestControllerWatchIfPassesOverRejectedChanges checks that WatchIf
// enqueues only the changes keep accepts, and that a change it accepts
// after rejected ones is still reconciled.
func TestControllerWatchIfPassesOverRejectedChanges(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx := context.Background()
	src := reconciletest.NewSource(reconciletest.Config{})
	mustCreate(t, src, tunnel("a", "a.example.com"))
	var n calls
	inf := newInformer(src, 0)
	c := reconcile.NewController(reconcile.ControllerConfig{Name: "test", Workers: 1,
		Reconciler: reconcile.ReconcilerFunc(func(_ context.Context, r reconcile.Request) (reconcile.Result, error) {
			n.inc(r.Key.Name)
			return reconcile.Result{}, nil
		})})
	// Only changes of the hostname count; a change of the target does not.
	c.WatchIf(inf, nil, func(ch reconcile.Change) bool {
		return ch.Old == nil || ch.New == nil ||
			ch.Old.(*api.Tunnel).Spec.Hostname != ch.New.(*api.Tunnel).Spec.Hostname
	})
	runAll(t, inf.Run, c.Run)
	eventually(t, "the initial reconcile", func() bool { return n.get("a") == 1 })

	update := func(change func(*api.Tunnel)) {
		t.Helper()
		obj, err := src.Get(ctx, "Tunnel", "a")
		if err != nil {
			t.Fatal(err)
		}
		change(obj.(*api.Tunnel))
		if _, err := src.Update(ctx, obj); err != nil {
			t.Fatalf("update a: %v", err)
		}
	}
	update(func(tn *api.Tunnel) { tn.Spec.Target = "http://localhost:9999" })
	eventually(t, "the informer to hold the new target", func() bool {
		obj, ok := inf.Get("a")
		return ok && obj.(*api.Tunnel).Spec.Target == "http://localhost:9999"
	})
	quiet()
	if got := n.get("a"); got != 1 {
		t.Fatalf("reconciles after a rejected change: got %d, want 1", got)
	}
	update(func(tn *api.Tunnel) { tn.Spec.Hostname = "b.example.com" })
	eventually(t, "a reconcile for the accepted change", func() bool { return n.get("a") == 2 })
}
