package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kakuremichi/kakuremichi/api"
)

// Event is one change seen by Watch.
type Event struct {
	// Type is api.Added, api.Modified, api.Deleted, or api.Error.
	Type api.WatchEventType
	// Object is the object after the change; for Deleted, its last state
	// with ResourceVersion set to the deletion's revision. Nil for Error.
	Object api.Object
	// Old is, for Modified, the object before the change when etcd still
	// had it (nil otherwise), so a filtered watcher can tell that an
	// object stopped matching.
	Old api.Object
	// Revision is the etcd revision of the change; 0 for Error.
	Revision int64
	// Err says why the watch ended, for Error only: it wraps api.ErrGone
	// when the revision asked for was compacted (list again and watch from
	// the list's revision + 1), api.ErrUnavailable when etcd lost its
	// leader or the store was closed.
	Err error
}

// Watch streams the changes to objects of a kind from revision fromRev on
// (0: every change after the call), in revision order, each exactly once. The channel is
// closed when ctx is cancelled, when the store is closed, or after an
// Error event; the caller must either read until it closes or cancel ctx.
// A value that does not decode is logged and skipped. Event.Old is set
// only with WithOld.
func (s *Store) Watch(ctx context.Context, kind string, fromRev int64, opts ...WatchOption) (<-chan Event, error) {
	var wc watchConfig
	for _, o := range opts {
		o(&wc)
	}
	k, err := lookupKind(kind)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", kind, err)
	}
	op := "watch " + k.Plural
	if fromRev < 0 {
		return nil, fmt.Errorf("%s: %w: revision %d is negative", op, api.ErrBadRequest, fromRev)
	}
	select {
	case <-s.done:
		return nil, fmt.Errorf("%s: %w: the store is closed", op, api.ErrUnavailable)
	default:
	}
	if fromRev == 0 {
		// etcd's "from now" is when its watcher is set up, which happens
		// after Watch would have returned: a write made in between would
		// be missed. Pinning the revision makes "now" the call itself.
		rev, err := s.Revision(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		fromRev = rev + 1
	}
	prefix := s.kindPrefix(k)
	return watchPrefix(ctx, s, op, prefix, fromRev, []clientv3.OpOption{clientv3.WithPrevKV()},
		func(e *clientv3.Event) (Event, bool) { return s.event(k, prefix, e, wc.old) },
		func(err error) Event { return Event{Type: api.Error, Err: err} }), nil
}

// watchPrefix runs an etcd watch of every key under prefix from fromRev
// and delivers what conv makes of each event, until ctx ends, the store
// closes, or the watch fails; a failure (a compacted fromRev wraps
// api.ErrGone) is delivered as errEvent before the channel closes. The
// goroutine it starts is owned by ctx and the store.
func watchPrefix[E any](ctx context.Context, s *Store, op, prefix string, fromRev int64, opts []clientv3.OpOption,
	conv func(*clientv3.Event) (E, bool), errEvent func(error) E) <-chan E {
	opts = append([]clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(fromRev)}, opts...)
	// WithRequireLeader makes a member cut off from its cluster end the
	// watch instead of silently serving nothing.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.client.Watch(wctx, prefix, opts...)
	out := make(chan E)
	go func() {
		defer close(out)
		defer cancel()
		// send delivers ev unless the watch is being abandoned.
		send := func(ev E) bool {
			select {
			case out <- ev:
				return true
			case <-ctx.Done():
				return false
			case <-s.done:
				return false
			}
		}
		fail := func(err error) { send(errEvent(err)) }
		for {
			var resp clientv3.WatchResponse
			var ok bool
			select {
			case resp, ok = <-wch:
			case <-ctx.Done():
				return
			case <-s.done:
				return
			}
			if !ok {
				if ctx.Err() == nil {
					fail(fmt.Errorf("%s: %w: the watch was closed", op, api.ErrUnavailable))
				}
				return
			}
			if resp.CompactRevision != 0 {
				fail(fmt.Errorf("%s from revision %d: %w (history starts at %d)", op, fromRev, api.ErrGone, resp.CompactRevision))
				return
			}
			if err := resp.Err(); err != nil {
				if ctx.Err() == nil {
					fail(s.mapErr(op, err))
				}
				return
			}
			for _, e := range resp.Events {
				ev, ok := conv(e)
				if !ok {
					continue
				}
				if !send(ev) {
					return
				}
			}
		}
	}()
	return out
}

// event converts an etcd event; false means it was skipped.
// WatchOption changes what Watch delivers.
type WatchOption func(*watchConfig)

type watchConfig struct {
	old bool
}

// WithOld has Watch set Event.Old. Each modification then costs a second
// decode, of the object as it was: informers, which keep their own copy,
// do without, and a node's status can be hundreds of KB.
func WithOld() WatchOption { return func(c *watchConfig) { c.old = true } }

func (s *Store) event(k api.KindInfo, prefix string, e *clientv3.Event, withOld bool) (Event, bool) {
	rev := e.Kv.ModRevision
	switch e.Type {
	case mvccpb.PUT:
		obj, err := s.decode(k, e.Kv)
		if err != nil {
			s.log.Error("watch: skipping a stored object that does not decode", "key", string(e.Kv.Key), "revision", rev, "err", err)
			return Event{}, false
		}
		if e.IsCreate() {
			return Event{Type: api.Added, Object: obj, Revision: rev}, true
		}
		ev := Event{Type: api.Modified, Object: obj, Revision: rev}
		if withOld && e.PrevKv != nil {
			if old, err := s.decode(k, e.PrevKv); err == nil {
				ev.Old = old
			}
		}
		return ev, true
	case mvccpb.DELETE:
		var obj api.Object
		if e.PrevKv != nil {
			var err error
			if obj, err = s.decode(k, e.PrevKv); err != nil {
				s.log.Error("watch: the last state of a deleted object does not decode", "key", string(e.Kv.Key), "revision", rev, "err", err)
				obj = nil
			}
		}
		if obj == nil {
			// The previous value is gone (compacted, or undecodable):
			// the key still says which object was deleted.
			obj = k.New()
			obj.GetMeta().Name = strings.TrimPrefix(string(e.Kv.Key), prefix)
		}
		obj.GetMeta().ResourceVersion = strconv.FormatInt(rev, 10)
		return Event{Type: api.Deleted, Object: obj, Revision: rev}, true
	}
	return Event{}, false
}
