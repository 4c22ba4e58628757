// Package reconciletest provides an in-memory source of objects for
// testing informers and reconcilers without etcd: Source has the
// semantics of the store that matter to them (revisions, optimistic
// writes with resourceVersion conflicts, watches from a revision,
// compaction, finalizers) and can be made to fail on demand.
//
// It is a test double of the store, not a second store: the real one is
// tested in package store, and Control's integration tests run the
// controllers against it. reconciletest imports only the standard library,
// package api and package reconcile.
package reconciletest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
)

// Config configures NewSource.
type Config struct {
	// Now is the clock that stamps creation and deletion times; nil means
	// time.Now. Timestamps are truncated to the second, as the store does.
	Now func() time.Time
}

// Source is an in-memory store of objects of every kind. Its methods are
// safe for concurrent use. Objects passed in are never retained and
// objects returned are copies the caller may change.
type Source struct {
	now func() time.Time

	// hold, write-locked by HoldWatches, keeps every watch from reading
	// the history; it is taken before mu.
	hold sync.RWMutex

	mu sync.Mutex // guards every field below
	// rev is the revision of the last write; it starts at 1, like etcd.
	rev int64
	// compacted is the highest revision whose history is gone.
	compacted int64
	// objects holds the current state, with ResourceVersion set.
	objects map[api.Key]api.Object
	// history holds every event after compacted, in revision order.
	history []reconcile.Event
	// changed is closed and replaced on every write, compaction and
	// BreakWatches, to wake the watch goroutines.
	changed chan struct{}
	// breakGen counts BreakWatches calls; a watch started before the
	// latest one ends with breakErr.
	breakGen int
	breakErr error
	// listErr, when set, is returned by every List.
	listErr error
	// lists counts List calls, so tests can tell when an informer relisted.
	lists  int
	uidSeq int
}

// NewSource returns an empty source at revision 1.
func NewSource(cfg Config) *Source {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Source{
		now:     now,
		rev:     1,
		objects: map[api.Key]api.Object{},
		changed: make(chan struct{}),
	}
}

// Revision returns the revision of the last write.
func (s *Source) Revision() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

// Lists returns how many times List was called.
func (s *Source) Lists() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lists
}

// Create stores a new object, after defaulting and validating it, with a
// new uid, creationTimestamp, generation 1 and no status. It fails with
// api.ErrAlreadyExists when the name is taken and api.ErrBadRequest when
// obj carries a resourceVersion.
func (s *Source) Create(_ context.Context, obj api.Object) (api.Object, error) {
	k, o, err := ownCopy(obj)
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	m := o.GetMeta()
	op := fmt.Sprintf("create %s %q", k.Singular, m.Name)
	if m.ResourceVersion != "" {
		return nil, fmt.Errorf("%s: %w: metadata.resourceVersion must be empty on create", op, api.ErrBadRequest)
	}
	o.Default()
	if err := api.Validate(o); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := keyOf(k.Kind, m.Name)
	if _, ok := s.objects[key]; ok {
		return nil, fmt.Errorf("%s: %w", op, api.ErrAlreadyExists)
	}
	s.uidSeq++
	m.UID = fmt.Sprintf("00000000-0000-4000-8000-%012d", s.uidSeq)
	m.CreationTimestamp = s.now().UTC().Truncate(time.Second)
	m.Generation = 1
	m.DeletionTimestamp = nil
	o = withStatus(k, o, nil)
	return s.writeLocked(api.Added, key, o), nil
}

