package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// Change is what an Informer tells its handlers about one object.
type Change struct {
	// Type is api.Added, api.Modified or api.Deleted.
	Type api.WatchEventType
	// Old is the object as the cache held it before the change: nil for
	// Added, the last known state for Deleted.
	Old api.Object
	// New is the object as the cache holds it now: nil for Deleted.
	New api.Object
	// Resync marks a periodic re-notification of an unchanged object
	// (Type Modified, Old and New the same object).
	Resync bool
}

// Object returns the changed object: New, or Old for a deletion.
func (c Change) Object() api.Object {
	if c.New != nil {
		return c.New
	}
	return c.Old
}

// IndexFunc returns the values under which an object is indexed (for
// instance a tunnel's hostname); none leaves it out of the index.
type IndexFunc func(api.Object) []string

// InformerConfig configures NewInformer.
type InformerConfig struct {
	// Kind is the kind of object the informer holds, used in logs and
	// errors. Required.
	Kind string
	// Source lists and watches the objects. Required.
	Source ListerWatcher
	// Resync, when positive, is how often every cached object is
	// re-notified to the handlers, so that level-triggered loops get a
	// periodic full refresh. Zero means never.
	Resync time.Duration
	// Backoff paces reconnection after a failed list or watch. The zero
	// value waits from 100 ms doubling up to 30 s.
	Backoff Backoff
	// Logger receives the informer's logs; nil discards them.
	Logger *slog.Logger
}

// Informer keeps a read-only cache of every object of one kind, by
// listing once and then watching from the list's revision, and tells its
// handlers about every change.
//
// The cache never silently misses a change: when the watch reports that
// its revision was compacted, the informer lists again, compares the list
// with its cache and notifies handlers of what changed in the gap,
// including Deleted for objects that disappeared. When a watch fails for
// another reason it is resumed from the last revision seen, with a capped
// exponential backoff.
//
// Objects returned by Get, List, ByIndex and passed to handlers are
// shared with the cache and with every other caller: they must not be
// changed. Use api.Clone to get a copy to modify.
type Informer struct {
	kind    string
	source  ListerWatcher
	resync  time.Duration
	backoff Backoff
	log     *slog.Logger

	cacheMu sync.RWMutex // guards cache, indexers and indexes
	cache   map[string]api.Object
	// indexers maps an index name to its function.
	indexers map[string]IndexFunc
	// indexes maps an index name to value to the names of the objects
	// indexed under that value.
	indexes map[string]map[string]map[string]struct{}

	// dispatchMu guards handlers and serialises notifications, so that
	// every handler sees the changes of one object in the order they
	// happened, and a handler added late gets the cache's contents before
	// any later change.
	dispatchMu sync.Mutex
	handlers   []func(Change)

	synced   chan struct{} // closed once the first list is in the cache
	running  atomic.Bool
	syncOnce sync.Once
}

// NewInformer returns an informer; nothing happens until Run.
func NewInformer(cfg InformerConfig) *Informer {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := cfg.Backoff
	if b.Min <= 0 {
		b.Min = 100 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoffMax
	}
	return &Informer{
		kind:     cfg.Kind,
		source:   cfg.Source,
		resync:   cfg.Resync,
		backoff:  b,
		log:      log.With("informer", cfg.Kind),
		cache:    map[string]api.Object{},
		indexers: map[string]IndexFunc{},
		indexes:  map[string]map[string]map[string]struct{}{},
		synced:   make(chan struct{}),
	}
}

// Kind returns the kind of object the informer holds.
func (inf *Informer) Kind() string { return inf.kind }

// AddHandler registers h to be told about every change. h is first told
// about every object already cached, as Added, then about every later
// change. Handlers are called one at a time from the informer's goroutine:
// h must be quick and must not block (enqueueing a key is the usual job),
// and must not call AddHandler.
func (inf *Informer) AddHandler(h func(Change)) {
	inf.dispatchMu.Lock()
	defer inf.dispatchMu.Unlock()
	inf.handlers = append(inf.handlers, h)
	for _, obj := range inf.List() {
		h(Change{Type: api.Added, New: obj})
	}
}

// AddIndex maintains an index of the cache under name, queried with
// ByIndex. It may be called at any time; adding an index twice under one
// name replaces it.
func (inf *Informer) AddIndex(name string, fn IndexFunc) {
	inf.cacheMu.Lock()
	defer inf.cacheMu.Unlock()
	inf.indexers[name] = fn
	inf.indexes[name] = map[string]map[string]struct{}{}
	for _, obj := range inf.cache {
		inf.indexOne(name, fn, obj)
	}
}

// ByIndex returns the cached objects indexed under value in the named
// index, sorted by name; none when the index does not exist.
func (inf *Informer) ByIndex(index, value string) []api.Object {
	inf.cacheMu.RLock()
	defer inf.cacheMu.RUnlock()
	names := inf.indexes[index][value]
	out := make([]api.Object, 0, len(names))
	for n := range names {
		out = append(out, inf.cache[n])
	}
	sortByName(out)
	return out
}

