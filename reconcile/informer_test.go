package reconcile_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

var fastBackoff = reconcile.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}

func newInformer(src *reconciletest.Source, resync time.Duration) *reconcile.Informer {
	return reconcile.NewInformer(reconcile.InformerConfig{
		Kind: "Tunnel", Source: src.For("Tunnel"), Resync: resync, Backoff: fastBackoff,
	})
}

func mustCreate(t *testing.T, src *reconciletest.Source, obj api.Object) api.Object {
	t.Helper()
	out, err := src.Create(context.Background(), obj)
	if err != nil {
		t.Fatalf("create %s: %v", obj.GetMeta().Name, err)
	}
	return out
}

func names(objs []api.Object) string {
	var n []string
	for _, o := range objs {
		n = append(n, o.GetMeta().Name)
	}
	return strings.Join(n, ",")
}

func TestInformerSyncsThenFollowsTheWatch(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx := context.Background()
	src := reconciletest.NewSource(reconciletest.Config{})
	for _, n := range []string{"b", "a", "c"} {
		mustCreate(t, src, tunnel(n, n+".example.com"))
	}
	inf := newInformer(src, 0)
	rec := &recorder{}
	inf.AddHandler(rec.handle)
	if inf.HasSynced() {
		t.Fatalf("HasSynced before Run: got true, want false")
	}
	runAll(t, inf.Run)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := inf.WaitForSync(wctx); err != nil {
		t.Fatalf("WaitForSync: %v", err)
	}
	if got := names(inf.List()); got != "a,b,c" {
		t.Fatalf("List after sync: got %s, want a,b,c", got)
	}
	if got := rec.summary(0); !slices.Equal(got, []string{"ADDED a", "ADDED b", "ADDED c"}) {
		t.Fatalf("changes after sync: got %v, want ADDED a, b, c", got)
	}

	b, _ := src.Get(ctx, "Tunnel", "b")
	b.(*api.Tunnel).Spec.Target = "http://localhost:9090"
	if _, err := src.Update(ctx, b); err != nil {
		t.Fatalf("update b: %v", err)
	}
	if _, err := src.Delete(ctx, "Tunnel", "c", ""); err != nil {
		t.Fatalf("delete c: %v", err)
	}
	mustCreate(t, src, tunnel("d", "d.example.com"))
	want := []string{"MODIFIED b", "DELETED c", "ADDED d"}
	eventually(t, "informer saw the update, delete and create", func() bool { return rec.len() >= 6 })
	if got := rec.summary(3); !slices.Equal(got, want) {
		t.Fatalf("changes from the watch: got %v, want %v", got, want)
	}
	if got := names(inf.List()); got != "a,b,d" {
		t.Fatalf("List after the watch: got %s, want a,b,d", got)
	}
	got, ok := inf.Get("b")
	if !ok || got.(*api.Tunnel).Spec.Target != "http://localhost:9090" {
		t.Fatalf("Get(b): got %v %v, want the updated tunnel", got, ok)
	}
	rec.mu.Lock()
	mod := rec.changes[3]
	rec.mu.Unlock()
	if mod.Old == nil || mod.Old.(*api.Tunnel).Spec.Target != "http://localhost:8080" {
		t.Fatalf("MODIFIED b: got old %v, want the state before the update", mod.Old)
	}
	if _, ok := inf.Get("c"); ok {
		t.Fatalf("Get(c) after its deletion: got found, want not found")
	}
}

