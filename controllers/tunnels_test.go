package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

func TestTunnelStatusReconcile(t *testing.T) {
	type tun struct {
		name, host string
		disabled   bool
		after      time.Duration // created this long after the previous one
	}
	type want struct {
		avail, availReason string
		ready, readyReason string
		msgHas             string // in the Ready message
	}
	tests := []struct {
		name    string
		tunnels []tun
		target  string
		want    want
	}{
		{"a lone tunnel owns its hostname",
			[]tun{{name: "a", host: "a.example.com"}}, "a",
			want{"True", api.ReasonHostnameClaimed, "True", api.ReasonReady, "ready"}},
		{"the older tunnel owns it, whatever the names",
			[]tun{{name: "zeta", host: "x.example.com"}, {name: "alpha", host: "x.example.com", after: time.Minute}}, "zeta",
			want{"True", api.ReasonHostnameClaimed, "True", api.ReasonReady, "ready"}},
		{"the newer one conflicts and is told who owns it",
			[]tun{{name: "zeta", host: "x.example.com"}, {name: "alpha", host: "x.example.com", after: time.Minute}}, "alpha",
			want{"False", api.ReasonHostnameConflict, "False", api.ReasonHostnameConflict, `tunnel "zeta"`}},
		{"created in the same second: the name decides",
			[]tun{{name: "b", host: "x.example.com"}, {name: "a", host: "x.example.com"}}, "b",
			want{"False", api.ReasonHostnameConflict, "False", api.ReasonHostnameConflict, `tunnel "a"`}},
		{"a disabled owner keeps its hostname",
			[]tun{{name: "old", host: "x.example.com", disabled: true}, {name: "new", host: "x.example.com", after: time.Minute}}, "new",
			want{"False", api.ReasonHostnameConflict, "False", api.ReasonHostnameConflict, `tunnel "old"`}},
		{"a disabled owner is not ready",
			[]tun{{name: "old", host: "x.example.com", disabled: true}, {name: "new", host: "x.example.com", after: time.Minute}}, "old",
			want{"True", api.ReasonHostnameClaimed, "False", api.ReasonDisabled, "disabled"}},
		{"a disabled loser reports being disabled first",
			[]tun{{name: "old", host: "x.example.com"}, {name: "new", host: "x.example.com", disabled: true, after: time.Minute}}, "new",
			want{"False", api.ReasonHostnameConflict, "False", api.ReasonDisabled, "disabled"}},
		{"other hostnames do not conflict",
			[]tun{{name: "a", host: "a.example.com"}, {name: "b", host: "b.example.com", after: time.Minute}}, "b",
			want{"True", api.ReasonHostnameClaimed, "True", api.ReasonReady, "ready"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
			for _, tn := range tt.tunnels {
				clk.Advance(tn.after)
				obj := tunnel(tn.name, tn.host)
				if tn.disabled {
					f := false
					obj.Spec.Enabled = &f
				}
				mustCreate(t, src, obj)
			}
			var names []string
			for _, tn := range tt.tunnels {
				names = append(names, tn.name)
			}
			healthyFleet(t, src, clk, names...)
			infs, _ := startInformers(t, src)
			r := &TunnelStatusReconciler{Store: src, Tunnels: infs["Tunnel"], Agents: infs["Agent"], Gateways: infs["Gateway"], Now: clk.Now}
			req := reconcile.Request{Key: api.Key{Kind: "Tunnel", Name: tt.target}}
			if _, err := r.Reconcile(context.Background(), req); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			got := getTunnel(t, src, tt.target)
			avail, ready := condition(got, api.TunnelHostnameAvailable), condition(got, api.ConditionReady)
			if string(avail.Status) != tt.want.avail || avail.Reason != tt.want.availReason {
				t.Errorf("HostnameAvailable: got %s/%s, want %s/%s", avail.Status, avail.Reason, tt.want.avail, tt.want.availReason)
			}
			if string(ready.Status) != tt.want.ready || ready.Reason != tt.want.readyReason {
				t.Errorf("Ready: got %s/%s, want %s/%s", ready.Status, ready.Reason, tt.want.ready, tt.want.readyReason)
			}
			if !strings.Contains(ready.Message, tt.want.msgHas) {
				t.Errorf("Ready message: got %q, want it to contain %q", ready.Message, tt.want.msgHas)
			}
			if got.Status.ObservedGeneration != got.Metadata.Generation || ready.ObservedGeneration != got.Metadata.Generation {
				t.Errorf("observedGeneration: got status %d, Ready %d, want %d",
					got.Status.ObservedGeneration, ready.ObservedGeneration, got.Metadata.Generation)
			}
		})
	}
}

