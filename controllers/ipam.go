package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
)

// OverlayAllocator gives every Agent and Gateway an address on the
// overlay network, in status.overlayAddress, with its AddressAssigned
// condition.
//
// Addresses come from Prefix, lowest free first, never its first
// (network) or last (broadcast) address. A node keeps its address for as
// long as it exists: a restart, a re-registration with a new key, being
// disabled or being deleted behind a finalizer change nothing, so peers
// and routes that name the address stay true. The address is free again
// once the node is gone. When every address is held the node gets
// AddressAssigned=False and Ready=False with reason OverlayExhausted, and
// is tried again when a node that held an address is deleted.
//
// Uniqueness. A candidate is checked against the Agent and Gateway
// informer caches and against a List of both kinds from the store made
// just before the write, and the write carries the node's
// resourceVersion, so a node that changed meanwhile is retried on fresh
// state. Allocations in one process are serialised (allocMu), which makes
// them safe with any number of workers; New runs this loop with one.
// Several Control replicas must not allocate at the same time: they will
// run the controllers under leader election (etcd's concurrency package),
// so that only the leader allocates.
//
// Two nodes on one address can only come from a write around this loop
// (a second Control before leader election, a restored backup, a hand
// edit). Then the older node (by creationTimestamp, then kind and name)
// keeps it and the younger one gets a new address: two nodes answering
// for one address is worse than one node renumbered.
type OverlayAllocator struct {
	// Store is listed to confirm that an address is free and written to
	// assign it. Required.
	Store Store
	// Agents and Gateways are synced informers of the two node kinds,
	// with the overlay address index (New sets them up). Required.
	Agents, Gateways *reconcile.Informer
	// Prefix is the overlay addresses are taken from; the zero value
	// means DefaultOverlayPrefix. It must hold at least four addresses.
	Prefix netip.Prefix
	// Now stamps condition transitions; nil means time.Now.
	Now func() time.Time
	// Logger receives the allocator's logs; nil discards them.
	Logger *slog.Logger

	// allocMu is held from reading which addresses are taken to writing
	// the chosen one, so that two workers never pick the same address.
	allocMu sync.Mutex
	// written holds the nodes this allocator gave an address whose
	// write the cache may not show yet, and when (guarded by allocMu).
	written map[api.Key]time.Time
}

// writtenGrace is how long after giving a node an address the allocator
// trusts its own write over a cache that does not show it yet, instead of
// listing the store again.
const writtenGrace = 5 * time.Second

// Reconcile gives the node of req an address if it has none (or one
// that does not parse, or one an older node holds), and keeps its
// AddressAssigned and Ready conditions current.
func (a *OverlayAllocator) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	inf, err := a.informerFor(req.Key.Kind)
	if err != nil {
		return reconcile.Result{}, reconcile.Terminal(fmt.Errorf("allocate an overlay address for %s: %w", req, err))
	}
	prefix := a.prefix()
	first, last, err := assignableRange(prefix)
	if err != nil {
		return reconcile.Result{}, reconcile.Terminal(fmt.Errorf("allocate an overlay address for %s: %w", req, err))
	}
	cached, ok := inf.Get(req.Key.Name)
	if !ok {
		return reconcile.Result{}, nil // gone: its address is free again
	}
	if keepsAddress(cached, a.cachedHolders) {
		a.allocMu.Lock()
		delete(a.written, req.Key)
		a.allocMu.Unlock()
		return a.write(ctx, req, api.Clone(cached), prefix, false)
	}

	a.allocMu.Lock()
	defer a.allocMu.Unlock()
	if at, ok := a.written[req.Key]; ok {
		if time.Since(at) < writtenGrace {
			// Given an address by an earlier batch a moment ago: the
			// cache's event for that write brings the node back.
			return reconcile.Result{RequeueAfter: time.Second}, nil
		}
		delete(a.written, req.Key)
	}
	var listed []api.Object
	for _, kind := range []string{"Agent", "Gateway"} {
		objs, _, err := a.Store.List(ctx, kind, api.Selector{})
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("allocate an overlay address for %s: %w", req, err)
		}
		listed = append(listed, objs...)
	}
	var live api.Object
	holders := map[netip.Addr][]api.Object{}
	used := map[netip.Addr]bool{}
	for _, obj := range listed {
		if nodeKey(obj) == req.Key {
			live = obj
		}
		if addr, ok := nodeAddress(obj); ok {
			holders[addr] = append(holders[addr], obj)
			used[addr] = true
		}
	}
	if live == nil {
		return reconcile.Result{}, nil // deleted since the cache saw it
	}
	// The cache may know of writes the list does not yet show (a watch
	// can run ahead of a lagging follower): count those addresses too.
	for _, inf := range []*reconcile.Informer{a.Agents, a.Gateways} {
		for _, obj := range inf.List() {
			if addr, ok := nodeAddress(obj); ok {
				used[addr] = true
			}
		}
	}
	if keepsAddress(live, func(addr netip.Addr) []api.Object { return holders[addr] }) {
		return a.write(ctx, req, live, prefix, false) // the cache lagged behind an earlier allocation
	}
	_, st, _, _ := nodeParts(live)
	old := st.OverlayAddress
	addr, ok := lowestFree(first, last, used)
	next := "" // an address another node holds is no address
	if ok {
		next = addr.String()
	}
	res, err := a.writeAddress(ctx, req, live, next, prefix)
	if err == nil && ok {
		used[addr] = true
		a.batch(ctx, listed, req.Key, first, last, used, prefix)
	}
	if err == nil && a.Logger != nil {
		switch {
		case !ok:
			a.Logger.Warn("overlay prefix exhausted", "node", req.String(), "prefix", prefix.String())
		case old != "":
			a.Logger.Warn("overlay address replaced: it was invalid or held by an older node",
				"node", req.String(), "old", old, "new", next)
		default:
			a.Logger.Info("overlay address assigned", "node", req.String(), "address", next)
		}
	}
	return res, err
}

