package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

func TestConnectedCondition(t *testing.T) {
	const lease = 40 * time.Second
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	bridge := func(s api.ConditionStatus, reason string) []api.Condition {
		return []api.Condition{{Type: api.NodeConnected, Status: s, Reason: reason, Message: "from the bridge"}}
	}
	tests := []struct {
		name       string
		last       *time.Time
		conds      []api.Condition
		wantStatus api.ConditionStatus
		wantReason string
		wantKept   bool // the stored condition is returned as it is
		wantLeft   time.Duration
	}{
		{"no heartbeat ever", nil, nil, api.ConditionUnknown, api.ReasonNeverConnected, false, 0},
		{"no heartbeat ever, though the bridge said True", nil, bridge(api.ConditionTrue, api.ReasonHeartbeat),
			api.ConditionUnknown, api.ReasonNeverConnected, false, 0},
		{"a fresh heartbeat and no condition", at(10 * time.Second), nil,
			api.ConditionTrue, api.ReasonHeartbeat, false, 30 * time.Second},
		{"a fresh heartbeat keeps the bridge's True", at(10 * time.Second), bridge(api.ConditionTrue, api.ReasonHeartbeat),
			api.ConditionTrue, api.ReasonHeartbeat, true, 30 * time.Second},
		{"a fresh heartbeat keeps the bridge's disconnect", at(10 * time.Second), bridge(api.ConditionFalse, "Disconnected"),
			api.ConditionFalse, "Disconnected", true, 30 * time.Second},
		{"a fresh heartbeat overrides an expiry", at(time.Second), bridge(api.ConditionFalse, api.ReasonHeartbeatExpired),
			api.ConditionTrue, api.ReasonHeartbeat, false, 39 * time.Second},
		{"a fresh heartbeat overrides never connected", at(time.Second), bridge(api.ConditionUnknown, api.ReasonNeverConnected),
			api.ConditionTrue, api.ReasonHeartbeat, false, 39 * time.Second},
		{"a stale True left by a crashed Control", at(5 * time.Minute), bridge(api.ConditionTrue, api.ReasonHeartbeat),
			api.ConditionFalse, api.ReasonHeartbeatExpired, false, 0},
		{"exactly one lease old", at(lease), bridge(api.ConditionTrue, api.ReasonHeartbeat),
			api.ConditionFalse, api.ReasonHeartbeatExpired, false, 0},
		{"a heartbeat from the future (clock skew) counts as fresh", at(-time.Second), nil,
			api.ConditionTrue, api.ReasonHeartbeat, false, 41 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &api.NodeStatus{LastHeartbeat: tt.last}
			got, left := connectedCondition(st.LastHeartbeat, tt.conds, now, lease)
			if got.Type != api.NodeConnected || got.Status != tt.wantStatus || got.Reason != tt.wantReason || left != tt.wantLeft {
				t.Fatalf("got %s %s/%s, expires in %v, want Connected %s/%s, in %v",
					got.Type, got.Status, got.Reason, left, tt.wantStatus, tt.wantReason, tt.wantLeft)
			}
			if kept := len(tt.conds) > 0 && got == tt.conds[0]; kept != tt.wantKept {
				t.Fatalf("stored condition kept: got %v, want %v", kept, tt.wantKept)
			}
			if got.Message == "" {
				t.Fatalf("message: got empty, want a sentence")
			}
		})
	}
}

