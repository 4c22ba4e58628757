package controllers

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

// clock is a settable time source shared by the source and the
// controllers under test.
type clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

func tunnel(name, host string) *api.Tunnel {
	return &api.Tunnel{
		Metadata: api.ObjectMeta{Name: name},
		Spec:     api.TunnelSpec{Hostname: host, Agent: "agent-1", Target: "http://localhost:8080"},
	}
}

func ownedBy(refs ...api.OwnerReference) api.ObjectMeta {
	return api.ObjectMeta{OwnerReferences: refs}
}

func refTo(obj api.Object) api.OwnerReference {
	return api.OwnerReference{APIVersion: api.APIVersion, Kind: obj.GetTypeMeta().Kind,
		Name: obj.GetMeta().Name, UID: obj.GetMeta().UID}
}

func mustCreate(t testing.TB, src *reconciletest.Source, obj api.Object) api.Object {
	t.Helper()
	out, err := src.Create(context.Background(), obj)
	if err != nil {
		t.Fatalf("create %s %s: %v", obj.GetTypeMeta().Kind, obj.GetMeta().Name, err)
	}
	return out
}

func mustDelete(t *testing.T, src *reconciletest.Source, kind, name string) {
	t.Helper()
	if _, err := src.Delete(context.Background(), kind, name, ""); err != nil {
		t.Fatalf("delete %s %s: %v", kind, name, err)
	}
}

func getTunnel(t *testing.T, src *reconciletest.Source, name string) *api.Tunnel {
	t.Helper()
	obj, err := src.Get(context.Background(), "Tunnel", name)
	if err != nil {
		t.Fatalf("get tunnel %s: %v", name, err)
	}
	return obj.(*api.Tunnel)
}

func exists(t *testing.T, src *reconciletest.Source, kind, name string) bool {
	t.Helper()
	_, err := src.Get(context.Background(), kind, name)
	return err == nil
}

// startInformers runs a synced informer for every kind, with the indexes
// New sets up, and returns them and a function that stops them (also
// called when the test ends).
func startInformers(t testing.TB, src *reconciletest.Source) (map[string]*reconcile.Informer, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	infs := map[string]*reconcile.Informer{}
	var wg sync.WaitGroup
	for _, k := range api.Kinds() {
		inf := reconcile.NewInformer(reconcile.InformerConfig{Kind: k.Kind, Source: src.For(k.Kind)})
		addIndexes(inf)
		infs[k.Kind] = inf
		wg.Go(func() { _ = inf.Run(ctx) })
	}
	stop := func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	for _, inf := range infs {
		if err := inf.WaitForSync(wctx); err != nil {
			t.Fatalf("informers: %v", err)
		}
	}
	return infs, stop
}

// eventually polls cond until it holds or 10 seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still false after 60s, want true", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// condition returns the condition of a type, or a zero one.
func condition(obj api.Object, typ string) api.Condition {
	if c := api.FindCondition(obj.GetStatus().Conditions, typ); c != nil {
		return *c
	}
	return api.Condition{}
}
