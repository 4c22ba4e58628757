package controllers

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

// runManager runs a Manager over src until the test ends and checks that
// Run returns nil. Node leases last a day, so that tests moving the clock
// by minutes keep their fleet connected.
func runManager(t *testing.T, src Store, clk *clock) {
	t.Helper()
	runManagerWith(t, Config{Store: src, Workers: 2, Resync: 50 * time.Millisecond, Now: clk.Now, NodeLease: 24 * time.Hour})
}

// runManagerWith runs a Manager with cfg (its Logger discarding) until
// the test ends and checks that Run returns nil.
func runManagerWith(t *testing.T, cfg Config) {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	m := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Manager.Run: got %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Manager.Run: still running 10s after cancel, want it returned")
		}
	})
}

func TestManagerHostnameOwnershipEndToEnd(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx := context.Background()
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	runManager(t, src, clk)
	healthyFleet(t, src, clk, "older", "newer", "mover")

	mustCreate(t, src, tunnel("older", "shared.example.com"))
	tConflict := clk.Advance(time.Minute)
	mustCreate(t, src, tunnel("newer", "shared.example.com"))

	eventually(t, "newer conflicts and older is ready", func() bool {
		n, o := getTunnel(t, src, "newer"), getTunnel(t, src, "older")
		return condition(n, api.TunnelHostnameAvailable).Reason == api.ReasonHostnameConflict &&
			condition(n, api.ConditionReady).Reason == api.ReasonHostnameConflict &&
			condition(o, api.ConditionReady).Status == api.ConditionTrue
	})
	n := getTunnel(t, src, "newer")
	if got := condition(n, api.TunnelHostnameAvailable).LastTransitionTime; !got.Equal(tConflict) {
		t.Fatalf("HostnameAvailable lastTransitionTime: got %v, want %v", got, tConflict)
	}

	// A spec change without a flip: observedGeneration moves, the
	// transition time does not.
	clk.Advance(time.Minute)
	n.Spec.Target = "http://localhost:9090"
	if _, err := src.Update(ctx, n); err != nil {
		t.Fatalf("update newer: %v", err)
	}
	eventually(t, "newer observed generation 2", func() bool {
		return getTunnel(t, src, "newer").Status.ObservedGeneration == 2
	})
	n = getTunnel(t, src, "newer")
	if got := condition(n, api.TunnelHostnameAvailable); got.LastTransitionTime != tConflict || got.ObservedGeneration != 2 {
		t.Fatalf("HostnameAvailable after a spec change: got lastTransitionTime %v gen %d, want %v gen 2",
			got.LastTransitionTime, got.ObservedGeneration, tConflict)
	}

	// The owner goes: the next oldest takes over, and the time moves.
	tFlip := clk.Advance(time.Minute)
	mustDelete(t, src, "Tunnel", "older")
	eventually(t, "newer ready once older is gone", func() bool {
		return condition(getTunnel(t, src, "newer"), api.ConditionReady).Status == api.ConditionTrue
	})
	n = getTunnel(t, src, "newer")
	if got := condition(n, api.TunnelHostnameAvailable); got.Reason != api.ReasonHostnameClaimed || !got.LastTransitionTime.Equal(tFlip) {
		t.Fatalf("HostnameAvailable after the flip: got %s at %v, want %s at %v", got.Reason, got.LastTransitionTime, api.ReasonHostnameClaimed, tFlip)
	}

	// Moving onto a claimed hostname conflicts; moving away frees it.
	clk.Advance(time.Minute)
	mustCreate(t, src, tunnel("mover", "elsewhere.example.com"))
	eventually(t, "mover ready", func() bool {
		return condition(getTunnel(t, src, "mover"), api.ConditionReady).Status == api.ConditionTrue
	})
	m := getTunnel(t, src, "mover")
	m.Spec.Hostname = "shared.example.com"
	if _, err := src.Update(ctx, m); err != nil {
		t.Fatalf("move: %v", err)
	}
	eventually(t, "mover conflicts with newer", func() bool {
		return condition(getTunnel(t, src, "mover"), api.ConditionReady).Reason == api.ReasonHostnameConflict
	})
	if got := condition(getTunnel(t, src, "newer"), api.ConditionReady).Status; got != api.ConditionTrue {
		t.Fatalf("newer Ready after an even newer tunnel moved in: got %s, want True", got)
	}
}

func TestManagerGarbageCollectsEndToEnd(t *testing.T) {
	leakcheck.Goroutines(t)
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	runManager(t, src, clk)

	v1 := mustCreate(t, src, tunnel("owner", "o.example.com"))
	other := mustCreate(t, src, tunnel("other", "other.example.com"))
	depA := mustCreate(t, src, agent("dep-a", ownedBy(refTo(v1))))
	// dep-a owns a gateway in turn: collection cascades.
	mustCreate(t, src, &api.Gateway{Metadata: ownedByNamed("dep-a-child", refTo(depA))})
	mustCreate(t, src, &api.Gateway{Metadata: api.ObjectMeta{Name: "unowned"}})
	mustCreate(t, src, agent("owned-by-other", ownedBy(refTo(other))))

	mustDelete(t, src, "Tunnel", "owner")
	eventually(t, "dep-a and its child collected", func() bool {
		return !exists(t, src, "Agent", "dep-a") && !exists(t, src, "Gateway", "dep-a-child")
	})

	// A new incarnation of the owner does not adopt the old one's
	// dependents.
	v2 := mustCreate(t, src, tunnel("owner", "o.example.com"))
	mustCreate(t, src, agent("dep-old-uid", ownedBy(refTo(v1))))
	mustCreate(t, src, agent("dep-v2", ownedBy(refTo(v2))))
	eventually(t, "the dependent of the old incarnation collected", func() bool {
		return !exists(t, src, "Agent", "dep-old-uid")
	})

	// Deleted and re-created under the same name: dep-v2's owner is gone.
	mustDelete(t, src, "Tunnel", "owner")
	mustCreate(t, src, tunnel("owner", "o.example.com"))
	eventually(t, "dep-v2 collected", func() bool { return !exists(t, src, "Agent", "dep-v2") })

	for _, k := range []struct{ kind, name string }{
		{"Gateway", "unowned"}, {"Agent", "owned-by-other"}, {"Tunnel", "other"}, {"Tunnel", "owner"},
	} {
		if !exists(t, src, k.kind, k.name) {
			t.Fatalf("%s %s: got deleted, want kept", k.kind, k.name)
		}
	}
}

func TestManagerWithoutStoreFails(t *testing.T) {
	if err := New(Config{}).Run(context.Background()); err == nil {
		t.Fatalf("Run without a store: got nil, want an error")
	}
}
