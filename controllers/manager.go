package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// Now is the clock that stamps condition transitions; nil means
	// time.Now.
	Now func() time.Time
}

// Manager runs an informer for every kind and Control's controllers over
// them.
type Manager struct {
	store       Store
	log         *slog.Logger
	informers   map[string]*reconcile.Informer   // by kind; fixed after New
	controllers map[string]*reconcile.Controller // by name; fixed after New
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
	m := &Manager{store: cfg.Store, log: log,
		informers: map[string]*reconcile.Informer{}, controllers: map[string]*reconcile.Controller{}}
	for _, k := range api.Kinds() {
		m.informers[k.Kind] = reconcile.NewInformer(reconcile.InformerConfig{
			Kind:   k.Kind,
			Source: kindSource{store: cfg.Store, kind: k.Kind},
			Resync: resync,
			Logger: log,
		})
	}

	tunnels := m.informers["Tunnel"]
	tunnels.AddIndex(hostnameIndex, indexByHostname)
	ts := reconcile.NewController(reconcile.ControllerConfig{
		Name:       "tunnel-status",
		Reconciler: &TunnelStatusReconciler{Store: cfg.Store, Tunnels: tunnels, Now: now, Logger: log},
		Workers:    workers,
		Logger:     log,
	})
	ts.Watch(tunnels, func(obj api.Object) []reconcile.Request { return sameHostname(tunnels, obj) })
	m.controllers["tunnel-status"] = ts

	gc := &GarbageCollector{Store: cfg.Store, Informers: m.informers, Logger: log}
	gcc := reconcile.NewController(reconcile.ControllerConfig{
		Name: "garbage-collector", Reconciler: gc, Workers: workers, Logger: log,
	})
	for _, inf := range m.informers {
		inf.AddIndex(ownerIndex, indexByOwner)
		gcc.Watch(inf, gc.requestsFor)
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
