package reconcile

import (
	"context"
	"errors"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// ListerWatcher is a source of objects of one kind for an Informer. The
// store and the REST client both implement it (through a small adapter
// that fixes the kind).
type ListerWatcher interface {
	// List returns every object of the kind and the revision they were
	// read at.
	List(ctx context.Context) (objs []api.Object, rev int64, err error)
	// Watch streams the changes with a revision >= fromRev, in revision
	// order. The channel is closed when ctx is cancelled or after an Error
	// event; an Error event wrapping api.ErrGone means fromRev was
	// compacted and the caller must list again.
	Watch(ctx context.Context, fromRev int64) (<-chan Event, error)
}

// Event is one change delivered by a ListerWatcher's watch.
type Event struct {
	// Type is api.Added, api.Modified, api.Deleted, api.Bookmark or
	// api.Error.
	Type api.WatchEventType
	// Object is the object after the change; for Deleted, its last state.
	// Nil for Bookmark and Error.
	Object api.Object
	// Revision is the store revision of the change (for Bookmark, the
	// revision the watch has caught up to); 0 for Error.
	Revision int64
	// Err says why the watch ended, for Error only. When it wraps
	// api.ErrGone the revision asked for was compacted: relist.
	Err error
}

// Request asks a Reconciler to converge one object. It carries only the
// object's key: the reconciler reads the current state itself, so many
// changes to one object collapse into one reconcile.
type Request struct {
	Key api.Key
}

// String returns the key as "kind/name".
func (r Request) String() string { return r.Key.String() }

// RequestFor returns the request for obj's own key.
func RequestFor(obj api.Object) Request { return Request{Key: api.KeyOf(obj)} }

// Result tells the Controller what to do after a successful reconcile.
type Result struct {
	// RequeueAfter, when positive, asks for another reconcile of the same
	// key after this long, for state that changes with time (an expiry, a
	// heartbeat timeout). Zero means "done until the object changes".
	RequeueAfter time.Duration
}

// Reconciler converges the world to the desired state of one object.
// It must be idempotent and safe to call again at any time; a Controller
// never calls it concurrently for the same Request.
type Reconciler interface {
	Reconcile(ctx context.Context, req Request) (Result, error)
}

// ReconcilerFunc adapts a function to the Reconciler interface.
type ReconcilerFunc func(ctx context.Context, req Request) (Result, error)

// Reconcile calls f.
func (f ReconcilerFunc) Reconcile(ctx context.Context, req Request) (Result, error) {
	return f(ctx, req)
}

// terminalError marks an error that retrying cannot fix.
type terminalError struct{ err error }

func (e terminalError) Error() string { return "terminal: " + e.err.Error() }
func (e terminalError) Unwrap() error { return e.err }

// Terminal marks err as one that retrying cannot fix (a spec that can
// never be satisfied): the Controller logs it and does not requeue the
// key; the next change to the object will bring it back. Terminal(nil) is
// nil. errors.Is and errors.As still see err through the mark.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return terminalError{err: err}
}

// IsTerminal reports whether err, or any error it wraps, was marked by
// Terminal.
func IsTerminal(err error) bool {
	var t terminalError
	return errors.As(err, &t)
}

// Relay returns a channel of the events conv makes of in's, for a
// ListerWatcher built on another source: conv returns false to drop one.
// The channel closes when in does. When ctx ends first, the relay stops
// sending and drains in, so that its source is never blocked on an
// abandoned watch; the relay goroutine is owned by ctx and in.
func Relay[E any](ctx context.Context, in <-chan E, conv func(E) (Event, bool)) <-chan Event {
	out := make(chan Event)
	go func() {
		defer close(out)
		for e := range in {
			ev, ok := conv(e)
			if !ok {
				continue
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				for range in {
				}
				return
			}
		}
	}()
	return out
}
