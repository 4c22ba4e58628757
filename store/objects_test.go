package store

import (
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func rvOf(t testing.TB, obj api.Object) int64 {
	t.Helper()
	n, err := strconv.ParseInt(obj.GetMeta().ResourceVersion, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: got error %v, want a number", obj.GetMeta().ResourceVersion, err)
	}
	return n
}

func jsonOf(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return string(b)
}

func currentRevision(t testing.TB, s *Store) int64 {
	t.Helper()
	rev, err := s.Revision(testContext(t))
	if err != nil {
		t.Fatalf("Revision: got error %v, want nil", err)
	}
	return rev
}

func TestCRUDRoundTrip(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)

	in := newTunnel("web", "Web.Example.com.")
	in.Metadata.Labels = map[string]string{"env": "prod"}
	// Status is the controllers' to write: a create must not store it.
	in.Status.Conditions = []api.Condition{{Type: api.ConditionReady, Status: api.ConditionTrue, Reason: "Ready"}}
	before := time.Now().UTC().Truncate(time.Second)
	created := tunnelOf(t, mustCreate(t, s, in))

	if in.Metadata.UID != "" || in.Spec.Enabled != nil {
		t.Errorf("Create changed its argument: uid %q, enabled %v", in.Metadata.UID, in.Spec.Enabled)
	}
	if !uuidRE.MatchString(created.Metadata.UID) {
		t.Errorf("uid: got %q, want a random UUID", created.Metadata.UID)
	}
	if ct := created.Metadata.CreationTimestamp; ct.Before(before) || ct.After(time.Now()) || ct.Nanosecond() != 0 || ct.Location() != time.UTC {
		t.Errorf("creationTimestamp: got %v, want now in UTC at second precision", ct)
	}
	if created.Metadata.Generation != 1 {
		t.Errorf("generation: got %d, want 1", created.Metadata.Generation)
	}
	if got, want := rvOf(t, created), currentRevision(t, s); got != want {
		t.Errorf("resourceVersion: got %d, want the store revision %d", got, want)
	}
	if created.Spec.Hostname != "web.example.com" || !created.Spec.IsEnabled() {
		t.Errorf("defaults: got hostname %q enabled %v, want web.example.com and true", created.Spec.Hostname, created.Spec.IsEnabled())
	}
	if len(created.Status.Conditions) != 0 {
		t.Errorf("status after create: got %v, want none", created.Status.Conditions)
	}

	// Every name api.LookupKind accepts reads the same object.
	for _, kind := range []string{"Tunnel", "tunnels", "tunnel", "tun"} {
		got, err := s.Get(ctx, kind, "web")
		if err != nil {
			t.Fatalf("Get(%q): got error %v, want nil", kind, err)
		}
		if g, w := jsonOf(t, got), jsonOf(t, created); g != w {
			t.Errorf("Get(%q): got %s, want %s", kind, g, w)
		}
	}

	// resourceVersion is derived from etcd, never stored in the value.
	raw, err := s.Client().Get(ctx, "/kakuremichi/tunnels/web")
	if err != nil || len(raw.Kvs) != 1 {
		t.Fatalf("raw get: got %v, %v; want one key", raw, err)
	}
	if strings.Contains(string(raw.Kvs[0].Value), "resourceVersion") {
		t.Errorf("stored value: got %s, want no resourceVersion in it", raw.Kvs[0].Value)
	}

	upd := tunnelOf(t, api.Clone[api.Object](created))
	upd.Spec.Target = "http://localhost:9090"
	updated := tunnelOf(t, mustUpdate(t, s, upd))
	if updated.Spec.Target != "http://localhost:9090" || updated.Metadata.Generation != 2 || rvOf(t, updated) <= rvOf(t, created) {
		t.Errorf("update: got target %q generation %d rv %d, want http://localhost:9090, 2, > %d",
			updated.Spec.Target, updated.Metadata.Generation, rvOf(t, updated), rvOf(t, created))
	}
	if updated.Metadata.UID != created.Metadata.UID || !updated.Metadata.CreationTimestamp.Equal(created.Metadata.CreationTimestamp) {
		t.Errorf("update changed system fields: uid %q created %v", updated.Metadata.UID, updated.Metadata.CreationTimestamp)
	}

	objs, rev, err := s.List(ctx, "tunnels", api.Selector{})
	if err != nil || len(objs) != 1 || jsonOf(t, objs[0]) != jsonOf(t, updated) || rev != rvOf(t, updated) {
		t.Errorf("List: got %d objects, rev %d, err %v; want the updated object at rev %d", len(objs), rev, err, rvOf(t, updated))
	}

	deleted, err := s.Delete(ctx, "tunnels", "web", DeleteOptions{})
	if err != nil {
		t.Fatalf("Delete: got error %v, want nil", err)
	}
	if got, want := rvOf(t, deleted), currentRevision(t, s); got != want {
		t.Errorf("deleted object's resourceVersion: got %d, want the deletion's revision %d", got, want)
	}
	if tunnelOf(t, deleted).Spec.Target != "http://localhost:9090" {
		t.Errorf("deleted object: got %s, want its last state", jsonOf(t, deleted))
	}
	if _, err := s.Get(ctx, "tunnels", "web"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Get after Delete: got %v, want api.ErrNotFound", err)
	}
	if _, err := s.Delete(ctx, "tunnels", "web", DeleteOptions{}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("second Delete: got %v, want api.ErrNotFound", err)
	}
}