// Get returns the cached object with the given name. The object is
// shared: clone it before changing it.
func (inf *Informer) Get(name string) (api.Object, bool) {
	inf.cacheMu.RLock()
	defer inf.cacheMu.RUnlock()
	obj, ok := inf.cache[name]
	return obj, ok
}

// List returns every cached object, sorted by name. The objects are
// shared: clone one before changing it.
func (inf *Informer) List() []api.Object {
	out := inf.ListUnsorted()
	sortByName(out)
	return out
}

// ListUnsorted is List without the sort, for loops over every object that
// need no order: sorting thousands of nodes on every heartbeat was most
// of what judging them cost.
func (inf *Informer) ListUnsorted() []api.Object {
	inf.cacheMu.RLock()
	defer inf.cacheMu.RUnlock()
	out := make([]api.Object, 0, len(inf.cache))
	for _, obj := range inf.cache {
		out = append(out, obj)
	}
	return out
}

// HasSynced reports whether the first list is in the cache (and has been
// told to the handlers).
func (inf *Informer) HasSynced() bool {
	select {
	case <-inf.synced:
		return true
	default:
		return false
	}
}

// WaitForSync blocks until HasSynced or ctx is done.
func (inf *Informer) WaitForSync(ctx context.Context) error {
	select {
	case <-inf.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the %s informer to sync: %w", inf.kind, ctx.Err())
	}
}

// Run lists and watches until ctx is done, then returns nil once every
// goroutine it started has stopped. Failures of the source are logged and
// retried, never returned. An informer runs once.
func (inf *Informer) Run(ctx context.Context) error {
	if inf.source == nil {
		return fmt.Errorf("run the %s informer: no source", inf.kind)
	}
	if !inf.running.CompareAndSwap(false, true) {
		return fmt.Errorf("run the %s informer: already running", inf.kind)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if inf.resync > 0 {
		wg.Go(func() { inf.resyncLoop(ctx) })
	}
	inf.listAndWatch(ctx)
	return nil
}

// errWatchClosed is why a watch ended when its channel closed without an
// Error event.
var errWatchClosed = errors.New("the watch channel closed")

// listAndWatch lists, then watches from the list's revision + 1; on a
// compacted revision it lists again, on any other failure it resumes the
// watch from the last revision seen.
func (inf *Informer) listAndWatch(ctx context.Context) {
	var (
		rev      int64
		needList = true
		attempt  int
	)
	for ctx.Err() == nil {
		if needList {
			r, err := inf.relist(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				d := inf.backoff.Delay(attempt)
				attempt++
				inf.log.Warn("list failed; retrying", "err", err, "retryIn", d)
				if !sleep(ctx, d) {
					return
				}
				continue
			}
			rev, needList = r, false
		}
		started := time.Now()
		r, progressed, err := inf.watch(ctx, rev)
		rev = r
		if ctx.Err() != nil {
			return
		}
		if progressed || time.Since(started) > inf.backoff.Max {
			attempt = 0
		}
		d := inf.backoff.Delay(attempt)
		attempt++
		if errors.Is(err, api.ErrGone) {
			needList = true
			inf.log.Info("watch revision was compacted; listing again", "revision", rev+1, "err", err, "relistIn", d)
		} else {
			inf.log.Warn("watch ended; resuming", "revision", rev+1, "err", err, "retryIn", d)
		}
		if !sleep(ctx, d) {
			return
		}
	}
}

// watch applies the events of one watch from rev + 1 until it ends, and
// returns the last revision seen, whether any event arrived, and why it
// ended.
func (inf *Informer) watch(ctx context.Context, rev int64) (int64, bool, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel() // the source's contract: cancel or read until closed
	ch, err := inf.source.Watch(wctx, rev+1)
	if err != nil {
		return rev, false, fmt.Errorf("watch %s from revision %d: %w", inf.kind, rev+1, err)
	}
	progressed := false
	for {
		var ev Event
		var ok bool
		select {
		case <-ctx.Done():
			return rev, progressed, ctx.Err()
		case ev, ok = <-ch:
		}
		if !ok {
			return rev, progressed, errWatchClosed
		}
		switch ev.Type {
		case api.Error:
			err := ev.Err
			if err == nil {
				err = errors.New("an error event without an error")
			}
			return rev, progressed, fmt.Errorf("watch %s from revision %d: %w", inf.kind, rev+1, err)
		case api.Bookmark:
		case api.Added, api.Modified, api.Deleted:
			if ev.Object == nil {
				inf.log.Warn("ignoring a watch event without an object", "type", ev.Type, "revision", ev.Revision)
				continue
			}
			inf.apply(ev)
		default:
			inf.log.Warn("ignoring a watch event of unknown type", "type", ev.Type, "revision", ev.Revision)
			continue
		}
		progressed = true
		rev = max(rev, ev.Revision)
	}
}

// apply puts one watch event into the cache and tells the handlers.
func (inf *Informer) apply(ev Event) {
	inf.dispatchMu.Lock()
	defer inf.dispatchMu.Unlock()
	name := ev.Object.GetMeta().Name
	inf.cacheMu.Lock()
	old, had := inf.cache[name]
	if ev.Type == api.Deleted {
		if had {
			inf.removeLocked(name, old)
		}
	} else {
		inf.putLocked(name, old, ev.Object)
	}
	inf.cacheMu.Unlock()

	switch {
	case ev.Type == api.Deleted && had:
		inf.notify(Change{Type: api.Deleted, Old: old})
	case ev.Type == api.Deleted:
		// Never seen, so nothing to tell: the cache already agrees.
	case had:
		inf.notify(Change{Type: api.Modified, Old: old, New: ev.Object})
	default:
		inf.notify(Change{Type: api.Added, New: ev.Object})
	}
}

// relist lists the source, replaces the cache with the list and tells the
// handlers what differs from what the cache held: Added for new objects,
// Modified for changed ones, Deleted for those that vanished.
func (inf *Informer) relist(ctx context.Context) (int64, error) {
	objs, rev, err := inf.source.List(ctx)
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", inf.kind, err)
	}
	inf.dispatchMu.Lock()
	defer inf.dispatchMu.Unlock()
	var changes []Change
	inf.cacheMu.Lock()
	seen := make(map[string]struct{}, len(objs))
	for _, obj := range objs {
		name := obj.GetMeta().Name
		seen[name] = struct{}{}
		old, had := inf.cache[name]
		switch {
		case !had:
			changes = append(changes, Change{Type: api.Added, New: obj})
		case sameVersion(old, obj):
			continue // keep the cached object: handlers already know it
		default:
			changes = append(changes, Change{Type: api.Modified, Old: old, New: obj})
		}
		inf.putLocked(name, old, obj)
	}
	var gone []string
	for name := range inf.cache {
		if _, ok := seen[name]; !ok {
			gone = append(gone, name)
		}
	}
	slices.Sort(gone)
	for _, name := range gone {
		old := inf.cache[name]
		inf.removeLocked(name, old)
		changes = append(changes, Change{Type: api.Deleted, Old: old})
	}
	inf.cacheMu.Unlock()

	for _, c := range changes {
		inf.notify(c)
	}
	inf.syncOnce.Do(func() { close(inf.synced) })
	inf.log.Debug("listed", "objects", len(objs), "revision", rev, "changes", len(changes))
	return rev, nil
}

