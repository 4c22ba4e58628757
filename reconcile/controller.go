package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/kakuremichi/kakuremichi/api"
)

// ControllerConfig configures NewController.
type ControllerConfig struct {
	// Name names the controller in logs. Zero means "controller".
	Name string
	// Reconciler is called for every queued key. Required.
	Reconciler Reconciler
	// Workers is how many keys are reconciled at once (never the same key
	// twice). Zero means 1.
	Workers int
	// Backoff paces the retries of failed reconciles, per key. The zero
	// value doubles from 5 ms up to 30 s.
	Backoff Backoff
	// Logger receives the controller's logs; nil discards them.
	Logger *slog.Logger
}

// Controller feeds the keys of changed objects to a Reconciler, as in
// kubernetes' sample-controller: take a key, reconcile it, Forget it on
// success, requeue it with backoff on error, never on a Terminal error,
// and after Result.RequeueAfter when asked.
type Controller struct {
	name    string
	rec     Reconciler
	workers int
	log     *slog.Logger
	queue   *Queue

	mu        sync.Mutex // guards informers
	informers []*Informer
	ran       atomic.Bool
}

// NewController returns a controller; nothing is reconciled until Run.
func NewController(cfg ControllerConfig) *Controller {
	name := cfg.Name
	if name == "" {
		name = "controller"
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = 1
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Controller{
		name:    name,
		rec:     cfg.Reconciler,
		workers: workers,
		log:     log.With("controller", name),
		queue:   NewQueue(QueueConfig{Backoff: cfg.Backoff}),
	}
}

// Watch enqueues the requests mapFunc returns for every object inf
// reports as changed; for a modification, for both the old and the new
// state, so that a change of a field that mapFunc reads reaches the keys
// it pointed at before as well as after. A nil mapFunc enqueues the
// object's own key. Call Watch before Run: Run waits for the informers
// watched by then to sync.
func (c *Controller) Watch(inf *Informer, mapFunc func(api.Object) []Request) {
	c.WatchIf(inf, mapFunc, nil)
}

// WatchIf is Watch for the changes keep accepts; a nil keep accepts
// every change. A loop that reads only part of an object uses it to pass
// over changes to the rest: a status written on every heartbeat would
// otherwise wake it each time for nothing.
func (c *Controller) WatchIf(inf *Informer, mapFunc func(api.Object) []Request, keep func(Change) bool) {
	if mapFunc == nil {
		mapFunc = func(obj api.Object) []Request { return []Request{RequestFor(obj)} }
	}
	c.mu.Lock()
	c.informers = append(c.informers, inf)
	c.mu.Unlock()
	inf.AddHandler(func(ch Change) {
		if keep != nil && !keep(ch) {
			return
		}
		if ch.New != nil {
			for _, r := range mapFunc(ch.New) {
				c.queue.Add(r)
			}
		}
		if ch.Old != nil && ch.Old != ch.New {
			for _, r := range mapFunc(ch.Old) {
				c.queue.Add(r)
			}
		}
	})
}

// Enqueue asks for a reconcile of r, for triggers that are not informer
// changes.
func (c *Controller) Enqueue(r Request) { c.queue.Add(r) }

// Run waits for the watched informers to sync, then reconciles with the
// configured number of workers until ctx is done. It returns nil once
// every worker has stopped; a reconcile in progress is given ctx, which is
// then cancelled, and finishes first. A controller runs once.
func (c *Controller) Run(ctx context.Context) error {
	if c.rec == nil {
		return fmt.Errorf("run controller %s: no reconciler", c.name)
	}
	if !c.ran.CompareAndSwap(false, true) {
		return fmt.Errorf("run controller %s: it already ran", c.name)
	}
	defer c.queue.ShutDown()
	c.mu.Lock()
	informers := append([]*Informer(nil), c.informers...)
	c.mu.Unlock()
	for _, inf := range informers {
		if err := inf.WaitForSync(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // asked to stop before we started
			}
			return fmt.Errorf("run controller %s: %w", c.name, err)
		}
	}
	c.log.Info("started", "workers", c.workers)
	var wg sync.WaitGroup
	for range c.workers {
		wg.Go(func() {
			for {
				r, ok := c.queue.Get()
				if !ok {
					return
				}
				c.process(ctx, r)
			}
		})
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	c.log.Info("stopped")
	return nil
}

// process reconciles one key and decides whether and when it comes back.
func (c *Controller) process(ctx context.Context, r Request) {
	defer c.queue.Done(r)
	if ctx.Err() != nil {
		return // draining after shutdown: the next start lists everything again
	}
	res, err := c.reconcile(ctx, r)
	switch {
	case err != nil && ctx.Err() != nil:
		// Cancelled under our feet: not a failure worth reporting.
	case IsTerminal(err):
		c.log.Error("reconcile failed; not retrying until the object changes", "key", r, "err", err)
		c.queue.Forget(r)
	case err != nil:
		level := slog.LevelWarn
		if errors.Is(err, api.ErrConflict) {
			level = slog.LevelDebug // someone wrote in between: routine
		}
		c.log.Log(ctx, level, "reconcile failed; retrying", "key", r, "err", err,
			"retries", c.queue.NumRequeues(r))
		c.queue.AddRateLimited(r)
	case res.RequeueAfter > 0:
		c.queue.Forget(r)
		c.queue.AddAfter(r, res.RequeueAfter)
	default:
		c.queue.Forget(r)
	}
}

// reconcile calls the Reconciler, turning a panic into an error so that
// one bad object cannot take every loop of the process down.
func (c *Controller) reconcile(ctx context.Context, r Request) (res Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("reconcile panicked", "key", r, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("reconcile %s: panic: %v", r, p)
		}
	}()
	return c.rec.Reconcile(ctx, r)
}
