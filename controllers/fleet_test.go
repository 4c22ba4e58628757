package controllers

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

// farRevision is a slice revision beyond any a test reaches: a gateway
// reporting it has applied every tunnel.
const farRevision = 1 << 40

// healthyFleet creates agent-1, connected and reaching the targets of the
// named tunnels, and gateway gw-1, connected and up to date, as the
// bridge would report them at clk's time: with them, the data-plane
// conditions of tunnels on agent-1 hold, so tests of other rules can
// expect Ready=True.
func healthyFleet(t *testing.T, src *reconciletest.Source, clk *clock, tunnels ...string) {
	t.Helper()
	mustCreate(t, src, &api.Agent{Metadata: api.ObjectMeta{Name: "agent-1"}})
	heartbeat(t, src, clk, "Agent", "agent-1", func(obj api.Object) {
		a := obj.(*api.Agent)
		a.Status.Targets = nil
		for _, name := range tunnels {
			a.Status.Targets = append(a.Status.Targets, api.TargetStatus{Tunnel: name, Reachable: true})
		}
	})
	mustCreate(t, src, &api.Gateway{Metadata: api.ObjectMeta{Name: "gw-1"}})
	heartbeat(t, src, clk, "Gateway", "gw-1", func(obj api.Object) { obj.(*api.Gateway).Status.Revision = farRevision })
}

// heartbeat writes what the bridge writes when it accepts a heartbeat
// from a node: lastHeartbeat at clk's time and Connected=True, after
// applying report (nil for none) to the node's status as read from src.
// A conflict with a loop's write is retried on fresh state.
func heartbeat(t *testing.T, src *reconciletest.Source, clk *clock, kind, name string, report func(api.Object)) api.Object {
	t.Helper()
	ctx := context.Background()
	for range 100 {
		node := getNode(t, src, kind, name)
		if report != nil {
			report(node)
		}
		_, st, _, _ := nodeParts(node)
		now := clk.Now()
		st.LastHeartbeat = &now
		api.SetCondition(&node.GetStatus().Conditions, api.Condition{Type: api.NodeConnected, Status: api.ConditionTrue,
			Reason: api.ReasonHeartbeat, Message: "connected to the bridge"}, now)
		out, err := src.UpdateStatus(ctx, node)
		if err == nil {
			return out
		}
		if !errors.Is(err, api.ErrConflict) {
			t.Fatalf("heartbeat of %s %s: %v", kind, name, err)
		}
	}
	t.Fatalf("heartbeat of %s %s: got a conflict 100 times, want a write", kind, name)
	return nil
}

// disconnect writes what the bridge writes when a node's connection
// closes.
func disconnect(t *testing.T, src *reconciletest.Source, clk *clock, kind, name string) {
	t.Helper()
	ctx := context.Background()
	for range 100 {
		node := getNode(t, src, kind, name)
		api.SetCondition(&node.GetStatus().Conditions, api.Condition{Type: api.NodeConnected, Status: api.ConditionFalse,
			Reason: "Disconnected", Message: "the bridge connection closed"}, clk.Now())
		_, err := src.UpdateStatus(ctx, node)
		if err == nil {
			return
		}
		if !errors.Is(err, api.ErrConflict) {
			t.Fatalf("disconnect %s %s: %v", kind, name, err)
		}
	}
	t.Fatalf("disconnect %s %s: got a conflict 100 times, want a write", kind, name)
}

// getNode reads an agent or gateway from the source.
func getNode(t *testing.T, src *reconciletest.Source, kind, name string) api.Object {
	t.Helper()
	obj, err := src.Get(context.Background(), kind, name)
	if err != nil {
		t.Fatalf("get %s %s: %v", kind, name, err)
	}
	return obj
}

// ago returns clk's time minus d.
func ago(clk *clock, d time.Duration) *time.Time {
	t := clk.Now().Add(-d)
	return &t
}
