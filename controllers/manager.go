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

// Store is what Control's controllers need of the store. *store.Store
// satisfies it through a thin adapter in Control's wiring (its write
// methods take options structs this package does not import).
type Store interface {
	// Get returns the object of a kind and name, or an error wrapping
	// api.ErrNotFound.
	Get(ctx context.Context, kind, name string) (api.Object, error)
	// List returns the objects of a kind that match sel and the revision
	// they were read at.
	List(ctx context.Context, kind string, sel api.Selector) ([]api.Object, int64, error)
	// UpdateStatus replaces obj's status; a non-empty resourceVersion that
	// is not the stored one fails with api.ErrConflict.
	UpdateStatus(ctx context.Context, obj api.Object) (api.Object, error)
	// Delete deletes an object; a non-empty resourceVersion that is not
	// the stored one fails with api.ErrConflict, a missing object with
	// api.ErrNotFound.
	Delete(ctx context.Context, kind, name, resourceVersion string) (api.Object, error)
	// Watch streams the changes to objects of a kind from revision
	// fromRev on, with the contract of reconcile.ListerWatcher's Watch.
	Watch(ctx context.Context, kind string, fromRev int64) (<-chan reconcile.Event, error)
}

// Defaults for zero Config fields.
const (
	DefaultWorkers = 2
	DefaultResync  = 10 * time.Minute
)

// Config configures New.
type Config struct {
	// Store is where objects are read, watched and written. Required.
	Store Store
	// Logger receives the controllers' logs; nil discards them.
	Logger *slog.Logger
	// Workers is how many keys each controller reconciles at once; zero
	// means DefaultWorkers.
	Workers int
	// Resync is how often every cached object is reconciled again even if
	// nothing changed; zero means DefaultResync, negative means never.
	Resync time.Duration
	// Now is the clock that stamps condition transitions and measures
	// node leases; nil means time.Now.
	Now func() time.Time
	// OverlayPrefix is the network every agent and gateway gets its
	// overlay address from; the zero value means DefaultOverlayPrefix. It
	// must hold at least four addresses (Run fails otherwise).
	OverlayPrefix netip.Prefix
	// NodeLease is how long after its last heartbeat a node still counts
	// as connected; zero means DefaultNodeLease.
	NodeLease time.Duration
	// ControlHostname is Control's own public name, "" for none: a tunnel
	// that claims it never owns it (HostnameReservedForControl).
	ControlHostname string
	// Leases lists and watches the nodes' leases (api.NodeLease), which
	// the bridge renews between status writes; nil judges nodes by the
	// lastHeartbeat of their statuses alone.
	Leases reconcile.ListerWatcher
}

// Manager runs an informer for every kind and Control's controllers over
// them.
type Manager struct {
	store       Store
	log         *slog.Logger
	informers   map[string]*reconcile.Informer   // by kind; fixed after New
	leases      *reconcile.Informer              // nil without Config.Leases
	controllers map[string]*reconcile.Controller // by name; fixed after New
	// configErr is why the Config cannot run, reported by Run (New
	// cannot fail).
	configErr error
}