// TestTunnelStatusWritesOnlyChanges checks that an unchanged status is
// not written again, and that lastTransitionTime stays put when only the
// generation moves.
func TestTunnelStatusWritesOnlyChanges(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	mustCreate(t, src, tunnel("a", "a.example.com"))
	healthyFleet(t, src, clk, "a")
	infs, _ := startInformers(t, src)
	r := &TunnelStatusReconciler{Store: src, Tunnels: infs["Tunnel"], Agents: infs["Agent"], Gateways: infs["Gateway"],
		Lease: 24 * time.Hour, Now: clk.Now} // the clock moves an hour, the fleet stays connected
	req := reconcile.Request{Key: api.Key{Kind: "Tunnel", Name: "a"}}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	first := getTunnel(t, src, "a")
	t0 := condition(first, api.ConditionReady).LastTransitionTime
	waitCached(t, infs["Tunnel"], first)

	clk.Advance(time.Hour)
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatalf("second Reconcile: %v", err)
	}
	if got := getTunnel(t, src, "a").Metadata.ResourceVersion; got != first.Metadata.ResourceVersion {
		t.Fatalf("resourceVersion after a reconcile with nothing to change: got %s, want %s (no write)", got, first.Metadata.ResourceVersion)
	}

	first.Spec.Target = "http://localhost:9090"
	updated, err := src.Update(ctx, first)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	waitCached(t, infs["Tunnel"], updated)
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatalf("Reconcile after the spec change: %v", err)
	}
	got := getTunnel(t, src, "a")
	ready := condition(got, api.ConditionReady)
	if got.Status.ObservedGeneration != 2 || ready.ObservedGeneration != 2 {
		t.Fatalf("observedGeneration after the spec change: got status %d, Ready %d, want 2", got.Status.ObservedGeneration, ready.ObservedGeneration)
	}
	if !ready.LastTransitionTime.Equal(t0) {
		t.Fatalf("Ready lastTransitionTime without a flip: got %v, want %v", ready.LastTransitionTime, t0)
	}
}

// TestTunnelStatusConflictIsReturned checks that a write based on a stale
// cache fails with a conflict, so the key is retried on fresh state.
func TestTunnelStatusConflictIsReturned(t *testing.T) {
	ctx := context.Background()
	src := reconciletest.NewSource(reconciletest.Config{})
	mustCreate(t, src, tunnel("a", "a.example.com"))
	infs, stop := startInformers(t, src)
	stop() // the cache now misses the next write
	a := getTunnel(t, src, "a")
	a.Metadata.Labels = map[string]string{"team": "web"}
	if _, err := src.Update(ctx, a); err != nil {
		t.Fatalf("update: %v", err)
	}
	r := &TunnelStatusReconciler{Store: src, Tunnels: infs["Tunnel"], Agents: infs["Agent"], Gateways: infs["Gateway"]}
	_, err := r.Reconcile(ctx, reconcile.Request{Key: api.Key{Kind: "Tunnel", Name: "a"}})
	if !errors.Is(err, api.ErrConflict) {
		t.Fatalf("Reconcile on a stale cache: got %v, want an error wrapping api.ErrConflict", err)
	}
	if reconcile.IsTerminal(err) {
		t.Fatalf("a conflict must be retried: got a terminal error")
	}
}

func TestTunnelStatusOfAGoneTunnelIsNothing(t *testing.T) {
	src := reconciletest.NewSource(reconciletest.Config{})
	infs, _ := startInformers(t, src)
	r := &TunnelStatusReconciler{Store: src, Tunnels: infs["Tunnel"], Agents: infs["Agent"], Gateways: infs["Gateway"]}
	res, err := r.Reconcile(context.Background(), reconcile.Request{Key: api.Key{Kind: "Tunnel", Name: "gone"}})
	if err != nil || res != (reconcile.Result{}) {
		t.Fatalf("Reconcile of a missing tunnel: got %v %v, want an empty result and no error", res, err)
	}
}

func TestReadyCondition(t *testing.T) {
	cond := func(typ string, s api.ConditionStatus, reason string) api.Condition {
		return api.Condition{Type: typ, Status: s, Reason: reason, Message: reason + " message"}
	}
	inputs := []string{"HostnameAvailable", "AgentConnected"}
	tests := []struct {
		name       string
		enabled    bool
		conds      []api.Condition
		wantStatus api.ConditionStatus
		wantReason string
	}{
		{"all inputs true", true,
			[]api.Condition{cond("HostnameAvailable", "True", "HostnameClaimed"), cond("AgentConnected", "True", "Connected")},
			api.ConditionTrue, api.ReasonReady},
		{"disabled wins over everything", false,
			[]api.Condition{cond("HostnameAvailable", "False", "HostnameConflict")},
			api.ConditionFalse, api.ReasonDisabled},
		{"the first failing input is reported", true,
			[]api.Condition{cond("HostnameAvailable", "False", "HostnameConflict"), cond("AgentConnected", "False", "Offline")},
			api.ConditionFalse, api.ReasonHostnameConflict},
		{"a later failing input", true,
			[]api.Condition{cond("HostnameAvailable", "True", "HostnameClaimed"), cond("AgentConnected", "False", "Offline")},
			api.ConditionFalse, "Offline"},
		{"an unknown input makes Ready unknown", true,
			[]api.Condition{cond("HostnameAvailable", "True", "HostnameClaimed"), cond("AgentConnected", "Unknown", "NoHeartbeat")},
			api.ConditionUnknown, "NoHeartbeat"},
		{"a missing input is waited for", true,
			[]api.Condition{cond("HostnameAvailable", "True", "HostnameClaimed")},
			api.ConditionUnknown, ReasonWaiting},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readyCondition(tt.enabled, tt.conds, inputs, 7)
			if got.Status != tt.wantStatus || got.Reason != tt.wantReason || got.Type != api.ConditionReady || got.ObservedGeneration != 7 {
				t.Fatalf("got %s %s/%s gen %d, want Ready %s/%s gen 7", got.Type, got.Status, got.Reason, got.ObservedGeneration, tt.wantStatus, tt.wantReason)
			}
			if got.Message == "" {
				t.Fatalf("message: got empty, want a sentence")
			}
		})
	}
}

// waitCached waits until the informer holds obj's resourceVersion.
func waitCached(t *testing.T, inf *reconcile.Informer, obj api.Object) {
	t.Helper()
	eventually(t, "cache caught up", func() bool {
		c, ok := inf.Get(obj.GetMeta().Name)
		return ok && c.GetMeta().ResourceVersion == obj.GetMeta().ResourceVersion
	})
}
