package controllers

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

// tcpTunnel returns a tcp tunnel on agent-1 with a public port.
func tcpTunnel(name, host string, port int) *api.Tunnel {
	t := tunnel(name, host)
	t.Spec.Target, t.Spec.PublicPort = "tcp://db:5432", port
	return t
}

func TestTunnelDataPlaneReconcile(t *testing.T) {
	type cond struct{ status, reason string } // status "" means absent
	type want struct {
		agent, target, routed, port, ready cond
		gateways                           []api.TunnelGatewayStatus
		msgHas                             string // in the Ready message
	}
	agent := agentFix("agent-1", "100.64.0.1")
	agent.targets = map[string]bool{"web": true, "db": true, "db2": true}
	unreachable := agent
	unreachable.targets, unreachable.targetMsg = map[string]bool{"web": false}, "dial tcp 127.0.0.1:8080: connection refused"
	silent := agent
	silent.targets = nil
	expiredAgent := agent
	expiredAgent.heartbeat = 5 * time.Minute
	disabledAgent := agent
	disabledAgent.disabled = true
	gwA, gwB := gatewayFix("gw-a", "100.64.0.2"), gatewayFix("gw-b", "100.64.0.3")
	behind := gwB
	behind.revision = 1
	expiredGw := gwB
	expiredGw.heartbeat = 5 * time.Minute
	disabledGw := gwB
	disabledGw.disabled = true
	serving := func(names ...string) []api.TunnelGatewayStatus {
		var out []api.TunnelGatewayStatus
		for _, n := range names {
			out = append(out, api.TunnelGatewayStatus{Name: n, Serving: true})
		}
		return out
	}
	notServing := func(reason string, names ...string) []api.TunnelGatewayStatus {
		var out []api.TunnelGatewayStatus
		for _, n := range names {
			out = append(out, api.TunnelGatewayStatus{Name: n, Reason: reason})
		}
		return out
	}
	yes := func(reason string) cond { return cond{"True", reason} }
	no := func(reason string) cond { return cond{"False", reason} }
	unknown := func(reason string) cond { return cond{"Unknown", reason} }
	tests := []struct {
		name    string
		tunnels []*api.Tunnel // created a minute apart, in order
		nodes   []nodeFix
		target  string
		want    want
	}{
		{"everything holds",
			[]*api.Tunnel{tunnel("web", "web.example.com")}, []nodeFix{agent, gwA}, "web",
			want{yes(ReasonAgentConnected), yes(ReasonTargetReachable), yes(ReasonServing), cond{}, yes(api.ReasonReady),
				serving("gw-a"), "ready"}},
		{"no such agent",
			[]*api.Tunnel{tunnel("web", "web.example.com")}, []nodeFix{gwA}, "web",
			want{no(api.ReasonAgentNotFound), unknown(api.ReasonAgentNotFound), yes(ReasonServing), cond{}, no(api.ReasonAgentNotFound),
				serving("gw-a"), `"agent-1"`}},
		{"the agent is offline",
			[]*api.Tunnel{tunnel("web", "web.example.com")}, []nodeFix{expiredAgent, gwA}, "web",
			want{no(api.ReasonAgentOffline), unknown(api.ReasonAgentOffline), yes(ReasonServing), cond{}, no(api.ReasonAgentOffline),
				serving("gw-a"), "no heartbeat since"}},
		{"the agent is disabled",
			[]*api.Tunnel{tunnel("web", "web.example.com")}, []nodeFix{disabledAgent, gwA}, "web",
			want{no(ReasonAgentDisabled), unknown(ReasonAgentDisabled), yes(ReasonServing), cond{}, no(ReasonAgentDisabled),
				serving("gw-a"), "disabled"}},
		{"the target refuses",
			[]*api.Tunnel{tunnel("web", "web.example.com")}, []nodeFix{unreachable, gwA}, "web",
			want{yes(ReasonAgentConnected), no(api.ReasonTargetUnreachable), yes(ReasonServing), cond{}, no(api.ReasonTargetUnreachable),
				serving("gw-a"), "connection refused"}},
		{"the agent has not probed the target yet",
			[]*api.Tunnel{tunnel("web", "web.example.com")}, []nodeFix{silent, gwA}, "web",
			want{yes(ReasonAgentConnected), unknown(ReasonTargetNotProbed), yes(ReasonServing), cond{}, unknown(ReasonTargetNotProbed),
				serving("gw-a"), "not reported"}},
		{"no gateway at all",
			[]*api.Tunnel{tunnel("web", "web.example.com")}, []nodeFix{agent}, "web",
			want{yes(ReasonAgentConnected), yes(ReasonTargetReachable), no(api.ReasonNoGateway), cond{}, no(api.ReasonNoGateway),
				nil, "no enabled gateway is connected"}},
		{"a gateway that has not applied the tunnel yet",
			[]*api.Tunnel{tunnel("web", "web.example.com")}, []nodeFix{agent, behind}, "web",
			want{yes(ReasonAgentConnected), yes(ReasonTargetReachable), no(api.ReasonNoGateway), cond{}, no(api.ReasonNoGateway),
				notServing(ReasonPending, "gw-b"), "pending on gw-b"}},
		{"one gateway serving is enough; the other is pending",
			[]*api.Tunnel{tunnel("web", "web.example.com")}, []nodeFix{agent, gwA, behind}, "web",
			want{yes(ReasonAgentConnected), yes(ReasonTargetReachable), yes(ReasonServing), cond{}, yes(api.ReasonReady),
				append(serving("gw-a"), notServing(ReasonPending, "gw-b")...), "ready"}},
		{"gateways offline or disabled are not listed",
			[]*api.Tunnel{tunnel("web", "web.example.com")}, []nodeFix{agent, gwA, expiredGw, func() nodeFix { f := disabledGw; f.name = "gw-c"; return f }()}, "web",
			want{yes(ReasonAgentConnected), yes(ReasonTargetReachable), yes(ReasonServing), cond{}, yes(api.ReasonReady),
				serving("gw-a"), "ready"}},
		{"the older tcp tunnel owns the port",
			[]*api.Tunnel{tcpTunnel("db", "db.example.com", 5432), tcpTunnel("db2", "db2.example.com", 5432)}, []nodeFix{agent, gwA}, "db",
			want{yes(ReasonAgentConnected), yes(ReasonTargetReachable), yes(ReasonServing), yes(ReasonPortClaimed), yes(api.ReasonReady),
				serving("gw-a"), "ready"}},
		{"the newer tcp tunnel on the port conflicts and is routed nowhere",
			[]*api.Tunnel{tcpTunnel("db", "db.example.com", 5432), tcpTunnel("db2", "db2.example.com", 5432)}, []nodeFix{agent, gwA}, "db2",
			want{yes(ReasonAgentConnected), yes(ReasonTargetReachable), no(api.ReasonPortConflict), no(api.ReasonPortConflict), no(api.ReasonPortConflict),
				notServing(api.ReasonPortConflict, "gw-a"), `tunnel "db"`}},
		{"a tcp tunnel that lost its hostname holds no port",
			[]*api.Tunnel{tunnel("web", "shared.example.com"), tcpTunnel("db", "shared.example.com", 5432), tcpTunnel("db2", "db2.example.com", 5432)},
			[]nodeFix{agent, gwA}, "db2",
			want{yes(ReasonAgentConnected), yes(ReasonTargetReachable), yes(ReasonServing), yes(ReasonPortClaimed), yes(api.ReasonReady),
				serving("gw-a"), "ready"}},
		{"tcp tunnels on other ports do not conflict",
			[]*api.Tunnel{tcpTunnel("db", "db.example.com", 5432), tcpTunnel("db2", "db2.example.com", 5433)}, []nodeFix{agent, gwA}, "db2",
			want{yes(ReasonAgentConnected), yes(ReasonTargetReachable), yes(ReasonServing), yes(ReasonPortClaimed), yes(api.ReasonReady),
				serving("gw-a"), "ready"}},
		{"a hostname loser is routed nowhere",
			[]*api.Tunnel{tunnel("db", "web.example.com"), tunnel("web", "web.example.com")}, []nodeFix{agent, gwA}, "web",
			want{yes(ReasonAgentConnected), yes(ReasonTargetReachable), no(api.ReasonHostnameConflict), cond{}, no(api.ReasonHostnameConflict),
				notServing(api.ReasonHostnameConflict, "gw-a"), `tunnel "db"`}},
		{"a disabled tunnel stays Disabled",
			[]*api.Tunnel{func() *api.Tunnel { t := tunnel("web", "web.example.com"); f := false; t.Spec.Enabled = &f; return t }()},
			[]nodeFix{agent, gwA}, "web",
			want{yes(ReasonAgentConnected), yes(ReasonTargetReachable), yes(ReasonServing), cond{}, no(api.ReasonDisabled),
				serving("gw-a"), "disabled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
			for _, tn := range tt.tunnels {
				mustCreate(t, src, tn)
				clk.Advance(time.Minute)
			}
			createAll(t, src, clk, tt.nodes)
			infs, _ := startInformers(t, src)
			r := &TunnelStatusReconciler{Store: src, Tunnels: infs["Tunnel"], Agents: infs["Agent"], Gateways: infs["Gateway"], Now: clk.Now}
			if _, err := r.Reconcile(context.Background(), reconcile.Request{Key: api.Key{Kind: "Tunnel", Name: tt.target}}); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			got := getTunnel(t, src, tt.target)
			for _, c := range []struct {
				typ  string
				want cond
			}{
				{api.TunnelAgentConnected, tt.want.agent},
				{api.TunnelTargetReachable, tt.want.target},
				{api.TunnelRouted, tt.want.routed},
				{TunnelPortAvailable, tt.want.port},
				{api.ConditionReady, tt.want.ready},
			} {
				g := api.FindCondition(got.Status.Conditions, c.typ)
				switch {
				case c.want.status == "" && g != nil:
					t.Errorf("%s: got %s/%s, want no such condition", c.typ, g.Status, g.Reason)
				case c.want.status != "" && g == nil:
					t.Errorf("%s: got none, want %s/%s", c.typ, c.want.status, c.want.reason)
				case g != nil && (string(g.Status) != c.want.status || g.Reason != c.want.reason):
					t.Errorf("%s: got %s/%s (%q), want %s/%s", c.typ, g.Status, g.Reason, g.Message, c.want.status, c.want.reason)
				case g != nil && g.ObservedGeneration != got.Metadata.Generation:
					t.Errorf("%s observedGeneration: got %d, want %d", c.typ, g.ObservedGeneration, got.Metadata.Generation)
				}
			}
			if ready := condition(got, api.ConditionReady); !strings.Contains(ready.Message, tt.want.msgHas) {
				t.Errorf("Ready message: got %q, want it to contain %q", ready.Message, tt.want.msgHas)
			}
			if !slices.Equal(got.Status.Gateways, tt.want.gateways) {
				t.Errorf("status.gateways: got %+v, want %+v", got.Status.Gateways, tt.want.gateways)
			}
		})
	}
}