func TestNodeLivenessReconcile(t *testing.T) {
	type want struct {
		connected, connReason string
		dataPath, dpReason    string
		ready, readyReason    string
		msgHas                string        // in the DataPathReady message
		requeue               time.Duration // RequeueAfter
	}
	expired := func(f nodeFix) nodeFix { f.heartbeat = 5 * time.Minute; return f }
	withProbes := func(f nodeFix, probes map[string]string) nodeFix { f.probes = probes; return f }
	disabled := func(f nodeFix) nodeFix { f.disabled = true; return f }
	agent, gw := agentFix("ag", "100.64.0.1"), gatewayFix("gw", "100.64.0.2")
	agentKey, gwKey := api.Key{Kind: "Agent", Name: "ag"}, api.Key{Kind: "Gateway", Name: "gw"}
	tests := []struct {
		name   string
		nodes  []nodeFix
		target api.Key
		want   want
	}{
		{"an agent that never connected",
			[]nodeFix{{kind: "Agent", name: "ag", addr: "100.64.0.1", heartbeat: never}}, agentKey,
			want{"Unknown", api.ReasonNeverConnected, "Unknown", ReasonNoGatewayConnected, "Unknown", api.ReasonNeverConnected, "no enabled gateway", 0}},
		{"an agent probed through a connected gateway",
			[]nodeFix{agent, withProbes(gw, map[string]string{"ag": ProbeOK})}, agentKey,
			want{"True", api.ReasonHeartbeat, "True", api.ReasonProbeSucceeded, "True", api.ReasonReady, "gw", 39 * time.Second}},
		{"a stale True from a crashed Control expires",
			[]nodeFix{expired(agent), withProbes(gw, map[string]string{"ag": ProbeOK})}, agentKey,
			want{"False", api.ReasonHeartbeatExpired, "True", api.ReasonProbeSucceeded, "False", api.ReasonHeartbeatExpired, "gw", 0}},
		{"an agent every connected gateway fails to reach",
			[]nodeFix{agent, withProbes(gw, map[string]string{"ag": "dial 100.64.0.1:7000: i/o timeout"}),
				withProbes(gatewayFix("gw2", "100.64.0.3"), map[string]string{"ag": "connection refused"})}, agentKey,
			want{"True", api.ReasonHeartbeat, "False", api.ReasonProbeFailed, "False", api.ReasonProbeFailed, "gw2: connection refused", 39 * time.Second}},
		{"one gateway reaching the agent is enough",
			[]nodeFix{agent, withProbes(gw, map[string]string{"ag": "connection refused"}),
				withProbes(gatewayFix("gw2", "100.64.0.3"), map[string]string{"ag": ProbeOK})}, agentKey,
			want{"True", api.ReasonHeartbeat, "True", api.ReasonProbeSucceeded, "True", api.ReasonReady, "gw2", 39 * time.Second}},
		{"the probe of a gateway whose lease ran out does not count",
			[]nodeFix{agent, withProbes(expired(gw), map[string]string{"ag": ProbeOK})}, agentKey,
			want{"True", api.ReasonHeartbeat, "Unknown", ReasonNoGatewayConnected, "Unknown", ReasonNoGatewayConnected, "no enabled gateway", 39 * time.Second}},
		{"the probe of a disabled gateway does not count",
			[]nodeFix{agent, withProbes(disabled(gw), map[string]string{"ag": ProbeOK})}, agentKey,
			want{"True", api.ReasonHeartbeat, "Unknown", ReasonNoGatewayConnected, "Unknown", ReasonNoGatewayConnected, "no enabled gateway", 39 * time.Second}},
		{"a connected gateway that has not probed yet",
			[]nodeFix{agent, gw}, agentKey,
			want{"True", api.ReasonHeartbeat, "Unknown", ReasonProbePending, "Unknown", ReasonProbePending, "gw", 39 * time.Second}},
		{"a disabled agent is not ready",
			[]nodeFix{disabled(agent), withProbes(gw, map[string]string{"ag": ProbeOK})}, agentKey,
			want{"True", api.ReasonHeartbeat, "True", api.ReasonProbeSucceeded, "False", api.ReasonDisabled, "gw", 39 * time.Second}},
		{"an agent without an address reports that first",
			[]nodeFix{{kind: "Agent", name: "ag", exhausted: true, heartbeat: time.Second, connected: api.ConditionTrue},
				withProbes(gw, map[string]string{"ag": ProbeOK})}, agentKey,
			want{"True", api.ReasonHeartbeat, "True", api.ReasonProbeSucceeded, "False", ReasonOverlayExhausted, "gw", 39 * time.Second}},

		{"a gateway with no agents has nothing to probe",
			[]nodeFix{gw}, gwKey,
			want{"True", api.ReasonHeartbeat, "True", ReasonNoAgents, "True", api.ReasonReady, "no connected agent", 39 * time.Second}},
		{"a gateway whose probe reaches a connected agent",
			[]nodeFix{agent, agentFix("ag2", "100.64.0.4"), withProbes(gw, map[string]string{"ag": ProbeOK, "ag2": "refused"})}, gwKey,
			want{"True", api.ReasonHeartbeat, "True", api.ReasonProbeSucceeded, "True", api.ReasonReady, "reach", 39 * time.Second}},
		{"a gateway whose probes all fail",
			[]nodeFix{agent, withProbes(gw, map[string]string{"ag": "no route"})}, gwKey,
			want{"True", api.ReasonHeartbeat, "False", api.ReasonProbeFailed, "False", api.ReasonProbeFailed, "ag: no route", 39 * time.Second}},
		{"a gateway's failed probe of an offline agent does not count",
			[]nodeFix{expired(agent), withProbes(gw, map[string]string{"ag": "no route"})}, gwKey,
			want{"True", api.ReasonHeartbeat, "True", ReasonNoAgents, "True", api.ReasonReady, "no connected agent", 39 * time.Second}},
		{"an agent without an address is no one to probe",
			[]nodeFix{{kind: "Agent", name: "ag", heartbeat: time.Second, connected: api.ConditionTrue}, gw}, gwKey,
			want{"True", api.ReasonHeartbeat, "True", ReasonNoAgents, "True", api.ReasonReady, "no connected agent", 39 * time.Second}},
		{"an expired gateway's reports are not current",
			[]nodeFix{agent, withProbes(expired(gw), map[string]string{"ag": ProbeOK})}, gwKey,
			want{"False", api.ReasonHeartbeatExpired, "Unknown", ReasonNotConnected, "False", api.ReasonHeartbeatExpired, "not connected", 0}},
		{"a gateway disconnected by the bridge",
			[]nodeFix{agent, func() nodeFix { f := gw; f.connected, f.connReason = api.ConditionFalse, "Disconnected"; return f }()}, gwKey,
			want{"False", "Disconnected", "Unknown", ReasonNotConnected, "False", "Disconnected", "not connected", 39 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
			createAll(t, src, clk, tt.nodes)
			infs, _ := startInformers(t, src)
			r := &NodeLivenessReconciler{Store: src, Agents: infs["Agent"], Gateways: infs["Gateway"], Now: clk.Now}
			res, err := r.Reconcile(context.Background(), reconcile.Request{Key: tt.target})
			if err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			got := getNode(t, src, tt.target.Kind, tt.target.Name)
			for _, c := range []struct{ typ, status, reason string }{
				{api.NodeConnected, tt.want.connected, tt.want.connReason},
				{api.NodeDataPath, tt.want.dataPath, tt.want.dpReason},
				{api.ConditionReady, tt.want.ready, tt.want.readyReason},
			} {
				if g := condition(got, c.typ); string(g.Status) != c.status || g.Reason != c.reason {
					t.Errorf("%s: got %s/%s (%q), want %s/%s", c.typ, g.Status, g.Reason, g.Message, c.status, c.reason)
				}
			}
			if dp := condition(got, api.NodeDataPath); !strings.Contains(dp.Message, tt.want.msgHas) {
				t.Errorf("DataPathReady message: got %q, want it to contain %q", dp.Message, tt.want.msgHas)
			}
			if res.RequeueAfter != tt.want.requeue {
				t.Errorf("RequeueAfter: got %v, want %v (when the lease runs out)", res.RequeueAfter, tt.want.requeue)
			}
			if got.GetStatus().ObservedGeneration != got.GetMeta().Generation {
				t.Errorf("observedGeneration: got %d, want %d", got.GetStatus().ObservedGeneration, got.GetMeta().Generation)
			}
		})
	}
}