// New builds the informers and controllers; nothing runs until Run.
func New(cfg Config) *Manager {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = DefaultWorkers
	}
	resync := cfg.Resync
	switch {
	case resync == 0:
		resync = DefaultResync
	case resync < 0:
		resync = 0
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	lease := cfg.NodeLease
	if lease <= 0 {
		lease = DefaultNodeLease
	}
	prefix := cfg.OverlayPrefix
	if !prefix.IsValid() {
		prefix = netip.MustParsePrefix(DefaultOverlayPrefix)
	}
	m := &Manager{store: cfg.Store, log: log,
		informers: map[string]*reconcile.Informer{}, controllers: map[string]*reconcile.Controller{}}
	if _, _, err := assignableRange(prefix); err != nil {
		m.configErr = err
	}
	for _, k := range api.Kinds() {
		inf := reconcile.NewInformer(reconcile.InformerConfig{
			Kind:   k.Kind,
			Source: kindSource{store: cfg.Store, kind: k.Kind},
			Resync: resync,
			Logger: log,
		})
		addIndexes(inf)
		m.informers[k.Kind] = inf
	}
	tunnels, agents, gateways := m.informers["Tunnel"], m.informers["Agent"], m.informers["Gateway"]
	noRequests := func(api.Object) []reconcile.Request { return nil }
	if cfg.Leases != nil {
		m.leases = reconcile.NewInformer(reconcile.InformerConfig{Kind: api.NodeLeaseKind, Source: cfg.Leases, Logger: log})
	}
	// A status write that only moved lastHeartbeat wakes none of the
	// loops below: none of them would find anything new (see
	// heartbeatOnly). Renewals of leases reach only node-liveness.
	judged := func(ch reconcile.Change) bool { return !heartbeatOnly(ch, now(), lease) }

	ts := reconcile.NewController(reconcile.ControllerConfig{
		Name: "tunnel-status",
		Reconciler: &TunnelStatusReconciler{Store: cfg.Store, Tunnels: tunnels, Agents: agents, Gateways: gateways,
			Leases: m.leases, Lease: lease, Now: now, Logger: log, ControlHostname: cfg.ControlHostname},
		Workers: workers,
		Logger:  log,
	})
	ts.Watch(tunnels, func(obj api.Object) []reconcile.Request { return sharesClaim(tunnels, obj) })
	ts.WatchIf(agents, tunnelsOfAgent(tunnels), judged)
	ts.Watch(gateways, noRequests) // to wait for its sync; the handler below diffs
	gateways.AddHandler(onGatewayChangeForTunnels(tunnels, ts.Enqueue))
	if m.leases != nil {
		// A renewal changes no tunnel's status: a node coming back or
		// going silent does, through its Connected condition.
		ts.Watch(m.leases, noRequests)
	}
	m.controllers["tunnel-status"] = ts

	// One worker: allocations are serialised anyway (see
	// OverlayAllocator), so more would only wait. Across Control replicas
	// only the elected leader will run this loop.
	alloc := &OverlayAllocator{Store: cfg.Store, Agents: agents, Gateways: gateways, Prefix: prefix, Now: now, Logger: log}
	ipam := reconcile.NewController(reconcile.ControllerConfig{
		Name: "overlay-ipam", Reconciler: alloc, Workers: 1, Logger: log,
	})
	for _, inf := range []*reconcile.Informer{agents, gateways} {
		ipam.WatchIf(inf, nil, judged)
		inf.AddHandler(alloc.onRelease(ipam.Enqueue))
	}
	m.controllers["overlay-ipam"] = ipam

	live := &NodeLivenessReconciler{Store: cfg.Store, Agents: agents, Gateways: gateways, Leases: m.leases, Lease: lease, Now: now, Logger: log}
	lc := reconcile.NewController(reconcile.ControllerConfig{
		Name: "node-liveness", Reconciler: live, Workers: workers, Logger: log,
	})
	lc.WatchIf(agents, nil, judged)
	lc.WatchIf(gateways, nil, judged)
	agents.AddHandler(live.onAgentChange(lc.Enqueue))
	gateways.AddHandler(live.onGatewayChange(lc.Enqueue))
	if m.leases != nil {
		lc.Watch(m.leases, noRequests)
		m.leases.AddHandler(live.onLeaseChange(lc.Enqueue))
	}
	m.controllers["node-liveness"] = lc

	gc := &GarbageCollector{Store: cfg.Store, Informers: m.informers, Logger: log}
	gcc := reconcile.NewController(reconcile.ControllerConfig{
		Name: "garbage-collector", Reconciler: gc, Workers: workers, Logger: log,
	})
	for _, inf := range m.informers {
		gcc.WatchIf(inf, gc.requestsFor, judged)
	}
	m.controllers["garbage-collector"] = gcc
	return m
}

// Run runs every informer and controller until ctx is done, then returns
// nil once all of them have stopped. If one of them fails to run, the
// others are stopped and its error is returned.
func (m *Manager) Run(ctx context.Context) error {
	if m.store == nil {
		return errors.New("run controllers: no store")
	}
	if m.configErr != nil {
		return fmt.Errorf("run controllers: %w", m.configErr)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := func(name string, run func(context.Context) error) {
		wg.Go(func() {
			if err := run(ctx); err != nil {
				errOnce.Do(func() { firstErr = fmt.Errorf("run %s: %w", name, err) })
				cancel()
			}
		})
	}
	for kind, inf := range m.informers {
		start(kind+" informer", inf.Run)
	}
	if m.leases != nil {
		start("lease informer", m.leases.Run)
	}
	for name, c := range m.controllers {
		start("controller "+name, c.Run)
	}
	m.log.Info("controllers started", "informers", len(m.informers), "controllers", len(m.controllers))
	<-ctx.Done()
	wg.Wait()
	m.log.Info("controllers stopped")
	return firstErr
}

// kindSource lists and watches one kind of the store for an informer.
type kindSource struct {
	store Store
	kind  string
}

func (s kindSource) List(ctx context.Context) ([]api.Object, int64, error) {
	return s.store.List(ctx, s.kind, api.Selector{})
}

func (s kindSource) Watch(ctx context.Context, fromRev int64) (<-chan reconcile.Event, error) {
	return s.store.Watch(ctx, s.kind, fromRev)
}