// TestTunnelRoutedFollowsTheSpecRevision checks that a gateway counts as
// serving once the revision it reports reaches the one the tunnel's spec
// took effect at, even though the tunnel's own status writes move its
// resourceVersion further; and that a spec change makes it pending again
// until the gateway catches up.
func TestTunnelRoutedFollowsTheSpecRevision(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	healthyFleet(t, src, clk, "web")
	setRevision := func(rev int64) {
		heartbeat(t, src, clk, "Gateway", "gw-1", func(o api.Object) { o.(*api.Gateway).Status.Revision = rev })
	}
	setRevision(0)
	created := mustCreate(t, src, tunnel("web", "web.example.com"))
	specRev, _ := strconv.ParseInt(created.GetMeta().ResourceVersion, 10, 64)
	infs, _ := startInformers(t, src)
	r := &TunnelStatusReconciler{Store: src, Tunnels: infs["Tunnel"], Agents: infs["Agent"], Gateways: infs["Gateway"], Now: clk.Now}
	reconcileNow := func() *api.Tunnel {
		t.Helper()
		waitCached(t, infs["Tunnel"], getTunnel(t, src, "web"))
		waitCached(t, infs["Gateway"], getNode(t, src, "Gateway", "gw-1"))
		if _, err := r.Reconcile(ctx, reconcile.Request{Key: api.Key{Kind: "Tunnel", Name: "web"}}); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		return getTunnel(t, src, "web")
	}
	routed := func(tn *api.Tunnel) string {
		c := condition(tn, api.TunnelRouted)
		return string(c.Status) + "/" + c.Reason
	}

	got := reconcileNow()
	if routed(got) != "False/"+api.ReasonNoGateway || got.Status.Gateways[0].Reason != ReasonPending {
		t.Fatalf("gateway at revision 0: got Routed %s, gateways %+v, want False/%s and gw-1 Pending", routed(got), got.Status.Gateways, api.ReasonNoGateway)
	}
	if rv, _ := strconv.ParseInt(got.Metadata.ResourceVersion, 10, 64); rv <= specRev {
		t.Fatalf("the status write did not move the resourceVersion (%d, spec at %d): the test proves nothing", rv, specRev)
	}
	setRevision(specRev) // the gateway applied the slice with the tunnel; the status write since is not in it
	if got = reconcileNow(); routed(got) != "True/"+ReasonServing {
		t.Fatalf("gateway at the spec's revision %d (tunnel at %s): got Routed %s, want True/%s", specRev, got.Metadata.ResourceVersion, routed(got), ReasonServing)
	}
	if got = reconcileNow(); routed(got) != "True/"+ReasonServing {
		t.Fatalf("after its own write: got Routed %s, want True/%s kept", routed(got), ReasonServing)
	}

	got.Spec.Target = "http://localhost:9090"
	updated, err := src.Update(ctx, got)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	newSpecRev, _ := strconv.ParseInt(updated.GetMeta().ResourceVersion, 10, 64)
	if got = reconcileNow(); routed(got) != "False/"+api.ReasonNoGateway {
		t.Fatalf("after a spec change the gateway has not seen: got Routed %s, want False/%s", routed(got), api.ReasonNoGateway)
	}
	setRevision(newSpecRev)
	if got = reconcileNow(); routed(got) != "True/"+ReasonServing || !got.Status.Gateways[0].Serving {
		t.Fatalf("gateway caught up with the new spec: got Routed %s, gateways %+v, want True/%s", routed(got), got.Status.Gateways, ReasonServing)
	}
}