// TestNodeLivenessLeaseRunsOut checks that the reconcile asks to come
// back when the lease ends, and that coming back then turns the node
// offline, stamped with the time it did.
func TestNodeLivenessLeaseRunsOut(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	agentFix("ag", "100.64.0.1").create(t, src, clk)
	infs, _ := startInformers(t, src)
	r := &NodeLivenessReconciler{Store: src, Agents: infs["Agent"], Gateways: infs["Gateway"], Lease: 10 * time.Second, Now: clk.Now}
	req := reconcile.Request{Key: api.Key{Kind: "Agent", Name: "ag"}}
	res, err := r.Reconcile(ctx, req)
	if err != nil || res.RequeueAfter != 9*time.Second {
		t.Fatalf("first Reconcile: got %v %v, want RequeueAfter 9s (a 10s lease, a heartbeat 1s old)", res, err)
	}
	waitCached(t, infs["Agent"], getNode(t, src, "Agent", "ag"))
	expiry := clk.Advance(res.RequeueAfter)
	res, err = r.Reconcile(ctx, req)
	if err != nil || res.RequeueAfter != 0 {
		t.Fatalf("Reconcile at the end of the lease: got %v %v, want no requeue (only a heartbeat brings it back)", res, err)
	}
	c := condition(getNode(t, src, "Agent", "ag"), api.NodeConnected)
	if c.Status != api.ConditionFalse || c.Reason != api.ReasonHeartbeatExpired || !c.LastTransitionTime.Equal(expiry) {
		t.Fatalf("Connected: got %s/%s at %v, want False/%s at %v", c.Status, c.Reason, c.LastTransitionTime, api.ReasonHeartbeatExpired, expiry)
	}
}

// TestNodeLivenessLeavesTheBridgeAlone checks that while heartbeats are
// fresh a reconcile does not rewrite the bridge's Connected condition, so
// the two writers never fight, and that a reconcile with nothing new
// writes nothing.
func TestNodeLivenessLeavesTheBridgeAlone(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	created := agentFix("ag", "100.64.0.1").create(t, src, clk)
	bridgeCond := condition(created, api.NodeConnected)
	infs, _ := startInformers(t, src)
	r := &NodeLivenessReconciler{Store: src, Agents: infs["Agent"], Gateways: infs["Gateway"], Now: clk.Now}
	req := reconcile.Request{Key: api.Key{Kind: "Agent", Name: "ag"}}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	first := getNode(t, src, "Agent", "ag")
	if got := condition(first, api.NodeConnected); got != bridgeCond {
		t.Fatalf("Connected: got %+v, want the bridge's %+v untouched", got, bridgeCond)
	}
	waitCached(t, infs["Agent"], first)
	clk.Advance(5 * time.Second)
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatalf("second Reconcile: %v", err)
	}
	if got := getNode(t, src, "Agent", "ag").GetMeta().ResourceVersion; got != first.GetMeta().ResourceVersion {
		t.Fatalf("resourceVersion after a reconcile with nothing new: got %s, want %s (no write)", got, first.GetMeta().ResourceVersion)
	}
}