// TestInformerRelistsAfterCompaction holds the informer inside a handler
// while objects change and the history of those changes is compacted: its
// watch then fails with api.ErrGone, and it must list again and tell the
// handlers about every difference, including the deletion it never saw.
func TestInformerRelistsAfterCompaction(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx := context.Background()
	src := reconciletest.NewSource(reconciletest.Config{})
	for _, n := range []string{"a", "b", "c"} {
		mustCreate(t, src, tunnel(n, n+".example.com"))
	}
	inf := newInformer(src, 0)
	rec := &recorder{}
	blocked, release := make(chan struct{}), make(chan struct{})
	inf.AddHandler(func(c reconcile.Change) {
		rec.handle(c)
		if c.Type == api.Added && c.New.GetMeta().Name == "gate" {
			close(blocked)
			<-release
		}
	})
	runAll(t, inf.Run)
	eventually(t, "synced", inf.HasSynced)
	mustCreate(t, src, tunnel("gate", "gate.example.com"))
	<-blocked

	// The gap: the informer is stuck in its handler and misses all this.
	// Its watch must not read these writes before they are compacted.
	resume := src.HoldWatches()
	if _, err := src.Delete(ctx, "Tunnel", "a", ""); err != nil {
		t.Fatalf("delete a: %v", err)
	}
	b, _ := src.Get(ctx, "Tunnel", "b")
	b.(*api.Tunnel).Spec.Target = "http://localhost:9090"
	if _, err := src.Update(ctx, b); err != nil {
		t.Fatalf("update b: %v", err)
	}
	mustCreate(t, src, tunnel("d", "d.example.com"))
	src.Compact(src.Revision())
	resume()
	mark := rec.len()
	close(release)

	eventually(t, "informer listed again", func() bool { return src.Lists() >= 2 && rec.len() >= mark+3 })
	got := rec.summary(mark)
	slices.Sort(got)
	if want := []string{"ADDED d", "DELETED a", "MODIFIED b"}; !slices.Equal(got, want) {
		t.Fatalf("changes synthesised by the relist: got %v, want %v", got, want)
	}
	if got := names(inf.List()); got != "b,c,d,gate" {
		t.Fatalf("List after the relist: got %s, want b,c,d,gate", got)
	}
	// And it keeps following the watch after the relist.
	mustCreate(t, src, tunnel("e", "e.example.com"))
	eventually(t, "e in the cache", func() bool { _, ok := inf.Get("e"); return ok })
}

// TestInformerResumesABrokenWatch checks that a watch lost for another
// reason than compaction resumes from the last revision seen: nothing is
// missed and nothing is listed again.
func TestInformerResumesABrokenWatch(t *testing.T) {
	leakcheck.Goroutines(t)
	src := reconciletest.NewSource(reconciletest.Config{})
	mustCreate(t, src, tunnel("a", "a.example.com"))
	inf := newInformer(src, 0)
	rec := &recorder{}
	inf.AddHandler(rec.handle)
	runAll(t, inf.Run)
	eventually(t, "synced", inf.HasSynced)
	for i := range 3 {
		src.BreakWatches(api.ErrUnavailable)
		mustCreate(t, src, tunnel(fmt.Sprintf("n%d", i), fmt.Sprintf("n%d.example.com", i)))
	}
	eventually(t, "every object in the cache", func() bool { return len(inf.List()) == 4 })
	if got, want := rec.summary(0), []string{"ADDED a", "ADDED n0", "ADDED n1", "ADDED n2"}; !slices.Equal(got, want) {
		t.Fatalf("changes: got %v, want %v", got, want)
	}
	if got := src.Lists(); got != 1 {
		t.Fatalf("lists: got %d, want 1 (a broken watch resumes, it does not relist)", got)
	}
}

func TestInformerRetriesAFailingList(t *testing.T) {
	leakcheck.Goroutines(t)
	src := reconciletest.NewSource(reconciletest.Config{})
	mustCreate(t, src, tunnel("a", "a.example.com"))
	src.FailLists(api.ErrUnavailable)
	inf := newInformer(src, 0)
	runAll(t, inf.Run)
	eventually(t, "several list attempts", func() bool { return src.Lists() >= 3 })
	if inf.HasSynced() {
		t.Fatalf("HasSynced while every list fails: got true, want false")
	}
	src.FailLists(nil)
	eventually(t, "synced once lists work", inf.HasSynced)
	if got := names(inf.List()); got != "a" {
		t.Fatalf("List: got %s, want a", got)
	}
}

