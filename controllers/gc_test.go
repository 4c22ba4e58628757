package controllers

import (
	"context"
	"fmt"
	"testing"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

func agent(name string, meta api.ObjectMeta) *api.Agent {
	meta.Name = name
	return &api.Agent{Metadata: meta}
}

func TestGarbageCollectorReconcile(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// before runs before the informers sync; it creates the object
		// "dep" (an Agent) to collect and whatever it needs.
		before func(t *testing.T, src *reconciletest.Source)
		// stale runs after the informers stopped, to make their caches lag.
		stale       func(t *testing.T, src *reconciletest.Source)
		wantDeleted bool
	}{
		{name: "no owner references: never touched",
			before: func(t *testing.T, src *reconciletest.Source) {
				mustCreate(t, src, agent("dep", api.ObjectMeta{}))
			}},
		{name: "owner alive",
			before: func(t *testing.T, src *reconciletest.Source) {
				o := mustCreate(t, src, tunnel("owner", "o.example.com"))
				mustCreate(t, src, agent("dep", ownedBy(refTo(o))))
			}},
		{name: "owner deleted", wantDeleted: true,
			before: func(t *testing.T, src *reconciletest.Source) {
				o := mustCreate(t, src, tunnel("owner", "o.example.com"))
				mustCreate(t, src, agent("dep", ownedBy(refTo(o))))
				mustDelete(t, src, "Tunnel", "owner")
			}},
		{name: "owner re-created with another uid", wantDeleted: true,
			before: func(t *testing.T, src *reconciletest.Source) {
				o := mustCreate(t, src, tunnel("owner", "o.example.com"))
				mustCreate(t, src, agent("dep", ownedBy(refTo(o))))
				mustDelete(t, src, "Tunnel", "owner")
				mustCreate(t, src, tunnel("owner", "o.example.com"))
			}},
		{name: "one of two owners alive",
			before: func(t *testing.T, src *reconciletest.Source) {
				o1 := mustCreate(t, src, tunnel("one", "one.example.com"))
				o2 := mustCreate(t, src, tunnel("two", "two.example.com"))
				mustCreate(t, src, agent("dep", ownedBy(refTo(o1), refTo(o2))))
				mustDelete(t, src, "Tunnel", "one")
			}},
		{name: "both owners gone", wantDeleted: true,
			before: func(t *testing.T, src *reconciletest.Source) {
				o1 := mustCreate(t, src, tunnel("one", "one.example.com"))
				o2 := mustCreate(t, src, tunnel("two", "two.example.com"))
				mustCreate(t, src, agent("dep", ownedBy(refTo(o1), refTo(o2))))
				mustDelete(t, src, "Tunnel", "one")
				mustDelete(t, src, "Tunnel", "two")
			}},
		{name: "an owner of another kind, gone", wantDeleted: true,
			before: func(t *testing.T, src *reconciletest.Source) {
				g := mustCreate(t, src, &api.Gateway{Metadata: api.ObjectMeta{Name: "gw"}})
				mustCreate(t, src, agent("dep", ownedBy(refTo(g))))
				mustDelete(t, src, "Gateway", "gw")
			}},
		{name: "the cache lags: the owner exists in the store",
			before: func(t *testing.T, src *reconciletest.Source) {
				o := mustCreate(t, src, tunnel("owner", "o.example.com"))
				mustCreate(t, src, agent("dep", ownedBy(refTo(o))))
				mustDelete(t, src, "Tunnel", "owner")
			},
			stale: func(t *testing.T, src *reconciletest.Source) {
				// The dependent is adopted by a live owner the cache has not seen.
				o := mustCreate(t, src, tunnel("owner2", "o2.example.com"))
				dep, _ := src.Get(context.Background(), "Agent", "dep")
				dep.GetMeta().OwnerReferences = append(dep.GetMeta().OwnerReferences, refTo(o))
				if _, err := src.Update(context.Background(), dep); err != nil {
					t.Fatalf("adopt dep: %v", err)
				}
			}},
		{name: "already being deleted: left to its finalizers",
			before: func(t *testing.T, src *reconciletest.Source) {
				o := mustCreate(t, src, tunnel("owner", "o.example.com"))
				meta := ownedBy(refTo(o))
				meta.Finalizers = []string{"example.io/hold"}
				mustCreate(t, src, agent("dep", meta))
				mustDelete(t, src, "Agent", "dep") // only marks it
				mustDelete(t, src, "Tunnel", "owner")
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := reconciletest.NewSource(reconciletest.Config{})
			tt.before(t, src)
			infs, stop := startInformers(t, src)
			if tt.stale != nil {
				stop()
				tt.stale(t, src)
			}
			gc := &GarbageCollector{Store: src, Informers: infs}
			if _, err := gc.Reconcile(ctx, reconcile.Request{Key: api.Key{Kind: "Agent", Name: "dep"}}); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			if got := !exists(t, src, "Agent", "dep"); got != tt.wantDeleted {
				t.Fatalf("dep deleted: got %v, want %v", got, tt.wantDeleted)
			}
		})
	}
}