// TestNodeLivenessHandlers checks which nodes a change to another node
// wakes: all of them for a change of link state, only the agent whose
// probe changed for a probe report, none for a heartbeat.
func TestNodeLivenessHandlers(t *testing.T) {
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	for _, f := range []nodeFix{agentFix("a1", "100.64.0.1"), agentFix("a2", "100.64.0.2"), gatewayFix("g1", "100.64.0.3"), gatewayFix("g2", "100.64.0.4")} {
		f.create(t, src, clk)
	}
	infs, _ := startInformers(t, src)
	r := &NodeLivenessReconciler{Agents: infs["Agent"], Gateways: infs["Gateway"]}
	gw := func(mod func(*api.Gateway)) api.Object {
		g := api.Clone(getNode(t, src, "Gateway", "g1")).(*api.Gateway)
		if mod != nil {
			mod(g)
		}
		return g
	}
	ag := func(mod func(*api.Agent)) api.Object {
		a := api.Clone(getNode(t, src, "Agent", "a1")).(*api.Agent)
		if mod != nil {
			mod(a)
		}
		return a
	}
	probe := func(p string) func(*api.Gateway) {
		return func(g *api.Gateway) { g.Status.Agents = []api.NodePeerStatus{{Name: "a2", Probe: p}} }
	}
	beat := func(g *api.Gateway) {
		now := clk.Now().Add(time.Second)
		g.Status.LastHeartbeat = &now
		g.Status.Revision++
	}
	disconnected := api.Condition{Type: api.NodeConnected, Status: api.ConditionFalse, Reason: "Disconnected"}
	offline := func(g *api.Gateway) { api.SetCondition(&g.Status.Conditions, disconnected, clk.Now()) }
	agentOffline := func(a *api.Agent) { api.SetCondition(&a.Status.Conditions, disconnected, clk.Now()) }
	agentBeat := func(a *api.Agent) { now := clk.Now().Add(time.Second); a.Status.LastHeartbeat = &now }
	tests := []struct {
		name    string
		handler func(func(reconcile.Request)) func(reconcile.Change)
		change  reconcile.Change
		want    []string
	}{
		{"a gateway that connects or disconnects wakes every agent", r.onGatewayChange,
			reconcile.Change{Type: api.Modified, Old: gw(nil), New: gw(offline)}, []string{"Agent/a1", "Agent/a2"}},
		{"a new gateway wakes every agent", r.onGatewayChange,
			reconcile.Change{Type: api.Added, New: gw(nil)}, []string{"Agent/a1", "Agent/a2"}},
		{"a gateway's new probe report wakes that agent", r.onGatewayChange,
			reconcile.Change{Type: api.Modified, Old: gw(probe("")), New: gw(probe(ProbeOK))}, []string{"Agent/a2"}},
		{"a dropped probe report wakes that agent", r.onGatewayChange,
			reconcile.Change{Type: api.Modified, Old: gw(probe(ProbeOK)), New: gw(nil)}, []string{"Agent/a2"}},
		{"a gateway heartbeat wakes no agent", r.onGatewayChange,
			reconcile.Change{Type: api.Modified, Old: gw(probe(ProbeOK)), New: gw(func(g *api.Gateway) { probe(ProbeOK)(g); beat(g) })}, nil},
		{"a resync wakes no agent", r.onGatewayChange,
			func() reconcile.Change {
				g := gw(nil)
				return reconcile.Change{Type: api.Modified, Old: g, New: g, Resync: true}
			}(), nil},
		{"an agent that goes offline wakes every gateway", r.onAgentChange,
			reconcile.Change{Type: api.Modified, Old: ag(nil), New: ag(agentOffline)}, []string{"Gateway/g1", "Gateway/g2"}},
		{"a deleted agent wakes every gateway", r.onAgentChange,
			reconcile.Change{Type: api.Deleted, Old: ag(nil)}, []string{"Gateway/g1", "Gateway/g2"}},
		{"an agent heartbeat wakes no gateway", r.onAgentChange,
			reconcile.Change{Type: api.Modified, Old: ag(nil), New: ag(agentBeat)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.agentsFanout, r.gatewaysFanout = fanout{}, fanout{} // each case is a first change
			var got []string
			tt.handler(func(r reconcile.Request) { got = append(got, r.String()) })(tt.change)
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("enqueued: got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestManagerNodeLivenessEndToEnd runs the Manager with a 40 s lease on
// an injected clock: a gateway and an agent connect and the gateway's
// probe reaches the agent, so both are Ready; the clock passes the lease
// without a heartbeat and both go offline; a heartbeat brings them back.
func TestManagerNodeLivenessEndToEnd(t *testing.T) {
	leakcheck.Goroutines(t)
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	runManagerWith(t, Config{Store: src, Workers: 2, Resync: 50 * time.Millisecond, Now: clk.Now, NodeLease: 40 * time.Second})

	mustCreate(t, src, &api.Agent{Metadata: api.ObjectMeta{Name: "ag"}})
	mustCreate(t, src, &api.Gateway{Metadata: api.ObjectMeta{Name: "gw"}})
	eventually(t, "both never connected, with addresses", func() bool {
		a, g := getNode(t, src, "Agent", "ag"), getNode(t, src, "Gateway", "gw")
		return condition(a, api.NodeConnected).Reason == api.ReasonNeverConnected &&
			condition(g, api.NodeConnected).Reason == api.ReasonNeverConnected &&
			condition(a, NodeAddressAssigned).Status == api.ConditionTrue &&
			condition(g, NodeAddressAssigned).Status == api.ConditionTrue
	})
	heartbeat(t, src, clk, "Agent", "ag", nil)
	heartbeat(t, src, clk, "Gateway", "gw", func(o api.Object) {
		o.(*api.Gateway).Status.Agents = []api.NodePeerStatus{{Name: "ag", Probe: ProbeOK}}
	})
	eventually(t, "both ready", func() bool {
		return condition(getNode(t, src, "Agent", "ag"), api.ConditionReady).Status == api.ConditionTrue &&
			condition(getNode(t, src, "Gateway", "gw"), api.ConditionReady).Status == api.ConditionTrue
	})
	if got := condition(getNode(t, src, "Agent", "ag"), api.NodeDataPath).Reason; got != api.ReasonProbeSucceeded {
		t.Fatalf("agent DataPathReady: got %s, want %s", got, api.ReasonProbeSucceeded)
	}

	// 41 s without a heartbeat: the lease has run out.
	expiry := clk.Advance(41 * time.Second)
	eventually(t, "both offline", func() bool {
		a, g := getNode(t, src, "Agent", "ag"), getNode(t, src, "Gateway", "gw")
		return condition(a, api.NodeConnected).Reason == api.ReasonHeartbeatExpired &&
			condition(g, api.NodeConnected).Reason == api.ReasonHeartbeatExpired &&
			condition(a, api.ConditionReady).Reason == api.ReasonHeartbeatExpired
	})
	a := getNode(t, src, "Agent", "ag")
	if c := condition(a, api.NodeConnected); c.Status != api.ConditionFalse || !c.LastTransitionTime.Equal(expiry) {
		t.Fatalf("agent Connected: got %s since %v, want False since %v", c.Status, c.LastTransitionTime, expiry)
	}
	if c := condition(a, api.NodeDataPath); c.Reason != ReasonNoGatewayConnected {
		t.Fatalf("agent DataPathReady with its gateway offline: got %s, want %s", c.Reason, ReasonNoGatewayConnected)
	}

	// The agent alone comes back: connected, but nothing can probe it.
	heartbeat(t, src, clk, "Agent", "ag", nil)
	eventually(t, "the agent connected again", func() bool {
		a := getNode(t, src, "Agent", "ag")
		return condition(a, api.NodeConnected).Status == api.ConditionTrue &&
			condition(a, api.ConditionReady).Reason == ReasonNoGatewayConnected
	})
	// Then the gateway: the agent is Ready again.
	heartbeat(t, src, clk, "Gateway", "gw", nil)
	eventually(t, "both ready again", func() bool {
		return condition(getNode(t, src, "Agent", "ag"), api.ConditionReady).Status == api.ConditionTrue &&
			condition(getNode(t, src, "Gateway", "gw"), api.ConditionReady).Status == api.ConditionTrue
	})
	// A failed probe turns the gateway and the agent to ProbeFailed.
	heartbeat(t, src, clk, "Gateway", "gw", func(o api.Object) {
		o.(*api.Gateway).Status.Agents = []api.NodePeerStatus{{Name: "ag", Probe: "dial tcp 100.64.0.1:7000: i/o timeout"}}
	})
	eventually(t, "probe failures reported", func() bool {
		return condition(getNode(t, src, "Agent", "ag"), api.ConditionReady).Reason == api.ReasonProbeFailed &&
			condition(getNode(t, src, "Gateway", "gw"), api.ConditionReady).Reason == api.ReasonProbeFailed
	})
}

// TestManagerNodeLivenessAcrossRenewals checks that heartbeats which only
// renew the lease (which the loops pass over, see heartbeatOnly) keep a
// node connected past its first lease, and that it goes offline when the
// last renewal runs out.
func TestManagerNodeLivenessAcrossRenewals(t *testing.T) {
	leakcheck.Goroutines(t)
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	runManagerWith(t, Config{Store: src, Workers: 2, Resync: 50 * time.Millisecond, Now: clk.Now, NodeLease: 40 * time.Second})
	connectAgent(t, src, clk, "ag")
	for range 3 {
		clk.Advance(20 * time.Second)
		heartbeat(t, src, clk, "Agent", "ag", nil)
	}
	// 60 s after the first heartbeat: its lease ran out 20 s ago.
	lastRenewalRunsOut(t, src, clk, "ag")
}

// connectAgent creates an agent, waits for its address, and has it
// heartbeat once and count as connected.
func connectAgent(t *testing.T, src *reconciletest.Source, clk *clock, name string) {
	t.Helper()
	mustCreate(t, src, &api.Agent{Metadata: api.ObjectMeta{Name: name}})
	eventually(t, "an address", func() bool {
		return condition(getNode(t, src, "Agent", name), NodeAddressAssigned).Status == api.ConditionTrue
	})
	heartbeat(t, src, clk, "Agent", name, nil)
	eventually(t, "connected", func() bool {
		return condition(getNode(t, src, "Agent", name), api.NodeConnected).Status == api.ConditionTrue
	})
}

// lastRenewalRunsOut checks, just after an agent's last renewal of its
// 40 s lease, that it is still connected 21 s later and offline 41 s
// later.
func lastRenewalRunsOut(t *testing.T, src *reconciletest.Source, clk *clock, name string) {
	t.Helper()
	clk.Advance(21 * time.Second)
	time.Sleep(200 * time.Millisecond) // four resyncs, to let a wrong verdict show
	if c := condition(getNode(t, src, "Agent", name), api.NodeConnected); c.Status != api.ConditionTrue {
		t.Fatalf("Connected 21 s after the last renewal: got %s (%s), want True", c.Status, c.Reason)
	}
	clk.Advance(20 * time.Second)
	eventually(t, "offline once the last renewal ran out", func() bool {
		return condition(getNode(t, src, "Agent", name), api.NodeConnected).Reason == api.ReasonHeartbeatExpired
	})
}

// TestFanoutCoalesces checks that a burst of changes runs a fan-out at
// once and then once more after the interval, and that a change after a
// quiet interval runs it at once again.
func TestFanoutCoalesces(t *testing.T) {
	var f fanout
	var runs atomic.Int32
	run := func() { runs.Add(1) }
	for range 100 {
		f.do(200*time.Millisecond, run)
	}
	if got := runs.Load(); got != 1 {
		t.Fatalf("runs right after a burst: got %d, want 1", got)
	}
	eventually(t, "the trailing run", func() bool { return runs.Load() == 2 })
	time.Sleep(300 * time.Millisecond)
	if got := runs.Load(); got != 2 {
		t.Fatalf("runs after the burst settled: got %d, want 2", got)
	}
	f.do(200*time.Millisecond, run)
	if got := runs.Load(); got != 3 {
		t.Fatalf("runs after a change following a quiet interval: got %d, want 3 (at once)", got)
	}
}

// TestProbeIndex checks that a gateway's probe reports are read once per
// version of the gateway object and follow a new version.
func TestProbeIndex(t *testing.T) {
	var x probeIndex
	g1 := &api.Gateway{Metadata: api.ObjectMeta{Name: "g"}}
	g1.Status.Agents = []api.NodePeerStatus{{Name: "a", Probe: ProbeOK}}
	first := x.of(g1)
	if first["a"] != ProbeOK {
		t.Fatalf("probes %v, want a: %s", first, ProbeOK)
	}
	g1.Status.Agents = nil // never done to an informer's object: shows the cache is used
	if again := x.of(g1); again["a"] != ProbeOK {
		t.Fatalf("the same object read again: %v, want the cached reports", again)
	}
	g2 := &api.Gateway{Metadata: g1.Metadata}
	g2.Status.Agents = []api.NodePeerStatus{{Name: "b", Probe: "timeout"}}
	if got := x.of(g2); got["a"] != "" || got["b"] != "timeout" {
		t.Fatalf("a new version: %v, want only b's report", got)
	}
	x.forget("g")
	if len(x.byGateway) != 0 {
		t.Fatalf("after forget: %d gateways indexed, want 0", len(x.byGateway))
	}
}

// TestConnectedSet checks that the set of connected nodes is kept between
// judgements, and built again when a node's link changes or the first
// lease in it may have run out.
func TestConnectedSet(t *testing.T) {
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	a1 := agentFix("a1", "100.64.0.1")
	a2 := agentFix("a2", "100.64.0.2")
	a2.heartbeat = 30 * time.Second
	noAddr := agentFix("a3", "")
	for _, f := range []nodeFix{a1, a2, noAddr} {
		f.create(t, src, clk)
	}
	infs, _ := startInformers(t, src)
	var s connectedSet
	lease := 40 * time.Second
	get := func() []string {
		names, _ := s.get(infs["Agent"], nodeBeats{}, clk.Now(), lease, true)
		return names
	}
	if got := get(); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Fatalf("connected with an address: %v, want a1 a2", got)
	}
	first, v1 := s.get(infs["Agent"], nodeBeats{}, clk.Now(), lease, true)
	if again, v := s.get(infs["Agent"], nodeBeats{}, clk.Now(), lease, true); &again[0] != &first[0] || v != v1 {
		t.Fatalf("the set was built again with nothing changed")
	}
	// Built again (a change reported) with the same names: same version.
	s.changed()
	if _, v := s.get(infs["Agent"], nodeBeats{}, clk.Now(), lease, true); v != v1 {
		t.Fatalf("the same names built again took version %d, want %d", v, v1)
	}
	clk.Advance(11 * time.Second) // a2's lease ran out
	if got, v := s.get(infs["Agent"], nodeBeats{}, clk.Now(), lease, true); !slices.Equal(got, []string{"a1"}) || v == v1 {
		t.Fatalf("after a2's lease: %v at version %d, want a1 at a new version", got, v)
	}
	// A change the handler reports is seen at once.
	mustDelete(t, src, "Agent", "a1")
	eventually(t, "the informer to drop a1", func() bool { _, ok := infs["Agent"].Get("a1"); return !ok })
	s.changed()
	if got := get(); len(got) != 0 {
		t.Fatalf("after a1 was deleted: %v, want none", got)
	}
}

// BenchmarkDataPathJudgement judges the data path of one agent of a fleet
// of 2,000 agents and 200 gateways that all probe all of them (agent), and
// of one of the gateways (gateway): what every heartbeat status write of a
// node costs Control.
func BenchmarkDataPathJudgement(b *testing.B) {
	const agents, gateways = 2000, 200
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	probes := map[string]string{}
	var nodes []nodeFix
	for i := range agents {
		name := fmt.Sprintf("agent-%05d", i)
		nodes = append(nodes, agentFix(name, fmt.Sprintf("100.64.%d.%d", 1+i/250, 1+i%250)))
		probes[name] = ProbeOK
	}
	for i := range gateways {
		f := gatewayFix(fmt.Sprintf("gw-%04d", i), fmt.Sprintf("100.65.%d.%d", i/250, 1+i%250))
		f.probes = probes
		nodes = append(nodes, f)
	}
	createAll(b, src, clk, nodes)
	infs, _ := startInformers(b, src)
	r := &NodeLivenessReconciler{Store: src, Agents: infs["Agent"], Gateways: infs["Gateway"], Now: clk.Now}
	now, lease := clk.Now(), r.lease()
	b.Run("agent", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if c := r.agentDataPath("agent-00007", now, lease); c.Reason != api.ReasonProbeSucceeded {
				b.Fatalf("got %s: %s", c.Reason, c.Message)
			}
		}
	})
	gw, _ := infs["Gateway"].Get("gw-0007")
	b.Run("gateway", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if c := r.gatewayDataPath(gw.(*api.Gateway), true, now, lease); c.Reason != api.ReasonProbeSucceeded {
				b.Fatalf("got %s: %s", c.Reason, c.Message)
			}
		}
	})
}