func mustUpdate(t testing.TB, s *Store, obj api.Object) api.Object {
	t.Helper()
	out, err := s.Update(testContext(t), obj, WriteOptions{})
	if err != nil {
		t.Fatalf("Update %s: got error %v, want nil", obj.GetMeta().Name, err)
	}
	return out
}

func TestRequestErrors(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	existing := mustCreate(t, s, newTunnel("taken", "taken.example.com"))

	withRV := newTunnel("fresh", "fresh.example.com")
	withRV.Metadata.ResourceVersion = "5"
	invalid := newTunnel("bad", "not a hostname")
	wrongKind := newTunnel("odd", "odd.example.com")
	wrongKind.Kind = "Gateway"
	missing := newTunnel("missing", "missing.example.com")
	badRV := tunnelOf(t, api.Clone(existing))
	badRV.Metadata.ResourceVersion = "abc"
	otherUID := tunnelOf(t, api.Clone(existing))
	otherUID.Metadata.UID = "00000000-0000-4000-8000-000000000000"

	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"create taken name", func() error { _, err := s.Create(ctx, newTunnel("taken", "x.example.com"), WriteOptions{}); return err }, api.ErrAlreadyExists},
		{"create with resourceVersion", func() error { _, err := s.Create(ctx, withRV, WriteOptions{}); return err }, api.ErrBadRequest},
		{"create invalid", func() error { _, err := s.Create(ctx, invalid, WriteOptions{}); return err }, api.ErrInvalid},
		{"create nil", func() error { _, err := s.Create(ctx, nil, WriteOptions{}); return err }, api.ErrBadRequest},
		{"create kind mismatch", func() error { _, err := s.Create(ctx, wrongKind, WriteOptions{}); return err }, api.ErrBadRequest},
		{"get unknown kind", func() error { _, err := s.Get(ctx, "widgets", "x"); return err }, api.ErrBadRequest},
		{"get bad name", func() error { _, err := s.Get(ctx, "tunnels", "a/b"); return err }, api.ErrBadRequest},
		{"get missing", func() error { _, err := s.Get(ctx, "tunnels", "missing"); return err }, api.ErrNotFound},
		{"list unknown kind", func() error { _, _, err := s.List(ctx, "widgets", api.Selector{}); return err }, api.ErrBadRequest},
		{"watch unknown kind", func() error { _, err := s.Watch(ctx, "widgets", 0); return err }, api.ErrBadRequest},
		{"update missing", func() error { _, err := s.Update(ctx, missing, WriteOptions{}); return err }, api.ErrNotFound},
		{"update invalid", func() error { _, err := s.Update(ctx, invalid, WriteOptions{}); return err }, api.ErrInvalid},
		{"update bad resourceVersion", func() error { _, err := s.Update(ctx, badRV, WriteOptions{}); return err }, api.ErrBadRequest},
		{"update other uid", func() error { _, err := s.Update(ctx, otherUID, WriteOptions{}); return err }, api.ErrInvalid},
		{"update status missing", func() error { _, err := s.UpdateStatus(ctx, missing, WriteOptions{}); return err }, api.ErrNotFound},
		{"update status other uid", func() error { _, err := s.UpdateStatus(ctx, otherUID, WriteOptions{}); return err }, api.ErrInvalid},
		{"delete missing", func() error { _, err := s.Delete(ctx, "tunnels", "missing", DeleteOptions{}); return err }, api.ErrNotFound},
		{"delete unknown kind", func() error { _, err := s.Delete(ctx, "widgets", "x", DeleteOptions{}); return err }, api.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want an error wrapping %v", err, tt.want)
			}
		})
	}

	// Validation errors come back as the api.ErrorList they are, so the
	// API server can name every failing field.
	_, err := s.Create(ctx, invalid, WriteOptions{})
	var list api.ErrorList
	if !errors.As(err, &list) || len(list) != 1 || list[0].Field != "spec.hostname" {
		t.Errorf("create invalid: got %#v, want an api.ErrorList naming spec.hostname", err)
	}
	if got, err := s.Get(ctx, "tunnels", "taken"); err != nil || jsonOf(t, got) != jsonOf(t, existing) {
		t.Errorf("failed writes changed the stored object: got %v, %v", got, err)
	}
}