// batch gives an address to every other listed node without one, from
// the same list: a fleet enrolling at once would otherwise cost one List
// of every node per node. Each write carries the node's resourceVersion
// (see writeAddress). The caller holds allocMu.
func (a *OverlayAllocator) batch(ctx context.Context, listed []api.Object, done api.Key, first, last netip.Addr,
	used map[netip.Addr]bool, prefix netip.Prefix) {
	type assignment struct {
		obj  api.Object
		key  api.Key
		addr netip.Addr
	}
	var todo []assignment
	for _, obj := range listed {
		key := nodeKey(obj)
		if key == done {
			continue
		}
		if _, ok := nodeAddress(obj); ok {
			continue
		}
		if _, _, _, ok := nodeParts(obj); !ok {
			continue
		}
		addr, ok := lowestFree(first, last, used)
		if !ok {
			break
		}
		// Taken even if the write fails: a failure may still have
		// written it, and the next node starts above it.
		used[addr], first = true, addr
		todo = append(todo, assignment{obj, key, addr})
	}
	// The addresses are chosen: the writes, each to its own node, go
	// several at a time.
	var mu sync.Mutex // guards a.written
	var wg sync.WaitGroup
	slots := make(chan struct{}, batchWriters)
	for _, as := range todo {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if _, err := a.writeAddress(ctx, reconcile.Request{Key: as.key}, as.obj, as.addr.String(), prefix); err != nil {
				return
			}
			mu.Lock()
			if a.written == nil {
				a.written = map[api.Key]time.Time{}
			}
			a.written[as.key] = time.Now()
			mu.Unlock()
			if a.Logger != nil {
				a.Logger.Info("overlay address assigned", "node", as.key.String(), "address", as.addr.String())
			}
		})
	}
	wg.Wait()
}

// batchWriters is how many of a batch's writes are in flight at once.
const batchWriters = 32

// writeAddress sets obj's address to addr and writes it with its
// conditions. On a write conflict it reads the node again and retries as
// long as the node's address is still the one obj had: a heartbeat or a
// condition written meanwhile does not cost the node its turn. The
// caller holds allocMu.
func (a *OverlayAllocator) writeAddress(ctx context.Context, req reconcile.Request, obj api.Object, addr string, prefix netip.Prefix) (reconcile.Result, error) {
	_, st, _, _ := nodeParts(obj)
	had := st.OverlayAddress
	for attempt := 0; ; attempt++ {
		st.OverlayAddress = addr
		res, err := a.write(ctx, req, obj, prefix, addr != had)
		if !errors.Is(err, api.ErrConflict) || attempt == 3 {
			return res, err
		}
		fresh, gerr := a.Store.Get(ctx, req.Key.Kind, req.Key.Name)
		if gerr != nil {
			return res, err
		}
		_, fst, _, ok := nodeParts(fresh)
		if !ok || fst.OverlayAddress != had {
			return res, err
		}
		obj, st = fresh, fst
	}
}

// write sets next's AddressAssigned and Ready conditions from its
// status.overlayAddress and writes the status if anything changed since
// it was read (addrChanged says whether the caller changed the address).
func (a *OverlayAllocator) write(ctx context.Context, req reconcile.Request, next api.Object, prefix netip.Prefix, addrChanged bool) (reconcile.Result, error) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	enabled, st, _, _ := nodeParts(next)
	gen := next.GetMeta().Generation
	cond := api.Condition{Type: NodeAddressAssigned, ObservedGeneration: gen}
	if addr, ok := parseOverlayAddress(st.OverlayAddress); ok {
		cond.Status, cond.Reason = api.ConditionTrue, ReasonAddressAssigned
		cond.Message = fmt.Sprintf("overlay address %s", addr)
		if !prefix.Contains(addr) {
			cond.Message += fmt.Sprintf(" (outside the overlay prefix %s; kept, since a node's address never changes while it exists)", prefix)
		}
	} else {
		cond.Status, cond.Reason = api.ConditionFalse, ReasonOverlayExhausted
		cond.Message = fmt.Sprintf("every address of the overlay prefix %s is held by another node; delete a node or widen the prefix", prefix)
	}
	changed := addrChanged
	conds := &next.GetStatus().Conditions
	if api.SetCondition(conds, cond, now()) {
		changed = true
	}
	if api.SetCondition(conds, nodeReadyCondition(req.Key.Kind, enabled, *conds, gen), now()) {
		changed = true
	}
	if !changed {
		return reconcile.Result{}, nil
	}
	if _, err := a.Store.UpdateStatus(ctx, next); err != nil {
		if errors.Is(err, api.ErrNotFound) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("allocate an overlay address for %s: %w", req, err)
	}
	return reconcile.Result{}, nil
}