// sameVersion reports whether two states of an object are the same write.
func sameVersion(a, b api.Object) bool {
	rv := a.GetMeta().ResourceVersion
	return rv != "" && rv == b.GetMeta().ResourceVersion
}

// putLocked stores obj under name, replacing old (nil if none), and
// updates the indexes. The caller holds cacheMu.
func (inf *Informer) putLocked(name string, old, obj api.Object) {
	if old != nil {
		for idx, fn := range inf.indexers {
			inf.unindexOne(idx, fn, old)
		}
	}
	inf.cache[name] = obj
	for idx, fn := range inf.indexers {
		inf.indexOne(idx, fn, obj)
	}
}

// removeLocked drops name from the cache and the indexes. The caller
// holds cacheMu.
func (inf *Informer) removeLocked(name string, old api.Object) {
	for idx, fn := range inf.indexers {
		inf.unindexOne(idx, fn, old)
	}
	delete(inf.cache, name)
}

func (inf *Informer) indexOne(idx string, fn IndexFunc, obj api.Object) {
	name := obj.GetMeta().Name
	for _, v := range fn(obj) {
		set := inf.indexes[idx][v]
		if set == nil {
			set = map[string]struct{}{}
			inf.indexes[idx][v] = set
		}
		set[name] = struct{}{}
	}
}

func (inf *Informer) unindexOne(idx string, fn IndexFunc, obj api.Object) {
	name := obj.GetMeta().Name
	for _, v := range fn(obj) {
		set := inf.indexes[idx][v]
		delete(set, name)
		if len(set) == 0 {
			delete(inf.indexes[idx], v) // no empty sets left behind
		}
	}
}

// notify calls every handler with c. The caller holds dispatchMu.
func (inf *Informer) notify(c Change) {
	for _, h := range inf.handlers {
		h(c)
	}
}

// resyncLoop re-notifies every cached object each resync period.
func (inf *Informer) resyncLoop(ctx context.Context) {
	t := time.NewTicker(inf.resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !inf.HasSynced() {
			continue
		}
		inf.dispatchMu.Lock()
		for _, obj := range inf.List() {
			inf.notify(Change{Type: api.Modified, Old: obj, New: obj, Resync: true})
		}
		inf.dispatchMu.Unlock()
	}
}

// sleep waits for d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func sortByName(objs []api.Object) {
	slices.SortFunc(objs, func(a, b api.Object) int {
		return strings.Compare(a.GetMeta().Name, b.GetMeta().Name)
	})
}
