// Package secretsource lists and watches values the store keeps beside the
// resources (store secrets) as objects, so that an informer can cache
// them: the certificates and challenges the watch bridge delivers, and
// the nodes' leases Control's liveness loop reads.
package secretsource

import (
	"context"
	"strconv"
	"strings"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/store"
)

// Source is a reconcile.ListerWatcher over the secrets whose names start
// with Prefix.
type Source struct {
	// Store holds the secrets. Required.
	Store *store.Store
	// Prefix selects the secrets; the names given to Decode and Gone have
	// it cut off.
	Prefix string
	// Decode turns a secret's value, written at rev, into its object. A
	// value it refuses is skipped: one bad value must not hide the rest.
	Decode func(name string, value []byte, rev int64) (api.Object, error)
	// Gone returns the object a Deleted event carries for name.
	Gone func(name string) api.Object
}

var _ reconcile.ListerWatcher = Source{}

// List implements reconcile.ListerWatcher.
func (s Source) List(ctx context.Context) ([]api.Object, int64, error) {
	secrets, rev, err := s.Store.ListSecrets(ctx, s.Prefix)
	if err != nil {
		return nil, 0, err
	}
	out := make([]api.Object, 0, len(secrets))
	for _, sec := range secrets {
		obj, err := s.Decode(strings.TrimPrefix(sec.Name, s.Prefix), sec.Value, sec.Revision)
		if err != nil {
			continue
		}
		out = append(out, obj)
	}
	return out, rev, nil
}

// Watch implements reconcile.ListerWatcher; the relay goroutine ends with
// ctx or with the store's channel.
func (s Source) Watch(ctx context.Context, fromRev int64) (<-chan reconcile.Event, error) {
	in, err := s.Store.WatchSecrets(ctx, s.Prefix, fromRev)
	if err != nil {
		return nil, err
	}
	return reconcile.Relay(ctx, in, func(ev store.SecretEvent) (reconcile.Event, bool) {
		rev := ev.Revision
		name := strings.TrimPrefix(ev.Name, s.Prefix)
		switch ev.Type {
		case api.Error:
			return reconcile.Event{Type: api.Error, Err: ev.Err}, true
		case api.Deleted:
			obj := s.Gone(name)
			obj.GetMeta().ResourceVersion = strconv.FormatInt(rev, 10)
			return reconcile.Event{Type: api.Deleted, Revision: rev, Object: obj}, true
		}
		obj, err := s.Decode(name, ev.Value, rev)
		if err != nil {
			return reconcile.Event{}, false
		}
		return reconcile.Event{Type: ev.Type, Revision: rev, Object: obj}, true
	}), nil
}

// Leases is the source of the nodes' leases (api.NodeLease) the bridge
// renews, named "agents/<name>" and "gateways/<name>".
func Leases(st *store.Store) Source {
	return Source{Store: st, Prefix: store.LeasePrefix, Decode: store.DecodeLease,
		Gone: func(name string) api.Object { return store.NewLease(name) }}
}