// TestGatewayChangesWakeTunnels checks which tunnels a change to a
// gateway wakes.
func TestGatewayChangesWakeTunnels(t *testing.T) {
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	gatewayFix("gw", "100.64.0.2").create(t, src, clk)
	for _, name := range []string{"pending", "served"} {
		mustCreate(t, src, tunnel(name, name+".example.com"))
		tn := getTunnel(t, src, name)
		tn.Status.Gateways = []api.TunnelGatewayStatus{{Name: "gw", Serving: name == "served"}}
		if _, err := src.UpdateStatus(context.Background(), tn); err != nil {
			t.Fatalf("write status of %s: %v", name, err)
		}
	}
	infs, _ := startInformers(t, src)
	waitCached(t, infs["Tunnel"], getTunnel(t, src, "served"))
	base := getNode(t, src, "Gateway", "gw").(*api.Gateway)
	with := func(mod func(*api.Gateway)) api.Object {
		g := api.Clone(base)
		mod(g)
		return g
	}
	tests := []struct {
		name   string
		change reconcile.Change
		want   []string
	}{
		{"a newer revision wakes the tunnels pending on the gateway",
			reconcile.Change{Type: api.Modified, Old: base, New: with(func(g *api.Gateway) { g.Status.Revision++ })}, []string{"Tunnel/pending"}},
		{"a heartbeat wakes none",
			reconcile.Change{Type: api.Modified, Old: base, New: with(func(g *api.Gateway) { now := clk.Now(); g.Status.LastHeartbeat = &now })}, nil},
		{"a disabled gateway wakes all",
			reconcile.Change{Type: api.Modified, Old: base, New: with(func(g *api.Gateway) { f := false; g.Spec.Enabled = &f })}, []string{"Tunnel/pending", "Tunnel/served"}},
		{"a deleted gateway wakes all",
			reconcile.Change{Type: api.Deleted, Old: base}, []string{"Tunnel/pending", "Tunnel/served"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			onGatewayChangeForTunnels(infs["Tunnel"], func(r reconcile.Request) { got = append(got, r.String()) })(tt.change)
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("enqueued: got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestManagerTunnelReadinessEndToEnd walks a tunnel from a missing agent
// to Ready through every condition on the way, then through an agent
// disconnecting and back, as the Manager computes them from the bridge's
// writes. Nothing resyncs: every step must be woken by the change itself.
func TestManagerTunnelReadinessEndToEnd(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx := context.Background()
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	runManagerWith(t, Config{Store: src, Workers: 2, Resync: -1, Now: clk.Now, NodeLease: 40 * time.Second})

	ready := func() api.Condition { return condition(getTunnel(t, src, "web"), api.ConditionReady) }
	waitReady := func(what string, status api.ConditionStatus, reason string) {
		t.Helper()
		eventually(t, what, func() bool { r := ready(); return r.Status == status && r.Reason == reason })
	}
	mustCreate(t, src, tunnel("web", "web.example.com"))
	waitReady("no agent yet", api.ConditionFalse, api.ReasonAgentNotFound)

	mustCreate(t, src, &api.Agent{Metadata: api.ObjectMeta{Name: "agent-1"}})
	waitReady("the agent never connected", api.ConditionFalse, api.ReasonAgentOffline)
	heartbeat(t, src, clk, "Agent", "agent-1", nil)
	waitReady("the agent has not probed the target", api.ConditionUnknown, ReasonTargetNotProbed)
	heartbeat(t, src, clk, "Agent", "agent-1", func(o api.Object) {
		o.(*api.Agent).Status.Targets = []api.TargetStatus{{Tunnel: "web", Message: "connection refused"}}
	})
	waitReady("the target refuses", api.ConditionFalse, api.ReasonTargetUnreachable)
	heartbeat(t, src, clk, "Agent", "agent-1", func(o api.Object) {
		o.(*api.Agent).Status.Targets = []api.TargetStatus{{Tunnel: "web", Reachable: true}}
	})
	waitReady("no gateway", api.ConditionFalse, api.ReasonNoGateway)

	mustCreate(t, src, &api.Gateway{Metadata: api.ObjectMeta{Name: "gw-1"}})
	heartbeat(t, src, clk, "Gateway", "gw-1", nil)
	eventually(t, "gw-1 pending", func() bool {
		g := getTunnel(t, src, "web").Status.Gateways
		return len(g) == 1 && g[0].Name == "gw-1" && !g[0].Serving && g[0].Reason == ReasonPending
	})
	// The gateway applies a slice at the current revision: it serves.
	heartbeat(t, src, clk, "Gateway", "gw-1", func(o api.Object) { o.(*api.Gateway).Status.Revision = src.Revision() })
	waitReady("ready", api.ConditionTrue, api.ReasonReady)
	if g := getTunnel(t, src, "web").Status.Gateways; len(g) != 1 || !g[0].Serving {
		t.Fatalf("status.gateways: got %+v, want gw-1 serving", g)
	}

	// The bridge loses the agent: the tunnel follows.
	disconnect(t, src, clk, "Agent", "agent-1")
	waitReady("the agent disconnected", api.ConditionFalse, api.ReasonAgentOffline)
	heartbeat(t, src, clk, "Agent", "agent-1", nil)
	waitReady("ready again", api.ConditionTrue, api.ReasonReady)

	// Disabled stays as it is.
	tn := getTunnel(t, src, "web")
	off := false
	tn.Spec.Enabled = &off
	if _, err := src.Update(ctx, tn); err != nil {
		t.Fatalf("disable: %v", err)
	}
	waitReady("disabled", api.ConditionFalse, api.ReasonDisabled)
}

// TestManagerTunnelFollowsTheLease checks that a tunnel turns AgentOffline
// when its agent's lease runs out with no write from the bridge at all
// (Control lost it), and Ready again when heartbeats resume.
func TestManagerTunnelFollowsTheLease(t *testing.T) {
	leakcheck.Goroutines(t)
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	// The resync stands in for the wall-clock time RequeueAfter waits.
	runManagerWith(t, Config{Store: src, Workers: 2, Resync: 50 * time.Millisecond, Now: clk.Now, NodeLease: 40 * time.Second})
	healthyFleet(t, src, clk, "web")
	mustCreate(t, src, tunnel("web", "web.example.com"))
	ready := func(status api.ConditionStatus, reason string) func() bool {
		return func() bool {
			r := condition(getTunnel(t, src, "web"), api.ConditionReady)
			return r.Status == status && r.Reason == reason
		}
	}
	eventually(t, "ready", ready(api.ConditionTrue, api.ReasonReady))

	clk.Advance(41 * time.Second)
	eventually(t, "the agent offline", ready(api.ConditionFalse, api.ReasonAgentOffline))
	eventually(t, "no gateway listed", func() bool { return len(getTunnel(t, src, "web").Status.Gateways) == 0 })

	// Both come back, the gateway on the slice it kept, which has the
	// tunnel: it serves at once.
	heartbeat(t, src, clk, "Agent", "agent-1", nil)
	heartbeat(t, src, clk, "Gateway", "gw-1", nil)
	eventually(t, "ready again", ready(api.ConditionTrue, api.ReasonReady))
}

// TestSharesClaim checks which tunnels a change to one wakes: those on
// its hostname, those on its port, and those on the ports of its
// hostname rivals, whose claim on a port hangs on the hostname.
func TestSharesClaim(t *testing.T) {
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	for _, tn := range []*api.Tunnel{
		tunnel("web", "shared.example.com"),
		tcpTunnel("db", "shared.example.com", 5432),
		tcpTunnel("db2", "db2.example.com", 5432),
		tcpTunnel("other", "other.example.com", 6000),
		tunnel("lone", "lone.example.com"),
	} {
		mustCreate(t, src, tn)
	}
	infs, _ := startInformers(t, src)
	tests := []struct {
		changed string
		want    []string
	}{
		{"web", []string{"db", "db2", "web"}},
		{"db", []string{"db", "db2", "web"}},
		{"db2", []string{"db", "db2"}},
		{"other", []string{"other"}},
		{"lone", []string{"lone"}},
	}
	for _, tt := range tests {
		t.Run(tt.changed, func(t *testing.T) {
			obj, _ := infs["Tunnel"].Get(tt.changed)
			var got []string
			for _, r := range sharesClaim(infs["Tunnel"], obj) {
				got = append(got, r.Key.Name)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("enqueued: got %v, want %v", got, tt.want)
			}
		})
	}
}