// TestDataPathVerdictsFollowTheirInputs checks that a node's data-path
// verdict is kept while nothing it was judged from changes (judged again
// it allocates for its message; kept it allocates nothing), and is judged
// again when a probe report, the connected nodes of the other kind or a
// gateway's own link change.
func TestDataPathVerdictsFollowTheirInputs(t *testing.T) {
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	probes := map[string]string{"a1": ProbeOK, "a2": ProbeOK}
	g1, g2 := gatewayFix("g1", "100.65.0.1"), gatewayFix("g2", "100.65.0.2")
	g1.probes, g2.probes = probes, probes
	a2 := agentFix("a2", "100.64.0.2")
	a2.heartbeat = 30 * time.Second
	createAll(t, src, clk, []nodeFix{agentFix("a1", "100.64.0.1"), a2, g1, g2})
	r, infs := livenessWithHandlers(t, src, clk)
	lease := r.lease()

	agent := func(name string) api.Condition { return r.agentDataPath(name, clk.Now(), lease) }
	gateway := func(name string, connected bool) api.Condition {
		obj, ok := infs["Gateway"].Get(name)
		if !ok {
			t.Fatalf("gateway %s not in the informer", name)
		}
		return r.gatewayDataPath(obj.(*api.Gateway), connected, clk.Now(), lease)
	}
	want := func(what string, c api.Condition, reason string) {
		t.Helper()
		if c.Reason != reason {
			t.Fatalf("%s: %s (%s), want %s", what, c.Reason, c.Message, reason)
		}
	}
	want("a1 judged", agent("a1"), api.ReasonProbeSucceeded)
	want("g1 judged", gateway("g1", true), api.ReasonProbeSucceeded)
	if n := testing.AllocsPerRun(20, func() { agent("a1") }); n != 0 {
		t.Fatalf("a1 judged again with nothing changed: %.0f allocations, want none (kept)", n)
	}
	if n := testing.AllocsPerRun(20, func() { gateway("g1", true) }); n != 0 {
		t.Fatalf("g1 judged again with nothing changed: %.0f allocations, want none (kept)", n)
	}

	// A heartbeat that changes no probe keeps both verdicts.
	beat := func(name string, edit func(*api.Gateway)) {
		t.Helper()
		obj, _ := infs["Gateway"].Get(name)
		gw := api.Clone(obj).(*api.Gateway)
		now := clk.Now()
		gw.Status.LastHeartbeat = &now
		edit(gw)
		out, err := src.UpdateStatus(context.Background(), gw)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the informer to hold "+name+"'s heartbeat", func() bool {
			got, _ := infs["Gateway"].Get(name)
			return got.GetMeta().ResourceVersion == out.GetMeta().ResourceVersion
		})
	}
	beat("g1", func(*api.Gateway) {})
	if n := testing.AllocsPerRun(20, func() { agent("a1") }); n != 0 {
		t.Fatalf("a1 judged again after a heartbeat that changed no probe: %.0f allocations, want none", n)
	}

	// Both gateways' probes of a1 fail: a1 is judged again, and g1 too.
	for _, g := range []string{"g1", "g2"} {
		beat(g, func(gw *api.Gateway) {
			for i := range gw.Status.Agents {
				if gw.Status.Agents[i].Name == "a1" {
					gw.Status.Agents[i].Probe = "timeout"
				}
			}
		})
	}
	want("a1 after both probes failed", agent("a1"), api.ReasonProbeFailed)
	want("a2 kept", agent("a2"), api.ReasonProbeSucceeded)
	want("g1 still reaches a2", gateway("g1", true), api.ReasonProbeSucceeded)

	// g1 no longer connected: its own verdict says so at once.
	want("g1 not connected", gateway("g1", false), ReasonNotConnected)

	// a2's lease runs out: g1 reaches no connected agent.
	clk.Advance(11 * time.Second)
	want("g1 with a2 gone", gateway("g1", true), api.ReasonProbeFailed)

	// The gateways' leases run out: a1 has no connected gateway.
	clk.Advance(lease)
	want("a1 with no gateway connected", agent("a1"), ReasonNoGatewayConnected)
}