// TestGarbageCollectorMapsOwnersToDependents checks that a change to an
// owner enqueues the objects that name it, of every kind.
func TestGarbageCollectorMapsOwnersToDependents(t *testing.T) {
	src := reconciletest.NewSource(reconciletest.Config{})
	o := mustCreate(t, src, tunnel("owner", "o.example.com"))
	mustCreate(t, src, agent("dep-a", ownedBy(refTo(o))))
	mustCreate(t, src, &api.Gateway{Metadata: ownedByNamed("dep-g", refTo(o))})
	mustCreate(t, src, agent("other", api.ObjectMeta{}))
	infs, _ := startInformers(t, src)
	gc := &GarbageCollector{Store: src, Informers: infs}
	got := map[string]bool{}
	for _, r := range gc.requestsFor(o) {
		got[r.String()] = true
	}
	want := map[string]bool{"Tunnel/owner": true, "Agent/dep-a": true, "Gateway/dep-g": true}
	if len(got) != len(want) {
		t.Fatalf("requests for the owner: got %v, want %v", got, want)
	}
	for k := range want {
		if !got[k] {
			t.Fatalf("requests for the owner: got %v, want %v", got, want)
		}
	}
}

func ownedByNamed(name string, refs ...api.OwnerReference) api.ObjectMeta {
	m := ownedBy(refs...)
	m.Name = name
	return m
}

// TestOwnersGone covers references that validation keeps out of the store
// today but that objects written by another version could carry.
func TestOwnersGone(t *testing.T) {
	stored := map[string]api.Object{
		"Tunnel/t": &api.Tunnel{Metadata: api.ObjectMeta{Name: "t", UID: "uid-t"}},
	}
	get := func(kind, name string) (api.Object, error) {
		if o, ok := stored[kind+"/"+name]; ok {
			return o, nil
		}
		return nil, fmt.Errorf("%s %q: %w", kind, name, api.ErrNotFound)
	}
	failing := func(string, string) (api.Object, error) { return nil, api.ErrUnavailable }
	ref := func(kind, name, uid string) api.OwnerReference {
		return api.OwnerReference{APIVersion: api.APIVersion, Kind: kind, Name: name, UID: uid}
	}
	tests := []struct {
		name     string
		refs     []api.OwnerReference
		get      func(string, string) (api.Object, error)
		wantGone bool
		wantErr  bool
	}{
		{"no references", nil, get, false, false},
		{"owner with that uid", []api.OwnerReference{ref("Tunnel", "t", "uid-t")}, get, false, false},
		{"owner with another uid", []api.OwnerReference{ref("Tunnel", "t", "uid-old")}, get, true, false},
		{"missing owner", []api.OwnerReference{ref("Tunnel", "x", "uid-x")}, get, true, false},
		{"a reference without uid is held by any owner of that name", []api.OwnerReference{ref("Tunnel", "t", "")}, get, false, false},
		{"kind named by its plural", []api.OwnerReference{ref("tunnels", "t", "uid-t")}, get, false, false},
		{"an unknown kind cannot be checked, so it holds", []api.OwnerReference{ref("Widget", "w", "u")}, get, false, false},
		{"a read error is no verdict", []api.OwnerReference{ref("Tunnel", "t", "uid-t")}, failing, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gone, err := ownersGone(tt.refs, tt.get)
			if gone != tt.wantGone || (err != nil) != tt.wantErr {
				t.Fatalf("ownersGone: got %v, %v; want %v, error %v", gone, err, tt.wantGone, tt.wantErr)
			}
		})
	}
}