// Get returns a copy of the stored object, or an error wrapping
// api.ErrNotFound.
func (s *Source) Get(_ context.Context, kind, name string) (api.Object, error) {
	k, ok := api.LookupKind(kind)
	if !ok {
		return nil, fmt.Errorf("get %s %q: %w: unknown kind", kind, name, api.ErrBadRequest)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	obj, ok := s.objects[keyOf(k.Kind, name)]
	if !ok {
		return nil, fmt.Errorf("get %s %q: %w", k.Singular, name, api.ErrNotFound)
	}
	return api.Clone(obj), nil
}

// List returns copies of the objects of a kind that match sel, sorted by
// name, and the current revision. FailLists makes it fail.
func (s *Source) List(_ context.Context, kind string, sel api.Selector) ([]api.Object, int64, error) {
	k, ok := api.LookupKind(kind)
	if !ok {
		return nil, 0, fmt.Errorf("list %s: %w: unknown kind", kind, api.ErrBadRequest)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists++
	if s.listErr != nil {
		return nil, 0, fmt.Errorf("list %s: %w", k.Plural, s.listErr)
	}
	var out []api.Object
	for key, obj := range s.objects {
		if key.Kind == k.Kind && sel.Matches(obj.GetMeta().Labels) {
			out = append(out, api.Clone(obj))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetMeta().Name < out[j].GetMeta().Name })
	return out, s.rev, nil
}

// Update replaces an object's labels, annotations, finalizers, owner
// references and spec with obj's, keeping everything else; generation
// moves when spec changed. A non-empty resourceVersion must be the stored
// one (api.ErrConflict otherwise). An update that changes nothing writes
// nothing. Removing the last finalizer of an object being deleted deletes
// it.
func (s *Source) Update(_ context.Context, obj api.Object) (api.Object, error) {
	k, o, err := ownCopy(obj)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	m := o.GetMeta()
	op := fmt.Sprintf("update %s %q", k.Singular, m.Name)
	o.Default()
	if err := api.Validate(o); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := keyOf(k.Kind, m.Name)
	cur, err := s.checkLocked(op, key, m.ResourceVersion, m.UID)
	if err != nil {
		return nil, err
	}
	next := api.Clone(cur)
	nm, cm := next.GetMeta(), cur.GetMeta()
	nm.Labels, nm.Annotations = m.Labels, m.Annotations
	nm.Finalizers, nm.OwnerReferences = m.Finalizers, m.OwnerReferences
	next = withSpec(k, next, o)
	if !bytes.Equal(field(next, "spec"), field(cur, "spec")) {
		next.GetMeta().Generation = cm.Generation + 1
	}
	if cm.DeletionTimestamp != nil && len(next.GetMeta().Finalizers) == 0 {
		return s.writeLocked(api.Deleted, key, next), nil
	}
	if equalJSON(next, cur) {
		return api.Clone(cur), nil
	}
	return s.writeLocked(api.Modified, key, next), nil
}

// UpdateStatus replaces an object's status with obj's, keeping everything
// else. The resourceVersion rules are Update's; an unchanged status writes
// nothing.
func (s *Source) UpdateStatus(_ context.Context, obj api.Object) (api.Object, error) {
	k, o, err := ownCopy(obj)
	if err != nil {
		return nil, fmt.Errorf("update status: %w", err)
	}
	m := o.GetMeta()
	op := fmt.Sprintf("update status of %s %q", k.Singular, m.Name)
	s.mu.Lock()
	defer s.mu.Unlock()
	key := keyOf(k.Kind, m.Name)
	cur, err := s.checkLocked(op, key, m.ResourceVersion, m.UID)
	if err != nil {
		return nil, err
	}
	next := withStatus(k, cur, field(o, "status"))
	if equalJSON(next, cur) {
		return api.Clone(cur), nil
	}
	return s.writeLocked(api.Modified, key, next), nil
}

// Delete deletes an object and returns its last state. An object with
// finalizers is only marked with a deletionTimestamp. resourceVersion,
// when not empty, must be the stored one (api.ErrConflict otherwise); a
// missing object is api.ErrNotFound.
func (s *Source) Delete(_ context.Context, kind, name, resourceVersion string) (api.Object, error) {
	k, ok := api.LookupKind(kind)
	if !ok {
		return nil, fmt.Errorf("delete %s %q: %w: unknown kind", kind, name, api.ErrBadRequest)
	}
	op := fmt.Sprintf("delete %s %q", k.Singular, name)
	s.mu.Lock()
	defer s.mu.Unlock()
	key := keyOf(k.Kind, name)
	cur, err := s.checkLocked(op, key, resourceVersion, "")
	if err != nil {
		return nil, err
	}
	if len(cur.GetMeta().Finalizers) > 0 {
		if cur.GetMeta().DeletionTimestamp != nil {
			return api.Clone(cur), nil
		}
		next := api.Clone(cur)
		t := s.now().UTC().Truncate(time.Second)
		next.GetMeta().DeletionTimestamp = &t
		return s.writeLocked(api.Modified, key, next), nil
	}
	return s.writeLocked(api.Deleted, key, api.Clone(cur)), nil
}

// Watch streams the changes to objects of a kind with a revision >=
// fromRev (0: from the next write), like the store's Watch: in revision
// order, each once; an Error event wrapping api.ErrGone when fromRev (or
// a revision the watch had not delivered yet) was compacted; the channel
// closes after an Error event or when ctx is done. The goroutine behind it
// stops when ctx is done or after the Error event.
func (s *Source) Watch(ctx context.Context, kind string, fromRev int64) (<-chan reconcile.Event, error) {
	k, ok := api.LookupKind(kind)
	if !ok {
		return nil, fmt.Errorf("watch %s: %w: unknown kind", kind, api.ErrBadRequest)
	}
	if fromRev < 0 {
		return nil, fmt.Errorf("watch %s: %w: revision %d is negative", k.Plural, api.ErrBadRequest, fromRev)
	}
	s.mu.Lock()
	if fromRev == 0 {
		fromRev = s.rev + 1
	}
	gen := s.breakGen
	s.mu.Unlock()
	ch := make(chan reconcile.Event)
	go s.serveWatch(ctx, k, fromRev, gen, ch)
	return ch, nil
}

// serveWatch feeds one watch until ctx is done or it ends with an error.
func (s *Source) serveWatch(ctx context.Context, k api.KindInfo, next int64, gen int, ch chan<- reconcile.Event) {
	defer close(ch)
	send := func(ev reconcile.Event) bool {
		select {
		case ch <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		s.hold.RLock()
		s.mu.Lock()
		s.hold.RUnlock()
		if s.breakGen != gen {
			err := s.breakErr
			s.mu.Unlock()
			send(reconcile.Event{Type: api.Error, Err: fmt.Errorf("watch %s: %w", k.Plural, err)})
			return
		}
		if next <= s.compacted {
			compacted := s.compacted
			s.mu.Unlock()
			send(reconcile.Event{Type: api.Error, Err: fmt.Errorf("watch %s from revision %d: %w (compacted up to %d)",
				k.Plural, next, api.ErrGone, compacted)})
			return
		}
		i := sort.Search(len(s.history), func(i int) bool { return s.history[i].Revision >= next })
		var evs []reconcile.Event
		for _, ev := range s.history[i:] {
			if ev.Object.GetTypeMeta().Kind == k.Kind {
				evs = append(evs, reconcile.Event{Type: ev.Type, Object: api.Clone(ev.Object), Revision: ev.Revision})
			}
		}
		next = s.rev + 1
		wake := s.changed
		s.mu.Unlock()
		for _, ev := range evs {
			if !send(ev) {
				return
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		}
	}
}

// HoldWatches keeps every watch from reading the history until the
// returned function is called: writes and a compaction made meanwhile
// reach a watch together, or (compacted) not at all, as they would a
// watch that fell behind. Without it a watch may read writes in the
// instant between them and the compaction.
func (s *Source) HoldWatches() (resume func()) {
	s.hold.Lock()
	return s.hold.Unlock
}

// Compact forgets the history up to and including rev (at most the
// current revision), as etcd's compaction does: a watch from rev or
// earlier, or one that has not yet delivered that far, ends with
// api.ErrGone.
func (s *Source) Compact(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rev = min(rev, s.rev)
	if rev <= s.compacted {
		return
	}
	s.compacted = rev
	i := sort.Search(len(s.history), func(i int) bool { return s.history[i].Revision > rev })
	s.history = slices.Clone(s.history[i:])
	s.wakeLocked()
}

// BreakWatches ends every open watch with an Error event wrapping err, as
// a lost connection to the store would.
func (s *Source) BreakWatches(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.breakGen++
	s.breakErr = err
	s.wakeLocked()
}

// FailLists makes every List fail with an error wrapping err until
// FailLists(nil).
func (s *Source) FailLists(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listErr = err
}

// For returns a ListerWatcher of one kind, for an Informer.
func (s *Source) For(kind string) reconcile.ListerWatcher {
	return kindSource{s: s, kind: kind}
}

type kindSource struct {
	s    *Source
	kind string
}

func (k kindSource) List(ctx context.Context) ([]api.Object, int64, error) {
	return k.s.List(ctx, k.kind, api.Selector{})
}

func (k kindSource) Watch(ctx context.Context, fromRev int64) (<-chan reconcile.Event, error) {
	return k.s.Watch(ctx, k.kind, fromRev)
}

// checkLocked returns the stored object at key after checking the
// resourceVersion precondition and that uid (when given) is the stored
// object's. The caller holds mu.
func (s *Source) checkLocked(op string, key api.Key, rv, uid string) (api.Object, error) {
	cur, ok := s.objects[key]
	if !ok {
		return nil, fmt.Errorf("%s: %w", op, api.ErrNotFound)
	}
	if rv != "" {
		want, err := strconv.ParseInt(rv, 10, 64)
		if err != nil || want <= 0 {
			return nil, fmt.Errorf("%s: %w: resourceVersion %q is not a positive integer", op, api.ErrBadRequest, rv)
		}
		if rv != cur.GetMeta().ResourceVersion {
			return nil, fmt.Errorf("%s: %w (stored version %s, given %s)", op, api.ErrConflict, cur.GetMeta().ResourceVersion, rv)
		}
	}
	if uid != "" && uid != cur.GetMeta().UID {
		return nil, api.ErrorList{{Type: api.FieldInvalid, Field: "metadata.uid",
			Detail: fmt.Sprintf("%q is not the stored object's uid %q: the field is immutable", uid, cur.GetMeta().UID)}}
	}
	return cur, nil
}

// writeLocked records a write of obj (owned by the source from now on) at
// a new revision and returns a copy of what was stored. The caller holds
// mu.
func (s *Source) writeLocked(typ api.WatchEventType, key api.Key, obj api.Object) api.Object {
	s.rev++
	obj.GetMeta().ResourceVersion = strconv.FormatInt(s.rev, 10)
	if typ == api.Deleted {
		delete(s.objects, key)
	} else {
		s.objects[key] = obj
	}
	s.history = append(s.history, reconcile.Event{Type: typ, Object: obj, Revision: s.rev})
	s.wakeLocked()
	return api.Clone(obj)
}

func (s *Source) wakeLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func keyOf(kind, name string) api.Key { return api.Key{Kind: kind, Name: name} }

// ownCopy finds obj's kind from its Go type and returns a deep copy with
// its TypeMeta filled in.
func ownCopy(obj api.Object) (api.KindInfo, api.Object, error) {
	if obj == nil || reflect.ValueOf(obj).IsNil() {
		return api.KindInfo{}, nil, fmt.Errorf("%w: no object", api.ErrBadRequest)
	}
	for _, k := range api.Kinds() {
		if reflect.TypeOf(k.New()) != reflect.TypeOf(obj) {
			continue
		}
		if kind := obj.GetTypeMeta().Kind; kind != "" && kind != k.Kind {
			return api.KindInfo{}, nil, fmt.Errorf("%w: a %s object says its kind is %q", api.ErrBadRequest, k.Kind, kind)
		}
		o := k.New()
		if err := json.Unmarshal(mustJSON(obj), o); err != nil {
			return api.KindInfo{}, nil, fmt.Errorf("copy %s: %w", k.Kind, err)
		}
		o.GetTypeMeta().Kind = k.Kind
		if o.GetTypeMeta().APIVersion == "" {
			o.GetTypeMeta().APIVersion = api.APIVersion
		}
		return k, o, nil
	}
	return api.KindInfo{}, nil, fmt.Errorf("%w: %T is not a known kind", api.ErrBadRequest, obj)
}

// field returns the canonical JSON of one top-level field of obj, nil if
// absent.
func field(obj api.Object, name string) json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(mustJSON(obj), &m); err != nil {
		panic(fmt.Sprintf("reconciletest: split %T: %v", obj, err))
	}
	return m[name]
}

// withField returns a copy of obj whose top-level field name is raw
// (removed when nil).
func withField(k api.KindInfo, obj api.Object, name string, raw json.RawMessage) api.Object {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(mustJSON(obj), &m); err != nil {
		panic(fmt.Sprintf("reconciletest: split %T: %v", obj, err))
	}
	if raw == nil {
		delete(m, name)
	} else {
		m[name] = raw
	}
	out := k.New()
	if err := json.Unmarshal(mustJSON(m), out); err != nil {
		panic(fmt.Sprintf("reconciletest: join %s: %v", k.Kind, err))
	}
	return out
}

func withStatus(k api.KindInfo, obj api.Object, raw json.RawMessage) api.Object {
	return withField(k, obj, "status", raw)
}

func withSpec(k api.KindInfo, obj, from api.Object) api.Object {
	return withField(k, obj, "spec", field(from, "spec"))
}

func equalJSON(a, b api.Object) bool { return bytes.Equal(mustJSON(a), mustJSON(b)) }

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("reconciletest: marshal %T: %v", v, err))
	}
	return data
}