// TestDataPathWithGatewaysSummingUp checks the judgements of agents whose
// gateways have more than api.ListedPeers agents, and so list only those
// in trouble: an agent such a gateway does not list answered its probe if
// the agent's own status shows a session with that gateway (a session
// needs each end to have the other as a peer), however many other agents
// are in trouble; a gateway summing up judges itself by its count of
// probes that answered.
func TestDataPathWithGatewaysSummingUp(t *testing.T) {
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	const n = api.ListedPeers + 10
	var nodes []nodeFix
	for i := range n {
		nodes = append(nodes, agentFix(fmt.Sprintf("agent-%04d", i), fmt.Sprintf("100.64.%d.%d", 1+i/250, 1+i%250)))
	}
	g1, g2 := gatewayFix("g1", "100.65.0.1"), gatewayFix("g2", "100.65.0.2")
	g1.probes = map[string]string{"agent-0001": "failed: timeout", "agent-0002": ""}
	g2.probes = map[string]string{"agent-0001": "failed: timeout"}
	nodes = append(nodes, g1, g2)
	createAll(t, src, clk, nodes)
	ctx := context.Background()
	// sees writes an agent's own status: its sessions with gateways.
	sees := func(agent string, connected map[string]bool) {
		t.Helper()
		obj, err := src.Get(ctx, "Agent", agent)
		if err != nil {
			t.Fatal(err)
		}
		a := obj.(*api.Agent)
		a.Status.Gateways = nil
		for _, g := range []string{"g1", "g2"} {
			if c, ok := connected[g]; ok {
				a.Status.Gateways = append(a.Status.Gateways, api.NodePeerStatus{Name: g, Connected: c})
			}
		}
		if _, err := src.UpdateStatus(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	both := map[string]bool{"g1": true, "g2": true}
	for i := range n {
		sees(fmt.Sprintf("agent-%04d", i), both)
	}
	sum := func(name string, answered int, list map[string]string) {
		t.Helper()
		obj, err := src.Get(ctx, "Gateway", name)
		if err != nil {
			t.Fatal(err)
		}
		gw := obj.(*api.Gateway)
		gw.Status.Peers = &api.PeerCounts{Total: n, Connected: n, Answered: answered}
		gw.Status.Agents = nil
		for _, a := range slices.Sorted(maps.Keys(list)) {
			gw.Status.Agents = append(gw.Status.Agents, api.NodePeerStatus{Name: a, Connected: true, Probe: list[a]})
		}
		if _, err := src.UpdateStatus(ctx, gw); err != nil {
			t.Fatal(err)
		}
	}
	sum("g1", n-2, g1.probes)
	sum("g2", n-1, g2.probes)

	r, infs := livenessWithHandlers(t, src, clk)
	lease := r.lease()
	agent := func(name string) api.Condition { return r.agentDataPath(name, clk.Now(), lease) }
	want := func(what string, c api.Condition, reason, message string) {
		t.Helper()
		if c.Reason != reason || !strings.Contains(c.Message, message) {
			t.Fatalf("%s: %s (%s), want %s with %q", what, c.Reason, c.Message, reason, message)
		}
	}
	settle := func(kind, name string) {
		t.Helper()
		obj, _ := src.Get(ctx, kind, name)
		eventually(t, "the informer to hold "+kind+" "+name, func() bool {
			got, ok := infs[kind].Get(name)
			return ok && got.GetMeta().ResourceVersion == obj.GetMeta().ResourceVersion
		})
	}
	want("an agent neither gateway lists", agent("agent-0007"), api.ReasonProbeSucceeded, "g1, g2")
	want("an agent both gateways list as failed", agent("agent-0001"), api.ReasonProbeFailed, "g1: failed: timeout")
	want("an agent one lists as not yet probed", agent("agent-0002"), api.ReasonProbeSucceeded, "gateways g2 reach")
	obj, _ := infs["Gateway"].Get("g1")
	want("g1", r.gatewayDataPath(obj.(*api.Gateway), true, clk.Now(), lease), api.ReasonProbeSucceeded, "")

	// An agent whose status shows no session with a gateway: that gateway
	// not listing it says nothing (it may not have it as a peer yet).
	sees("agent-0007", nil)
	settle("Agent", "agent-0007")
	want("an agent with no session shown", agent("agent-0007"), ReasonProbePending, "g1, g2")
	sees("agent-0007", map[string]bool{"g1": true, "g2": false})
	settle("Agent", "agent-0007")
	want("an agent with a session with g1 only", agent("agent-0007"), api.ReasonProbeSucceeded, "gateways g1 reach")

	// More agents in trouble than a list of ListedPeers: all are listed,
	// and the rest are still judged to answer.
	failing := map[string]string{}
	for i := 100; i < 100+api.ListedPeers+1; i++ {
		failing[fmt.Sprintf("agent-%04d", i)] = "failed: timeout"
	}
	sum("g1", n-len(failing), failing)
	sum("g2", n-len(failing), failing)
	settle("Gateway", "g1")
	settle("Gateway", "g2")
	want("an agent neither lists, with 501 in trouble", agent("agent-0008"), api.ReasonProbeSucceeded, "g1, g2")
	want("one of the 501", agent("agent-0100"), api.ReasonProbeFailed, "g1: failed: timeout")
	obj, _ = infs["Gateway"].Get("g2")
	want("g2 with 501 in trouble", r.gatewayDataPath(obj.(*api.Gateway), true, clk.Now(), lease), api.ReasonProbeSucceeded, "")

	// A gateway whose probes all failed judges itself so, though some
	// connected agents are not its peers and so not in its list.
	all := map[string]string{}
	for i := range api.ListedPeers + 1 {
		all[fmt.Sprintf("agent-%04d", i)] = "failed: timeout"
	}
	sum("g2", 0, all)
	settle("Gateway", "g2")
	obj, _ = infs["Gateway"].Get("g2")
	want("g2 reaching none", r.gatewayDataPath(obj.(*api.Gateway), true, clk.Now(), lease), api.ReasonProbeFailed, "")
}

// TestGatewayVerdictFollowsItsOwnReports: a gateway judged from a new
// object, before any informer handler has read its reports, is judged
// from them, not answered with the verdict kept for the object before.
func TestGatewayVerdictFollowsItsOwnReports(t *testing.T) {
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	g1 := gatewayFix("g1", "100.65.0.1")
	g1.probes = map[string]string{"a1": ProbeOK}
	createAll(t, src, clk, []nodeFix{agentFix("a1", "100.64.0.1"), g1})
	infs, _ := startInformers(t, src)
	r := &NodeLivenessReconciler{Store: src, Agents: infs["Agent"], Gateways: infs["Gateway"], Now: clk.Now}
	obj, _ := infs["Gateway"].Get("g1")
	gw := obj.(*api.Gateway)
	for range 2 {
		if c := r.gatewayDataPath(gw, true, clk.Now(), r.lease()); c.Reason != api.ReasonProbeSucceeded {
			t.Fatalf("g1: %s (%s), want ProbeSucceeded", c.Reason, c.Message)
		}
	}
	next := api.Clone(gw)
	next.Status.Agents[0].Probe = "failed: timeout"
	if c := r.gatewayDataPath(next, true, clk.Now(), r.lease()); c.Reason != api.ReasonProbeFailed {
		t.Fatalf("g1's next object, its probe failed: %s (%s), want ProbeFailed", c.Reason, c.Message)
	}
}

// livenessWithHandlers starts informers on src and a liveness reconciler
// on them, with its informer handlers added as the manager adds them
// (enqueueing nothing: the tests judge by hand).
func livenessWithHandlers(t *testing.T, src *reconciletest.Source, clk *clock) (*NodeLivenessReconciler, map[string]*reconcile.Informer) {
	t.Helper()
	infs, _ := startInformers(t, src)
	r := &NodeLivenessReconciler{Store: src, Agents: infs["Agent"], Gateways: infs["Gateway"], Now: clk.Now}
	infs["Agent"].AddHandler(r.onAgentChange(func(reconcile.Request) {}))
	infs["Gateway"].AddHandler(r.onGatewayChange(func(reconcile.Request) {}))
	return r, infs
}