func TestGenerationMovesOnlyWithSpec(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	tests := []struct {
		name     string
		change   func(*api.Tunnel)
		status   bool // written with UpdateStatus
		wantGen  int64
		wantSame bool // nothing changed: no write, same resourceVersion
	}{
		{"nothing", func(*api.Tunnel) {}, false, 1, true},
		{"spec defaulted to what is stored", func(tun *api.Tunnel) { tun.Spec.Enabled = nil }, false, 1, true},
		{"label", func(tun *api.Tunnel) { tun.Metadata.Labels = map[string]string{"team": "a"} }, false, 1, false},
		{"annotation", func(tun *api.Tunnel) { tun.Metadata.Annotations = map[string]string{"note": "x"} }, false, 1, false},
		{"finalizer", func(tun *api.Tunnel) { tun.Metadata.Finalizers = []string{"kakuremichi.io/test"} }, false, 1, false},
		{"generation sent by the client is ignored", func(tun *api.Tunnel) { tun.Metadata.Generation = 42 }, false, 1, true},
		{"spec", func(tun *api.Tunnel) { tun.Spec.Target, tun.Spec.PublicPort = "tcp://db:5432", 5432 }, false, 2, false},
		{"spec enabled", func(tun *api.Tunnel) { f := false; tun.Spec.Enabled = &f }, false, 2, false},
		{"status", func(tun *api.Tunnel) { tun.Status.ObservedGeneration = 2 }, true, 1, false},
		{"same status", func(tun *api.Tunnel) {}, true, 1, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "t" + strconv.Itoa(i)
			base := tunnelOf(t, mustCreate(t, s, newTunnel(name, name+".example.com")))
			if tt.status {
				// Give the object a status first, so "same status"
				// has something to compare with.
				base.Status.ObservedGeneration = 1
				out, err := s.UpdateStatus(ctx, base, WriteOptions{})
				if err != nil {
					t.Fatalf("UpdateStatus: got error %v, want nil", err)
				}
				base = tunnelOf(t, out)
			}
			revBefore := currentRevision(t, s)
			obj := tunnelOf(t, api.Clone(base))
			tt.change(obj)
			var out api.Object
			var err error
			if tt.status {
				out, err = s.UpdateStatus(ctx, obj, WriteOptions{})
			} else {
				out, err = s.Update(ctx, obj, WriteOptions{})
			}
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			if got := out.GetMeta().Generation; got != tt.wantGen {
				t.Errorf("generation: got %d, want %d", got, tt.wantGen)
			}
			same := out.GetMeta().ResourceVersion == base.Metadata.ResourceVersion
			if same != tt.wantSame {
				t.Errorf("resourceVersion unchanged: got %v, want %v", same, tt.wantSame)
			}
			if wrote := currentRevision(t, s) != revBefore; wrote == tt.wantSame {
				t.Errorf("wrote to etcd: got %v, want %v", wrote, !tt.wantSame)
			}
			stored, err := s.Get(ctx, "tunnels", name)
			if err != nil || jsonOf(t, stored) != jsonOf(t, out) {
				t.Errorf("stored: got %s (%v), want what the write returned %s", jsonOf(t, stored), err, jsonOf(t, out))
			}
		})
	}
}

