package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

// TestTunnelStatusReservesControlHostname: no tunnel owns Control's own
// public name, however old it is, and the status says so by name; other
// hostnames are untouched.
func TestTunnelStatusReservesControlHostname(t *testing.T) {
	const ctl = "control.example.com"
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	mustCreate(t, src, tunnel("first", ctl))
	clk.Advance(time.Minute)
	mustCreate(t, src, tunnel("second", ctl))
	mustCreate(t, src, tunnel("web", "web.example.com"))
	healthyFleet(t, src, clk, "first", "second", "web")
	infs, _ := startInformers(t, src)
	r := &TunnelStatusReconciler{Store: src, Tunnels: infs["Tunnel"], Agents: infs["Agent"], Gateways: infs["Gateway"], Now: clk.Now,
		ControlHostname: ctl}
	for _, tc := range []struct {
		name, avail, reason, msgHas string
	}{
		{"first", "False", api.ReasonHostnameReservedForControl, ctl},
		{"second", "False", api.ReasonHostnameReservedForControl, ctl},
		{"web", "True", api.ReasonHostnameClaimed, "web.example.com"},
	} {
		if _, err := r.Reconcile(context.Background(), reconcile.Request{Key: api.Key{Kind: "Tunnel", Name: tc.name}}); err != nil {
			t.Fatalf("Reconcile %s: %v", tc.name, err)
		}
		got := getTunnel(t, src, tc.name)
		avail, ready := condition(got, api.TunnelHostnameAvailable), condition(got, api.ConditionReady)
		if string(avail.Status) != tc.avail || avail.Reason != tc.reason || !strings.Contains(avail.Message, tc.msgHas) {
			t.Errorf("%s: HostnameAvailable got %s/%s %q, want %s/%s naming %s", tc.name, avail.Status, avail.Reason, avail.Message, tc.avail, tc.reason, tc.msgHas)
		}
		if tc.avail == "False" && (ready.Status != api.ConditionFalse || ready.Reason != tc.reason || !strings.Contains(ready.Message, ctl)) {
			t.Errorf("%s: Ready got %s/%s %q, want False/%s naming %s", tc.name, ready.Status, ready.Reason, ready.Message, tc.reason, ctl)
		}
	}
}