// onRelease returns an informer handler that, when a node holding an
// address is deleted, enqueues every node still without one: the pool
// has room again.
func (a *OverlayAllocator) onRelease(enqueue func(reconcile.Request)) func(reconcile.Change) {
	return func(ch reconcile.Change) {
		if ch.Type != api.Deleted {
			return
		}
		if _, ok := nodeAddress(ch.Old); !ok {
			return
		}
		for _, inf := range []*reconcile.Informer{a.Agents, a.Gateways} {
			for _, obj := range inf.List() {
				if _, ok := nodeAddress(obj); !ok {
					enqueue(reconcile.RequestFor(obj))
				}
			}
		}
	}
}

func (a *OverlayAllocator) informerFor(kind string) (*reconcile.Informer, error) {
	switch kind {
	case "Agent":
		return a.Agents, nil
	case "Gateway":
		return a.Gateways, nil
	}
	return nil, fmt.Errorf("%s is not a node kind", kind)
}

func (a *OverlayAllocator) prefix() netip.Prefix {
	if a.Prefix.IsValid() {
		return a.Prefix.Masked()
	}
	return netip.MustParsePrefix(DefaultOverlayPrefix)
}

// cachedHolders returns the cached nodes whose address is addr.
func (a *OverlayAllocator) cachedHolders(addr netip.Addr) []api.Object {
	s := addr.String()
	return append(a.Agents.ByIndex(overlayAddressIndex, s), a.Gateways.ByIndex(overlayAddressIndex, s)...)
}

// keepsAddress reports whether obj holds a valid address that no older
// node holds too, reading the holders of an address with holdersOf.
func keepsAddress(obj api.Object, holdersOf func(netip.Addr) []api.Object) bool {
	addr, ok := nodeAddress(obj)
	if !ok {
		return false
	}
	self := nodeKey(obj)
	for _, other := range holdersOf(addr) {
		if nodeKey(other) != self && olderNode(other, obj) {
			return false
		}
	}
	return true
}

// olderNode orders nodes by creationTimestamp, then kind, then name.
func olderNode(a, b api.Object) bool {
	am, bm := a.GetMeta(), b.GetMeta()
	if c := am.CreationTimestamp.Compare(bm.CreationTimestamp); c != 0 {
		return c < 0
	}
	ak, bk := nodeKey(a), nodeKey(b)
	if ak.Kind != bk.Kind {
		return ak.Kind < bk.Kind
	}
	return ak.Name < bk.Name
}

// nodeKey is obj's key, with the kind taken from its Go type so that an
// object whose TypeMeta is empty still has one.
func nodeKey(obj api.Object) api.Key {
	k := api.Key{Namespace: obj.GetMeta().Namespace, Name: obj.GetMeta().Name}
	switch obj.(type) {
	case *api.Agent:
		k.Kind = "Agent"
	case *api.Gateway:
		k.Kind = "Gateway"
	default:
		k.Kind = obj.GetTypeMeta().Kind
	}
	return k
}

// nodeAddress returns a node's overlay address, if it holds one that
// parses.
func nodeAddress(obj api.Object) (netip.Addr, bool) {
	_, st, _, ok := nodeParts(obj)
	if !ok {
		return netip.Addr{}, false
	}
	return parseOverlayAddress(st.OverlayAddress)
}

// parseOverlayAddress parses an address as status.overlayAddress holds
// it; zoned addresses are not overlay addresses.
func parseOverlayAddress(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}

// assignableRange returns the first and last addresses of p that may be
// assigned: all but its first (network) and last (broadcast) ones.
func assignableRange(p netip.Prefix) (first, last netip.Addr, err error) {
	if !p.IsValid() {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("overlay prefix %q is not a valid prefix", p)
	}
	p = p.Masked()
	first, last = p.Addr().Next(), lastAddress(p).Prev()
	if !first.IsValid() || !last.IsValid() || last.Less(first) {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("overlay prefix %s has no address to assign: it must hold at least 4 addresses", p)
	}
	return first, last, nil
}

// lastAddress returns the highest address of p.
func lastAddress(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// lowestFree returns the lowest address from first to last that is not
// used. It looks at no more than len(used)+1 addresses.
func lowestFree(first, last netip.Addr, used map[netip.Addr]bool) (netip.Addr, bool) {
	for a := first; a.IsValid() && !last.Less(a); a = a.Next() {
		if !used[a] {
			return a, true
		}
	}
	return netip.Addr{}, false
}