func TestSpecAndStatusNeverClobberEachOther(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	created := tunnelOf(t, mustCreate(t, s, newTunnel("web", "web.example.com")))

	// A person edits spec from the object they read; meanwhile a
	// controller writes status. The person's update carries no
	// resourceVersion, so it applies, and must keep the status.
	person := tunnelOf(t, api.Clone(created))
	person.Metadata.ResourceVersion = ""
	person.Spec.Target = "http://localhost:9000"
	person.Status = api.TunnelStatus{} // a client never sends status back

	controller := tunnelOf(t, api.Clone(created))
	controller.Status.ObservedGeneration = 1
	controller.Status.Conditions = []api.Condition{{Type: api.ConditionReady, Status: api.ConditionTrue, Reason: "Ready",
		LastTransitionTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	if _, err := s.UpdateStatus(ctx, controller, WriteOptions{}); err != nil {
		t.Fatalf("UpdateStatus: got error %v, want nil", err)
	}
	afterSpec := tunnelOf(t, mustUpdate(t, s, person))
	if afterSpec.Spec.Target != "http://localhost:9000" {
		t.Errorf("spec: got target %q, want http://localhost:9000", afterSpec.Spec.Target)
	}
	if got, want := jsonOf(t, afterSpec.Status), jsonOf(t, controller.Status); got != want {
		t.Errorf("status after a spec update: got %s, want %s", got, want)
	}

	// The reverse: a controller holding the old spec writes status
	// without a precondition; the person's spec must survive.
	stale := tunnelOf(t, api.Clone(created))
	stale.Metadata.ResourceVersion = ""
	stale.Status.ObservedGeneration = 2
	afterStatus, err := s.UpdateStatus(ctx, stale, WriteOptions{})
	if err != nil {
		t.Fatalf("UpdateStatus: got error %v, want nil", err)
	}
	got := tunnelOf(t, afterStatus)
	if got.Spec.Target != "http://localhost:9000" || got.Metadata.Generation != 2 {
		t.Errorf("after a status update: got target %q generation %d, want http://localhost:9000 and 2", got.Spec.Target, got.Metadata.Generation)
	}
	if got.Status.ObservedGeneration != 2 || len(got.Status.Conditions) != 0 {
		t.Errorf("status: got %s, want exactly the status written", jsonOf(t, got.Status))
	}
}

func TestConcurrentUpdatesExactlyOneWins(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	created := tunnelOf(t, mustCreate(t, s, newTunnel("web", "web.example.com")))

	for _, status := range []bool{false, true} {
		base, err := s.Get(ctx, "tunnels", "web")
		if err != nil {
			t.Fatal(err)
		}
		const writers = 8
		var wg sync.WaitGroup
		errs := make([]error, writers)
		start := make(chan struct{})
		for i := range writers {
			obj := tunnelOf(t, api.Clone(base))
			if status {
				obj.Status.ObservedGeneration = int64(i + 1)
			} else {
				obj.Spec.Target = "http://localhost:" + strconv.Itoa(9000+i)
			}
			wg.Go(func() {
				<-start
				if status {
					_, errs[i] = s.UpdateStatus(ctx, obj, WriteOptions{})
				} else {
					_, errs[i] = s.Update(ctx, obj, WriteOptions{})
				}
			})
		}
		close(start)
		wg.Wait()
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, api.ErrConflict):
				t.Errorf("status=%v writer %d: got %v, want nil or api.ErrConflict", status, i, err)
			}
		}
		if wins != 1 {
			t.Errorf("status=%v: got %d successful writes, want exactly 1", status, wins)
		}
	}

	// The same from a stale read, one after the other.
	stale := tunnelOf(t, api.Clone(created))
	stale.Spec.Target = "http://localhost:1"
	if _, err := s.Update(ctx, stale, WriteOptions{}); !errors.Is(err, api.ErrConflict) {
		t.Errorf("update from a stale resourceVersion: got %v, want api.ErrConflict", err)
	}
	if _, err := s.UpdateStatus(ctx, stale, WriteOptions{}); !errors.Is(err, api.ErrConflict) {
		t.Errorf("status update from a stale resourceVersion: got %v, want api.ErrConflict", err)
	}
	if _, err := s.Delete(ctx, "tunnels", "web", DeleteOptions{ResourceVersion: created.Metadata.ResourceVersion}); !errors.Is(err, api.ErrConflict) {
		t.Errorf("delete with a stale resourceVersion: got %v, want api.ErrConflict", err)
	}
	cur, err := s.Get(ctx, "tunnels", "web")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "tunnels", "web", DeleteOptions{ResourceVersion: cur.GetMeta().ResourceVersion}); err != nil {
		t.Errorf("delete with the current resourceVersion: got %v, want nil", err)
	}
}

