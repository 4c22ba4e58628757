package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
)

// ownerIndex names every informer's index of objects by the owners they
// reference ("Kind/name").
const ownerIndex = "owner"

func ownerKey(kind, name string) string {
	if k, ok := api.LookupKind(kind); ok {
		kind = k.Kind
	}
	return kind + "/" + name
}

func indexByOwner(obj api.Object) []string {
	refs := obj.GetMeta().OwnerReferences
	out := make([]string, 0, len(refs))
	for _, ref := range refs {
		out = append(out, ownerKey(ref.Kind, ref.Name))
	}
	return out
}

// GarbageCollector deletes objects whose owners are all gone. An owner is
// gone when no object of its kind and name exists, or when the one that
// exists has another uid (it was deleted and re-created: the new
// incarnation does not adopt its predecessor's dependents). An owner
// reference without a uid is satisfied by any object of that name. An
// owner of a kind this Control does not serve is never considered gone,
// since it cannot be checked. Objects without owner references, and
// objects already being deleted, are never touched.
//
// The decision is taken on the informers' caches and confirmed by reading
// the object and its owners from the store before deleting, since a cache
// can lag; the delete carries the object's resourceVersion, so an object
// that changed since (say, a new owner was added) is not deleted.
type GarbageCollector struct {
	// Store is read to confirm and written to delete. Required.
	Store Store
	// Informers holds a synced informer for every kind, each with the
	// owner index (New sets them up). Required.
	Informers map[string]*reconcile.Informer
	// Logger receives the collector's logs; nil discards them.
	Logger *slog.Logger
}

// requestsFor maps an object to itself (is it garbage?) and to every
// object that names it as an owner (are they garbage now?).
func (g *GarbageCollector) requestsFor(obj api.Object) []reconcile.Request {
	reqs := []reconcile.Request{reconcile.RequestFor(obj)}
	key := ownerKey(obj.GetTypeMeta().Kind, obj.GetMeta().Name)
	for _, inf := range g.Informers {
		for _, dep := range inf.ByIndex(ownerIndex, key) {
			reqs = append(reqs, reconcile.RequestFor(dep))
		}
	}
	return reqs
}

// Reconcile deletes the object of req if all its owners are gone.
func (g *GarbageCollector) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	inf, ok := g.Informers[req.Key.Kind]
	if !ok {
		return reconcile.Result{}, reconcile.Terminal(fmt.Errorf("collect %s: no informer for kind %q", req, req.Key.Kind))
	}
	cached, ok := inf.Get(req.Key.Name)
	if !ok || !isCandidate(cached) {
		return reconcile.Result{}, nil
	}
	gone, err := ownersGone(cached.GetMeta().OwnerReferences, g.fromCache)
	if err != nil || !gone {
		return reconcile.Result{}, err
	}

	live, err := g.Store.Get(ctx, req.Key.Kind, req.Key.Name)
	if errors.Is(err, api.ErrNotFound) {
		return reconcile.Result{}, nil
	}
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("collect %s: %w", req, err)
	}
	if !isCandidate(live) {
		return reconcile.Result{}, nil
	}
	refs := live.GetMeta().OwnerReferences
	gone, err = ownersGone(refs, func(kind, name string) (api.Object, error) {
		return g.Store.Get(ctx, kind, name)
	})
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("collect %s: confirm its owners are gone: %w", req, err)
	}
	if !gone {
		return reconcile.Result{}, nil // the cache lagged; it will catch up
	}
	rv := live.GetMeta().ResourceVersion
	if _, err := g.Store.Delete(ctx, req.Key.Kind, req.Key.Name, rv); err != nil {
		if errors.Is(err, api.ErrNotFound) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("collect %s: %w", req, err)
	}
	if g.Logger != nil {
		g.Logger.Info("deleted an object whose owners are gone", "object", req.String(), "owners", describeRefs(refs))
	}
	return reconcile.Result{}, nil
}

// isCandidate reports whether obj could be garbage: it has owners and is
// not already on its way out.
func isCandidate(obj api.Object) bool {
	m := obj.GetMeta()
	return len(m.OwnerReferences) > 0 && m.DeletionTimestamp == nil
}

// fromCache reads an object from the informers, as Store.Get would.
func (g *GarbageCollector) fromCache(kind, name string) (api.Object, error) {
	inf := g.Informers[kind]
	if inf == nil {
		return nil, fmt.Errorf("no informer for kind %q", kind)
	}
	if obj, ok := inf.Get(name); ok {
		return obj, nil
	}
	return nil, fmt.Errorf("%s %q: %w", kind, name, api.ErrNotFound)
}

// ownersGone reports whether every owner refs names is gone, reading each
// with get (which returns an error wrapping api.ErrNotFound for a missing
// object).
func ownersGone(refs []api.OwnerReference, get func(kind, name string) (api.Object, error)) (bool, error) {
	if len(refs) == 0 {
		return false, nil
	}
	for _, ref := range refs {
		k, ok := api.LookupKind(ref.Kind)
		if !ok {
			return false, nil // cannot be checked, so never presumed gone
		}
		owner, err := get(k.Kind, ref.Name)
		switch {
		case errors.Is(err, api.ErrNotFound):
			continue
		case err != nil:
			return false, fmt.Errorf("read owner %s %q: %w", k.Kind, ref.Name, err)
		case ref.UID == "" || owner.GetMeta().UID == ref.UID:
			return false, nil
		}
	}
	return true, nil
}

func describeRefs(refs []api.OwnerReference) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = fmt.Sprintf("%s/%s (uid %s)", r.Kind, r.Name, r.UID)
	}
	return out
}