func TestInformerWaitForSyncGivesUpWithContext(t *testing.T) {
	inf := newInformer(reconciletest.NewSource(reconciletest.Config{}), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := inf.WaitForSync(ctx); err == nil {
		t.Fatalf("WaitForSync without Run: got nil, want an error")
	}
}

func TestInformerResyncRenotifies(t *testing.T) {
	leakcheck.Goroutines(t)
	src := reconciletest.NewSource(reconciletest.Config{})
	mustCreate(t, src, tunnel("a", "a.example.com"))
	mustCreate(t, src, tunnel("b", "b.example.com"))
	inf := newInformer(src, 10*time.Millisecond)
	rec := &recorder{}
	inf.AddHandler(rec.handle)
	runAll(t, inf.Run)
	resyncs := func() map[string]int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		n := map[string]int{}
		for _, c := range rec.changes {
			if c.Resync {
				if c.Type != api.Modified || c.Old != c.New {
					t.Errorf("resync change: got type %s, old==new %v, want MODIFIED with old==new", c.Type, c.Old == c.New)
				}
				n[c.New.GetMeta().Name]++
			}
		}
		return n
	}
	eventually(t, "two resyncs of each object", func() bool { n := resyncs(); return n["a"] >= 2 && n["b"] >= 2 })
}

func TestInformerIndex(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx := context.Background()
	src := reconciletest.NewSource(reconciletest.Config{})
	mustCreate(t, src, tunnel("a", "shared.example.com"))
	inf := newInformer(src, 0)
	byHost := func(o api.Object) []string { return []string{o.(*api.Tunnel).Spec.Hostname} }
	inf.AddIndex("hostname", byHost)
	runAll(t, inf.Run)
	eventually(t, "synced", inf.HasSynced)
	mustCreate(t, src, tunnel("b", "shared.example.com"))
	mustCreate(t, src, tunnel("c", "other.example.com"))
	eventually(t, "c cached", func() bool { _, ok := inf.Get("c"); return ok })

	b, _ := src.Get(ctx, "Tunnel", "b")
	b.(*api.Tunnel).Spec.Hostname = "other.example.com"
	if _, err := src.Update(ctx, b); err != nil {
		t.Fatalf("update b: %v", err)
	}
	eventually(t, "b moved", func() bool { return names(inf.ByIndex("hostname", "other.example.com")) == "b,c" })
	if got := names(inf.ByIndex("hostname", "shared.example.com")); got != "a" {
		t.Fatalf("ByIndex(shared): got %s, want a", got)
	}
	if _, err := src.Delete(ctx, "Tunnel", "a", ""); err != nil {
		t.Fatalf("delete a: %v", err)
	}
	eventually(t, "a gone from the index", func() bool { return len(inf.ByIndex("hostname", "shared.example.com")) == 0 })
	// An index added late covers what is already cached.
	inf.AddIndex("agent", func(o api.Object) []string { return []string{o.(*api.Tunnel).Spec.Agent} })
	if got := names(inf.ByIndex("agent", "agent-1")); got != "b,c" {
		t.Fatalf("ByIndex(agent) added after sync: got %s, want b,c", got)
	}
	if got := inf.ByIndex("nope", "x"); len(got) != 0 {
		t.Fatalf("ByIndex of an unknown index: got %d objects, want 0", len(got))
	}
}

func TestInformerLateHandlerGetsTheCache(t *testing.T) {
	leakcheck.Goroutines(t)
	src := reconciletest.NewSource(reconciletest.Config{})
	mustCreate(t, src, tunnel("a", "a.example.com"))
	mustCreate(t, src, tunnel("b", "b.example.com"))
	inf := newInformer(src, 0)
	runAll(t, inf.Run)
	eventually(t, "synced", inf.HasSynced)
	rec := &recorder{}
	inf.AddHandler(rec.handle)
	if got := rec.summary(0); !slices.Equal(got, []string{"ADDED a", "ADDED b"}) {
		t.Fatalf("changes told to a late handler: got %v, want ADDED a, ADDED b", got)
	}
}

func TestInformerRunsOnce(t *testing.T) {
	leakcheck.Goroutines(t)
	inf := newInformer(reconciletest.NewSource(reconciletest.Config{}), 0)
	runAll(t, inf.Run)
	eventually(t, "synced", inf.HasSynced)
	if err := inf.Run(context.Background()); err == nil {
		t.Fatalf("second Run: got nil, want an error")
	}
}
