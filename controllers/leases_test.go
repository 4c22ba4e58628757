package controllers

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"github.com/kakuremichi/kakuremichi/internal/secretsource"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
	"github.com/kakuremichi/kakuremichi/store"
)

// openLeaseStore opens an embedded store for leases and returns it with
// the source the Manager reads them from, as Control wires them.
func openLeaseStore(t *testing.T) (*store.Store, reconcile.ListerWatcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close the store: %v", err)
		}
	})
	return st, secretsource.Leases(st)
}

// TestManagerNodeLivenessFromLeases runs the Manager with the nodes'
// leases in a real store: a node whose status was written once stays
// connected for as long as its lease is renewed (the bridge then writes
// nothing else), goes offline when the renewals stop, and comes back
// with a renewal alone.
func TestManagerNodeLivenessFromLeases(t *testing.T) {
	// First, so that the store is closed before the goroutines are
	// counted: an embedded etcd starts and stops goroutines of its own
	// while it runs.
	leakcheck.Goroutines(t)
	leases, source := openLeaseStore(t)
	ctx := context.Background()
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	runManagerWith(t, Config{Store: src, Leases: source, Workers: 2, Resync: 50 * time.Millisecond, Now: clk.Now, NodeLease: 40 * time.Second})
	connectAgent(t, src, clk, "ag")
	renew := func(at time.Time) {
		t.Helper()
		if err := leases.RenewLease(ctx, "Agent", "ag", at); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // for the watch to bring it
	}
	// Renewed ahead of the clock, which then moves to it: at no moment
	// does the renewal the loop may have seen run out.
	for range 3 {
		renew(clk.Now().Add(20 * time.Second))
		clk.Advance(20 * time.Second)
	}
	// 60 s after the status's heartbeat, whose lease ran out 20 s ago.
	lastRenewalRunsOut(t, src, clk, "ag")
	renew(clk.Now())
	eventually(t, "connected again on a renewal alone", func() bool {
		return condition(getNode(t, src, "Agent", "ag"), api.NodeConnected).Status == api.ConditionTrue
	})
}

// TestNodeLivenessLeaseHandler checks that a lease renewal wakes its node
// only when the node does not count as connected.
func TestNodeLivenessLeaseHandler(t *testing.T) {
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	silent := agentFix("a1", "100.64.0.1")
	silent.connected = api.ConditionFalse
	for _, f := range []nodeFix{silent, gatewayFix("g1", "100.64.0.3")} {
		f.create(t, src, clk)
	}
	infs, _ := startInformers(t, src)
	r := &NodeLivenessReconciler{Agents: infs["Agent"], Gateways: infs["Gateway"]}
	lease := func(name string) api.Object { return store.NewLease(name) }
	tests := []struct {
		name   string
		change reconcile.Change
		want   []string
	}{
		{"an agent not connected is woken", reconcile.Change{Type: api.Modified, Old: lease("agents/a1"), New: lease("agents/a1")}, []string{"Agent/a1"}},
		{"a new lease of such an agent too", reconcile.Change{Type: api.Added, New: lease("agents/a1")}, []string{"Agent/a1"}},
		{"a connected gateway is not", reconcile.Change{Type: api.Modified, Old: lease("gateways/g1"), New: lease("gateways/g1")}, nil},
		{"nor a node that does not exist", reconcile.Change{Type: api.Added, New: lease("agents/nobody")}, nil},
		{"nor a deleted lease", reconcile.Change{Type: api.Deleted, Old: lease("agents/a1")}, nil},
		{"nor a resync", reconcile.Change{Type: api.Modified, Old: lease("agents/a1"), New: lease("agents/a1"), Resync: true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			r.onLeaseChange(func(r reconcile.Request) { got = append(got, r.String()) })(tt.change)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("enqueued: got %v, want %v", got, tt.want)
			}
		})
	}
}
