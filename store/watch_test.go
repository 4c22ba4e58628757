package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// next returns the next event, failing the test if none comes in time or
// the channel closes.
func next(t testing.TB, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatalf("watch channel closed, want an event")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatalf("no event within 10s")
	}
	return Event{}
}

// waitClosed fails the test unless ch closes (after at most the events
// allowed) in time.
func waitClosed(t testing.TB, ch <-chan Event) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return
			}
			t.Fatalf("got event %s %v after the end, want the channel closed", ev.Type, ev.Err)
		case <-timeout:
			t.Fatalf("watch channel still open after 10s, want it closed")
		}
	}
}

func describe(ev Event) string {
	if ev.Type == api.Error {
		return fmt.Sprintf("%s(%v)", ev.Type, ev.Err)
	}
	return fmt.Sprintf("%s %s/%s rv=%s @%d", ev.Type, ev.Object.GetTypeMeta().Kind, ev.Object.GetMeta().Name, ev.Object.GetMeta().ResourceVersion, ev.Revision)
}

func TestWatchDeliversChangesInOrderExactlyOnce(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)

	// Written before the revision watched from: never delivered.
	mustCreate(t, s, newTunnel("before", "before.example.com"))
	a := tunnelOf(t, mustCreate(t, s, newTunnel("a", "a.example.com")))
	from := rvOf(t, a)
	mustCreate(t, s, &api.Agent{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Agent"}, Metadata: api.ObjectMeta{Name: "home"}})
	edit := tunnelOf(t, api.Clone(a))
	edit.Spec.Target = "http://localhost:1"
	a2 := tunnelOf(t, mustUpdate(t, s, edit))
	b := mustCreate(t, s, newTunnel("b", "b.example.com"))
	deleted, err := s.Delete(ctx, "tunnels", "a", DeleteOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// A watch from a's creation replays history; one started after the
	// history (from 0) sees only what follows.
	replay, err := s.Watch(ctx, "tunnels", from)
	if err != nil {
		t.Fatalf("Watch: got error %v, want nil", err)
	}
	live, err := s.Watch(ctx, "Tunnel", 0)
	if err != nil {
		t.Fatalf("Watch from now: got error %v, want nil", err)
	}
	// Written right after Watch returned: a watch from now must not
	// miss it.
	after := mustCreate(t, s, newTunnel("after", "after.example.com"))

	want := []struct {
		typ api.WatchEventType
		obj api.Object
	}{
		{api.Added, a},
		{api.Modified, a2},
		{api.Added, b},
		{api.Deleted, deleted},
		{api.Added, after},
	}
	for i, w := range want {
		ev := next(t, replay)
		if ev.Type != w.typ || jsonOf(t, ev.Object) != jsonOf(t, w.obj) || ev.Revision != rvOf(t, w.obj) {
			t.Fatalf("event %d: got %s %s, want %s %s", i, describe(ev), jsonOf(t, ev.Object), w.typ, jsonOf(t, w.obj))
		}
	}
	if ev := next(t, live); ev.Type != api.Added || ev.Object.GetMeta().Name != "after" {
		t.Fatalf("watch from now: got %s, want Added after", describe(ev))
	}
	// Nothing was repeated: the next event of each watch is the next
	// change.
	end := mustCreate(t, s, newTunnel("end", "end.example.com"))
	for _, ch := range []<-chan Event{replay, live} {
		if ev := next(t, ch); ev.Type != api.Added || ev.Revision != rvOf(t, end) {
			t.Fatalf("after the expected events: got %s, want Added end @%d", describe(ev), rvOf(t, end))
		}
	}
	if tunnelOf(t, deleted).Spec.Target != "http://localhost:1" {
		t.Errorf("deleted event's object: got %s, want the last state", jsonOf(t, deleted))
	}
}

func TestWatchFromCompactedRevisionIsGone(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	first := mustCreate(t, s, newTunnel("a", "a.example.com"))
	mustCreate(t, s, newTunnel("b", "b.example.com"))
	rev := currentRevision(t, s)
	if _, err := s.Client().Compact(ctx, rev); err != nil {
		t.Fatalf("Compact: got error %v, want nil", err)
	}

	ch, err := s.Watch(ctx, "tunnels", rvOf(t, first))
	if err != nil {
		t.Fatalf("Watch: got error %v, want nil", err)
	}
	ev := next(t, ch)
	if ev.Type != api.Error || !errors.Is(ev.Err, api.ErrGone) {
		t.Fatalf("got %s, want an Error event wrapping api.ErrGone", describe(ev))
	}
	waitClosed(t, ch)

	// The informer's answer: list again and watch from there.
	objs, listRev, err := s.List(ctx, "tunnels", api.Selector{})
	if err != nil || len(objs) != 2 {
		t.Fatalf("List: got %d objects (%v), want 2", len(objs), err)
	}
	ch, err = s.Watch(ctx, "tunnels", listRev+1)
	if err != nil {
		t.Fatal(err)
	}
	c := mustCreate(t, s, newTunnel("c", "c.example.com"))
	if ev := next(t, ch); ev.Type != api.Added || ev.Revision != rvOf(t, c) {
		t.Fatalf("after relisting: got %s, want Added c", describe(ev))
	}
}

func TestWatchSkipsUndecodableValues(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	ch, err := s.Watch(ctx, "tunnels", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Put(ctx, "/kakuremichi/tunnels/junk", "{not json"); err != nil {
		t.Fatal(err)
	}
	good := mustCreate(t, s, newTunnel("good", "good.example.com"))
	if ev := next(t, ch); ev.Type != api.Added || ev.Revision != rvOf(t, good) {
		t.Fatalf("got %s, want Added good (the junk skipped)", describe(ev))
	}
	// Deleting the junk still reports which object went.
	if _, err := s.Client().Delete(ctx, "/kakuremichi/tunnels/junk"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch); ev.Type != api.Deleted || ev.Object.GetMeta().Name != "junk" {
		t.Fatalf("got %s, want Deleted junk", describe(ev))
	}
}

func TestWatchEndsWithContextAndStore(t *testing.T) {
	base := runtime.NumGoroutine()
	s := openTestStore(t, Config{})
	ctx := testContext(t)

	// Cancelling the context closes the channel even though nobody
	// reads the pending events.
	wctx, cancel := context.WithCancel(ctx)
	ch, err := s.Watch(wctx, "tunnels", 1)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, newTunnel("a", "a.example.com"))
	mustCreate(t, s, newTunnel("b", "b.example.com"))
	cancel()
	drained := 0
	for range ch {
		drained++
		if drained > 2 {
			t.Fatalf("got more than the 2 events written")
		}
	}

	// Closing the store ends the watches it serves.
	open, err := s.Watch(ctx, "tunnels", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: got error %v, want nil", err)
	}
	waitClosed(t, open)
	if _, err := s.Watch(ctx, "tunnels", 0); !errors.Is(err, api.ErrUnavailable) {
		t.Errorf("Watch after Close: got %v, want api.ErrUnavailable", err)
	}
	waitGoroutines(t, base)
}

// TestWatchOldOnlyWhenAsked: a modification carries the object as it was
// only for a watch that asks for it (WithOld); others are spared decoding
// it.
func TestWatchOldOnlyWhenAsked(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	a := tunnelOf(t, mustCreate(t, s, newTunnel("a", "a.example.com")))
	plain, err := s.Watch(ctx, "tunnels", 0)
	if err != nil {
		t.Fatal(err)
	}
	withOld, err := s.Watch(ctx, "tunnels", 0, WithOld())
	if err != nil {
		t.Fatal(err)
	}
	edit := tunnelOf(t, api.Clone(a))
	edit.Spec.Target = "http://localhost:1"
	mustUpdate(t, s, edit)
	for _, w := range []struct {
		name string
		ch   <-chan Event
		old  bool
	}{{"plain", plain, false}, {"WithOld", withOld, true}} {
		select {
		case ev := <-w.ch:
			if ev.Type != api.Modified || (ev.Old != nil) != w.old {
				t.Fatalf("%s watch: %s with old %v; want Modified with old %v", w.name, ev.Type, ev.Old != nil, w.old)
			}
			if w.old && ev.Old.(*api.Tunnel).Spec.Target != a.Spec.Target {
				t.Fatalf("WithOld: old target %q, want %q", ev.Old.(*api.Tunnel).Spec.Target, a.Spec.Target)
			}
		case <-ctx.Done():
			t.Fatalf("%s watch: no event", w.name)
		}
	}
}
