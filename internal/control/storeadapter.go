package control

import (
	"context"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/store"
)

// storeAdapter gives the store the shape controllers and informers use:
// writes without option structs, and watches as reconcile events.
type storeAdapter struct {
	st *store.Store
}

func (a storeAdapter) Get(ctx context.Context, kind, name string) (api.Object, error) {
	return a.st.Get(ctx, kind, name)
}

func (a storeAdapter) List(ctx context.Context, kind string, sel api.Selector) ([]api.Object, int64, error) {
	return a.st.List(ctx, kind, sel)
}

func (a storeAdapter) UpdateStatus(ctx context.Context, obj api.Object) (api.Object, error) {
	return a.st.UpdateStatus(ctx, obj, store.WriteOptions{})
}

func (a storeAdapter) Delete(ctx context.Context, kind, name, resourceVersion string) (api.Object, error) {
	return a.st.Delete(ctx, kind, name, store.DeleteOptions{ResourceVersion: resourceVersion})
}

// Watch relays the store's events until the store closes its channel or
// ctx ends; the relay goroutine is owned by ctx.
func (a storeAdapter) Watch(ctx context.Context, kind string, fromRev int64) (<-chan reconcile.Event, error) {
	in, err := a.st.Watch(ctx, kind, fromRev)
	if err != nil {
		return nil, err
	}
	return reconcile.Relay(ctx, in, func(ev store.Event) (reconcile.Event, bool) {
		return reconcile.Event{Type: ev.Type, Object: ev.Object, Revision: ev.Revision, Err: ev.Err}, true
	}), nil
}

// source fixes the kind, making the adapter a reconcile.ListerWatcher.
type source struct {
	a    storeAdapter
	kind string
}

func (s source) List(ctx context.Context) ([]api.Object, int64, error) {
	return s.a.List(ctx, s.kind, api.Selector{})
}

func (s source) Watch(ctx context.Context, fromRev int64) (<-chan reconcile.Event, error) {
	return s.a.Watch(ctx, s.kind, fromRev)
}
