package controllers

import (
	"context"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

// never is nodeFix.heartbeat for a node that never sent one.
const never = time.Duration(-1)

// nodeFix describes an Agent or Gateway as the bridge and the loops left
// it in the store, for table tests.
type nodeFix struct {
	kind, name string
	disabled   bool
	// addr is status.overlayAddress; when set, AddressAssigned=True is
	// set too, as the allocator would have.
	addr string
	// exhausted sets AddressAssigned=False (OverlayExhausted).
	exhausted bool
	// heartbeat is how long before the clock's time the last heartbeat
	// arrived; never for none.
	heartbeat time.Duration
	// connected is the stored Connected condition's status ("" for none)
	// and connReason its reason (HeartbeatReceived when empty).
	connected  api.ConditionStatus
	connReason string
	// revision is status.revision.
	revision int64
	// probes are a gateway's probe reports, by agent.
	probes map[string]string
	// targets are an agent's target reports, by tunnel: true reachable.
	targets map[string]bool
	// targetMsg is the message of unreachable targets.
	targetMsg string
	// after is how long after the clock's start the node was created.
	after time.Duration
}

// agentFix and gatewayFix return a connected node with an address and a
// heartbeat a second old.
func agentFix(name, addr string) nodeFix {
	return nodeFix{kind: "Agent", name: name, addr: addr, heartbeat: time.Second, connected: api.ConditionTrue}
}

func gatewayFix(name, addr string) nodeFix {
	return nodeFix{kind: "Gateway", name: name, addr: addr, heartbeat: time.Second, connected: api.ConditionTrue, revision: farRevision}
}

// create stores the node with clk at its creation time, and its status.
func (f nodeFix) create(t testing.TB, src *reconciletest.Source, clk *clock) api.Object {
	t.Helper()
	off := !f.disabled
	var obj api.Object
	switch f.kind {
	case "Agent":
		obj = &api.Agent{Metadata: api.ObjectMeta{Name: f.name}, Spec: api.AgentSpec{Enabled: &off}}
	case "Gateway":
		obj = &api.Gateway{Metadata: api.ObjectMeta{Name: f.name}, Spec: api.GatewaySpec{Enabled: &off}}
	default:
		t.Fatalf("nodeFix %s: kind %q", f.name, f.kind)
	}
	obj = mustCreate(t, src, obj)
	now := clk.Now()
	_, st, _, _ := nodeParts(obj)
	conds := &obj.GetStatus().Conditions
	st.OverlayAddress = f.addr
	st.Revision = f.revision
	if f.heartbeat != never {
		st.LastHeartbeat = ago(clk, f.heartbeat)
	}
	if f.addr != "" {
		api.SetCondition(conds, api.Condition{Type: NodeAddressAssigned, Status: api.ConditionTrue, Reason: ReasonAddressAssigned}, now)
	}
	if f.exhausted {
		api.SetCondition(conds, api.Condition{Type: NodeAddressAssigned, Status: api.ConditionFalse, Reason: ReasonOverlayExhausted}, now)
	}
	if f.connected != "" {
		reason := f.connReason
		if reason == "" {
			reason = api.ReasonHeartbeat
		}
		api.SetCondition(conds, api.Condition{Type: api.NodeConnected, Status: f.connected, Reason: reason}, now)
	}
	switch n := obj.(type) {
	case *api.Gateway:
		for agent, p := range f.probes {
			n.Status.Agents = append(n.Status.Agents, api.NodePeerStatus{Name: agent, Probe: p})
		}
	case *api.Agent:
		for tun, ok := range f.targets {
			ts := api.TargetStatus{Tunnel: tun, Reachable: ok}
			if !ok {
				ts.Message = f.targetMsg
			}
			n.Status.Targets = append(n.Status.Targets, ts)
		}
	}
	out, err := src.UpdateStatus(context.Background(), obj)
	if err != nil {
		t.Fatalf("write the status of %s %s: %v", f.kind, f.name, err)
	}
	return out
}

// createAll creates the nodes in order, moving clk by each one's after.
func createAll(t testing.TB, src *reconciletest.Source, clk *clock, nodes []nodeFix) {
	t.Helper()
	for _, n := range nodes {
		clk.Advance(n.after)
		n.create(t, src, clk)
	}
}