func TestFinalizersAndDeletionTimestamp(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	in := newTunnel("web", "web.example.com")
	in.Metadata.Finalizers = []string{"kakuremichi.io/routes", "kakuremichi.io/certs"}
	mustCreate(t, s, in)

	marked, err := s.Delete(ctx, "tunnels", "web", DeleteOptions{})
	if err != nil {
		t.Fatalf("Delete with finalizers: got error %v, want nil", err)
	}
	ts := marked.GetMeta().DeletionTimestamp
	if ts == nil || ts.Location() != time.UTC || ts.Nanosecond() != 0 {
		t.Fatalf("deletionTimestamp: got %v, want now in UTC", ts)
	}
	if stored, err := s.Get(ctx, "tunnels", "web"); err != nil || jsonOf(t, stored) != jsonOf(t, marked) {
		t.Fatalf("Get after Delete with finalizers: got %v (%v), want the marked object", stored, err)
	}

	// Deleting again changes nothing, not even the timestamp.
	rev := currentRevision(t, s)
	again, err := s.Delete(ctx, "tunnels", "web", DeleteOptions{})
	if err != nil || jsonOf(t, again) != jsonOf(t, marked) || currentRevision(t, s) != rev {
		t.Errorf("second Delete: got %s (%v), want the same object and no write", jsonOf(t, again), err)
	}

	// An update cannot clear the deletionTimestamp; removing one
	// finalizer keeps the object.
	upd := tunnelOf(t, api.Clone(again))
	upd.Metadata.DeletionTimestamp = nil
	upd.Metadata.Finalizers = []string{"kakuremichi.io/certs"}
	out := tunnelOf(t, mustUpdate(t, s, upd))
	if out.Metadata.DeletionTimestamp == nil || !out.Metadata.DeletionTimestamp.Equal(*ts) {
		t.Errorf("deletionTimestamp after update: got %v, want %v", out.Metadata.DeletionTimestamp, ts)
	}

	// Removing the last one deletes it and returns its last state.
	last := tunnelOf(t, api.Clone[api.Object](out))
	last.Metadata.Finalizers = nil
	gone, err := s.Update(ctx, last, WriteOptions{})
	if err != nil {
		t.Fatalf("Update removing the last finalizer: got error %v, want nil", err)
	}
	if gone.GetMeta().DeletionTimestamp == nil || len(gone.GetMeta().Finalizers) != 0 || rvOf(t, gone) != currentRevision(t, s) {
		t.Errorf("returned: got %s, want the last state at the deletion's revision", jsonOf(t, gone))
	}
	if _, err := s.Get(ctx, "tunnels", "web"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Get after the last finalizer went: got %v, want api.ErrNotFound", err)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	plain := mustCreate(t, s, newTunnel("plain", "plain.example.com"))
	fin := newTunnel("held", "held.example.com")
	fin.Metadata.Finalizers = []string{"kakuremichi.io/x"}
	held := mustCreate(t, s, fin)
	dry := WriteOptions{DryRun: true}
	rev := currentRevision(t, s)

	created, err := s.Create(ctx, newTunnel("new", "new.example.com"), dry)
	if err != nil || !uuidRE.MatchString(created.GetMeta().UID) || created.GetMeta().Generation != 1 || created.GetMeta().ResourceVersion != "" {
		t.Errorf("dry-run create: got %s (%v), want the object that would be stored, without resourceVersion", jsonOf(t, created), err)
	}
	if _, err := s.Create(ctx, newTunnel("plain", "plain.example.com"), dry); !errors.Is(err, api.ErrAlreadyExists) {
		t.Errorf("dry-run create of a taken name: got %v, want api.ErrAlreadyExists", err)
	}
	if _, err := s.Create(ctx, newTunnel("bad", "bad"), dry); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("dry-run create of an invalid object: got %v, want api.ErrInvalid", err)
	}

	upd := tunnelOf(t, api.Clone(plain))
	upd.Spec.Target = "http://localhost:1234"
	updated, err := s.Update(ctx, upd, dry)
	if err != nil || tunnelOf(t, updated).Spec.Target != "http://localhost:1234" || updated.GetMeta().Generation != 2 {
		t.Errorf("dry-run update: got %s (%v), want the new spec at generation 2", jsonOf(t, updated), err)
	}
	st := tunnelOf(t, api.Clone(plain))
	st.Status.ObservedGeneration = 7
	if out, err := s.UpdateStatus(ctx, st, dry); err != nil || tunnelOf(t, out).Status.ObservedGeneration != 7 {
		t.Errorf("dry-run status update: got %s (%v), want the new status", jsonOf(t, out), err)
	}
	if out, err := s.Delete(ctx, "tunnels", "plain", DeleteOptions{DryRun: true}); err != nil || out.GetMeta().Name != "plain" {
		t.Errorf("dry-run delete: got %v (%v), want the object", out, err)
	}
	if out, err := s.Delete(ctx, "tunnels", "held", DeleteOptions{DryRun: true}); err != nil || out.GetMeta().DeletionTimestamp == nil {
		t.Errorf("dry-run delete with finalizers: got %v (%v), want the object with a deletionTimestamp", out, err)
	}
	lastHeld := tunnelOf(t, api.Clone(held))
	lastHeld.Metadata.Finalizers = nil
	if _, err := s.Update(ctx, lastHeld, dry); err != nil {
		t.Errorf("dry-run update removing finalizers: got %v, want nil", err)
	}

	if got := currentRevision(t, s); got != rev {
		t.Errorf("store revision after dry runs: got %d, want %d (nothing written)", got, rev)
	}
	objs, _, err := s.List(ctx, "tunnels", api.Selector{})
	if err != nil || len(objs) != 2 || jsonOf(t, objs) != jsonOf(t, []api.Object{held, plain}) {
		t.Errorf("objects after dry runs: got %s (%v), want them unchanged", jsonOf(t, objs), err)
	}
}

