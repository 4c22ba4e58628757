package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// TestLeasesAreReadAsLastHeartbeat checks that Get and List report a
// node's lease as its status.lastHeartbeat when the lease is later than
// the status's, that a lease older than the node (a deleted namesake's)
// is not its, that deleting a node deletes its lease, and that only
// nodes have leases.
func TestLeasesAreReadAsLastHeartbeat(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	ag := mustCreate(t, s, &api.Agent{Metadata: api.ObjectMeta{Name: "home"}}).(*api.Agent)
	mustCreate(t, s, &api.Agent{Metadata: api.ObjectMeta{Name: "home2"}})
	gw := mustCreate(t, s, &api.Gateway{Metadata: api.ObjectMeta{Name: "home"}}).(*api.Gateway)
	beat := func(obj api.Object) *time.Time {
		switch n := obj.(type) {
		case *api.Agent:
			return n.Status.LastHeartbeat
		case *api.Gateway:
			return n.Status.LastHeartbeat
		}
		t.Fatalf("%T is not a node", obj)
		return nil
	}
	get := func(kind, name string) *time.Time {
		t.Helper()
		obj, err := s.Get(ctx, kind, name)
		if err != nil {
			t.Fatal(err)
		}
		return beat(obj)
	}
	list := func(kind string) map[string]*time.Time {
		t.Helper()
		objs, _, err := s.List(ctx, kind, api.Selector{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*time.Time{}
		for _, o := range objs {
			out[o.GetMeta().Name] = beat(o)
		}
		return out
	}
	if b := get("Agent", "home"); b != nil {
		t.Fatalf("an agent never heard from: lastHeartbeat %v, want none", b)
	}

	// The status says one time, the lease a later one: the lease wins.
	statusBeat := ag.Metadata.CreationTimestamp.Add(time.Second)
	ag.Status.LastHeartbeat = &statusBeat
	if _, err := s.UpdateStatus(ctx, ag, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	renewed := statusBeat.Add(30 * time.Second)
	if err := s.RenewLease(ctx, "Agent", "home", renewed); err != nil {
		t.Fatal(err)
	}
	if err := s.RenewLease(ctx, "Gateway", "home", renewed.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if b := get("Agent", "home"); b == nil || !b.Equal(renewed) {
		t.Fatalf("get agent home: lastHeartbeat %v, want the lease's %v", b, renewed)
	}
	if b := get("Gateway", "home"); b == nil || !b.Equal(renewed.Add(time.Second)) {
		t.Fatalf("get gateway home: lastHeartbeat %v, want its own lease's %v", b, renewed.Add(time.Second))
	}
	got := list("Agent")
	if b := got["home"]; b == nil || !b.Equal(renewed) {
		t.Fatalf("list agents: home's lastHeartbeat %v, want %v", b, renewed)
	}
	if b := got["home2"]; b != nil {
		t.Fatalf("list agents: home2, never heard from, has lastHeartbeat %v", b)
	}

	// An older lease leaves the status's time.
	if err := s.RenewLease(ctx, "Agent", "home", statusBeat.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if b := get("Agent", "home"); b == nil || !b.Equal(statusBeat) {
		t.Fatalf("with an older lease: lastHeartbeat %v, want the status's %v", b, statusBeat)
	}

	// Deleting the gateway deletes its lease; a new gateway of the same
	// name is not heard from until its own heartbeat.
	if _, err := s.Delete(ctx, "Gateway", "home", DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GetSecret(ctx, LeasePrefix+"gateways/home"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("the deleted gateway's lease: got %v, want it gone", err)
	}
	if err := s.RenewLease(ctx, "Gateway", "home", gw.Metadata.CreationTimestamp); err != nil {
		t.Fatal(err) // as a bridge might, just after the delete
	}
	time.Sleep(1100 * time.Millisecond) // creation times are whole seconds
	mustCreate(t, s, &api.Gateway{Metadata: api.ObjectMeta{Name: "home"}})
	if b := get("Gateway", "home"); b != nil {
		t.Fatalf("a new gateway named like a deleted one: lastHeartbeat %v from the old one's lease, want none", b)
	}

	if err := s.RenewLease(ctx, "Tunnel", "web", renewed); !errors.Is(err, api.ErrBadRequest) {
		t.Fatalf("renew the lease of a tunnel: got %v, want a bad request", err)
	}
	if err := s.RenewLease(ctx, "Agent", "../x", renewed); err == nil {
		t.Fatal("renew the lease of an agent named ../x: got no error")
	}
}

// TestRenewLeasesInBatches: 300 renewals at once are all written, in a
// few transactions (one store revision each) rather than one per node;
// one that names no node is reported, and the rest still written.
func TestRenewLeasesInBatches(t *testing.T) {
	s := openTestStore(t, Config{})
	ctx := testContext(t)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var rs []LeaseRenewal
	for i := range 300 {
		rs = append(rs, LeaseRenewal{Kind: "Agent", Name: fmt.Sprintf("a%03d", i), At: at.Add(time.Duration(i) * time.Second)})
	}
	rs = append(rs, LeaseRenewal{Kind: "Tunnel", Name: "web", At: at})
	before, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RenewLeases(ctx, rs); !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), `Tunnel "web"`) {
		t.Fatalf("RenewLeases with a tunnel among agents: %v; want a bad request naming it", err)
	}
	after, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := after - before; got != 3 {
		t.Fatalf("300 renewals took %d store revisions; want 3 (128 per transaction)", got)
	}
	for i := range 300 {
		v, _, err := s.GetSecret(ctx, LeasePrefix+fmt.Sprintf("agents/a%03d", i))
		if err != nil {
			t.Fatalf("lease of a%03d: %v", i, err)
		}
		if got, err := renewTime(v); err != nil || !got.Equal(rs[i].At) {
			t.Fatalf("lease of a%03d: %v %v; want %v", i, got, err, rs[i].At)
		}
	}
}