func TestListSelectorSortedAndPaged(t *testing.T) {
	s := openTestStore(t, Config{})
	s.pageSize = 2 // several pages from a handful of objects
	ctx := testContext(t)
	envs := map[string]string{"e": "prod", "a": "dev", "g": "prod", "c": "", "b": "prod", "f": "dev", "d": "prod"}
	for name, env := range envs {
		tun := newTunnel(name, name+".example.com")
		if env != "" {
			tun.Metadata.Labels = map[string]string{"env": env}
		}
		mustCreate(t, s, tun)
	}
	// Neighbouring keys that must not show up in a list of tunnels.
	mustCreate(t, s, &api.Gateway{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Gateway"}, Metadata: api.ObjectMeta{Name: "a"}})
	if _, err := s.Client().Put(ctx, "/kakuremichi/tunnelsx/a", "{}"); err != nil {
		t.Fatal(err)
	}
	want := currentRevision(t, s)

	tests := []struct {
		selector string
		want     string
	}{
		{"", "a,b,c,d,e,f,g"},
		{"env=prod", "b,d,e,g"},
		{"env!=prod", "a,c,f"},
		{"env", "a,b,d,e,f,g"},
		{"!env", "c"},
		{"env=staging", ""},
	}
	for _, tt := range tests {
		t.Run(tt.selector, func(t *testing.T) {
			sel, err := api.ParseSelector(tt.selector)
			if err != nil {
				t.Fatal(err)
			}
			objs, rev, err := s.List(ctx, "tunnels", sel)
			if err != nil {
				t.Fatalf("List: got error %v, want nil", err)
			}
			var names []string
			for _, o := range objs {
				names = append(names, o.GetMeta().Name)
			}
			if got := strings.Join(names, ","); got != tt.want {
				t.Errorf("names: got %q, want %q", got, tt.want)
			}
			if rev != want {
				t.Errorf("revision: got %d, want %d", rev, want)
			}
		})
	}
	if objs, _, err := s.List(ctx, "gateways", api.Selector{}); err != nil || len(objs) != 1 {
		t.Errorf("List gateways: got %d objects (%v), want 1", len(objs), err)
	}
	if objs, _, err := s.List(ctx, "agents", api.Selector{}); err != nil || objs == nil || len(objs) != 0 {
		t.Errorf("List agents: got %v (%v), want an empty, non-nil list", objs, err)
	}
}

func TestUndecodableValuesAreSkipped(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	mustCreate(t, s, newTunnel("a", "a.example.com"))
	if _, err := s.Client().Put(ctx, "/kakuremichi/tunnels/b", "not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Put(ctx, "/kakuremichi/tunnels/c", jsonOf(t, newTunnel("other", "c.example.com"))); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, newTunnel("d", "d.example.com"))
	objs, _, err := s.List(ctx, "tunnels", api.Selector{})
	if err != nil || len(objs) != 2 || objs[0].GetMeta().Name != "a" || objs[1].GetMeta().Name != "d" {
		t.Errorf("List: got %s (%v), want a and d only", jsonOf(t, objs), err)
	}
	if _, err := s.Get(ctx, "tunnels", "b"); err == nil {
		t.Errorf("Get of an undecodable value: got nil error, want one")
	}
}

// TestUpdateStatusSharesNothingWithTheCaller checks that what UpdateStatus
// returns, written or not, and what it stored, do not change when the
// caller then changes the object it passed.
func TestUpdateStatusSharesNothingWithTheCaller(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	base := tunnelOf(t, mustCreate(t, s, newTunnel("t", "t.example.com")))
	for _, write := range []bool{true, false} {
		obj := tunnelOf(t, api.Clone(base))
		if write {
			obj.Status.Conditions = []api.Condition{{Type: "Ready", Status: api.ConditionTrue, Reason: "Fine"}}
		}
		out, err := s.UpdateStatus(ctx, obj, WriteOptions{})
		if err != nil {
			t.Fatalf("UpdateStatus (write %v): %v", write, err)
		}
		want := jsonOf(t, out)
		obj.Status.Conditions = append(obj.Status.Conditions[:0], api.Condition{Type: "Ready", Status: api.ConditionFalse, Reason: "Changed"})
		obj.Spec.Hostname = "other.example.com"
		if got := jsonOf(t, out); got != want {
			t.Fatalf("returned object (write %v) changed with the caller's: got %s, want %s", write, got, want)
		}
		stored, err := s.Get(ctx, "tunnels", "t")
		if err != nil || jsonOf(t, stored) != want {
			t.Fatalf("stored (write %v): got %s (%v), want %s", write, jsonOf(t, stored), err, want)
		}
		base = tunnelOf(t, out)
	}
}
