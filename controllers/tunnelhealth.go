package controllers

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
)

// Condition types and reasons of a Tunnel written by the tunnel-status
// loop, besides those package api defines.
const (
	// TunnelPortAvailable is True when a tcp tunnel owns its
	// spec.publicPort on the gateways. http(s) tunnels do not carry it.
	TunnelPortAvailable = "PublicPortAvailable"

	// ReasonPortClaimed: the tunnel is the owner of its public port.
	ReasonPortClaimed = "PublicPortClaimed"
	// ReasonAgentConnected: the tunnel's agent is connected.
	ReasonAgentConnected = "AgentConnected"
	// ReasonAgentDisabled: the tunnel's agent is disabled and serves
	// nothing.
	ReasonAgentDisabled = "AgentDisabled"
	// ReasonTargetReachable: the agent reports that the target answers.
	ReasonTargetReachable = "TargetReachable"
	// ReasonTargetNotProbed: the agent has not reported on the target yet.
	ReasonTargetNotProbed = "TargetNotProbed"
	// ReasonServing: at least one connected gateway serves the tunnel.
	ReasonServing = "Serving"
	// ReasonPending is the reason of a status.gateways entry whose
	// gateway has not yet applied a slice as new as the tunnel.
	ReasonPending = "Pending"
)

// tunnelReadyInputs are the conditions that must all be True for an
// enabled tunnel to be Ready, in the order their failures are reported:
// a tunnel that owns no name cannot be served, one whose agent is offline
// cannot reach its target, and so on down the path.
func tunnelReadyInputs(t *api.Tunnel) []string {
	in := []string{api.TunnelHostnameAvailable}
	if t.Spec.PublicPort != 0 {
		in = append(in, TunnelPortAvailable)
	}
	return append(in, api.TunnelAgentConnected, api.TunnelTargetReachable, api.TunnelRouted)
}

// observeDataPlane sets on next, the copy of the cached tunnel t being
// written, the conditions that depend on the rest of the fleet:
//
//   - PublicPortAvailable (tcp tunnels only): the oldest tunnel on a port
//     owns it, as with hostnames, among those that own their hostname;
//     the others are False (PortConflict).
//   - AgentConnected: True when spec.agent exists, is enabled and is
//     connected (the lease is judged afresh, not read from a condition
//     that may be stale); False AgentNotFound, AgentDisabled or
//     AgentOffline otherwise.
//   - TargetReachable: the connected agent's status.targets entry for the
//     tunnel; Unknown when there is none or the agent is not connected.
//   - Routed and status.gateways: one entry per enabled, connected
//     gateway. Gateways report how many routes they serve, not which, so
//     a gateway serves the tunnel when the slice revision it reports is
//     at least the revision the tunnel's spec took effect at (see
//     specRevision); until then its entry says Pending. Routed is True
//     when one serves, False (NoGatewayServing) otherwise. A tunnel that
//     owns neither its hostname nor its port is routed nowhere.
//
// It reports whether it changed anything.
func (r *TunnelStatusReconciler) observeDataPlane(t, next *api.Tunnel, ownsHostname bool, now time.Time) bool {
	st := &next.Status
	gen := t.Metadata.Generation
	lease := r.Lease
	if lease <= 0 {
		lease = DefaultNodeLease
	}
	changed := false
	set := func(c api.Condition) {
		c.ObservedGeneration = gen
		if api.SetCondition(&st.Conditions, c, now) {
			changed = true
		}
	}

	var conflict *api.Condition
	if !ownsHostname {
		if c := api.FindCondition(st.Conditions, api.TunnelHostnameAvailable); c != nil {
			lost := *c
			conflict = &lost
		}
	}
	if port := t.Spec.PublicPort; port != 0 {
		c := api.Condition{Type: TunnelPortAvailable}
		owner := r.portOwner(port)
		if owner == nil || owner.GetMeta().Name == t.Metadata.Name {
			c.Status, c.Reason = api.ConditionTrue, ReasonPortClaimed
			c.Message = fmt.Sprintf("this tunnel owns public port %d on every gateway", port)
		} else {
			c.Status, c.Reason = api.ConditionFalse, api.ReasonPortConflict
			c.Message = fmt.Sprintf("public port %d is already claimed by tunnel %q, created earlier; change spec.publicPort or delete that tunnel",
				port, owner.GetMeta().Name)
			if conflict == nil {
				conflict = &c
			}
		}
		set(c)
	} else if api.RemoveCondition(&st.Conditions, TunnelPortAvailable) {
		changed = true
	}

	agentCond := api.Condition{Type: api.TunnelAgentConnected}
	target := api.Condition{Type: api.TunnelTargetReachable}
	obj, found := r.Agents.Get(t.Spec.Agent)
	agent, _ := obj.(*api.Agent)
	switch {
	case !found || agent == nil:
		agentCond.Status, agentCond.Reason = api.ConditionFalse, api.ReasonAgentNotFound
		agentCond.Message = fmt.Sprintf("no agent named %q exists; create it or correct spec.agent", t.Spec.Agent)
		target.Status, target.Reason = api.ConditionUnknown, api.ReasonAgentNotFound
		target.Message = fmt.Sprintf("no agent named %q exists to reach %s", t.Spec.Agent, t.Spec.Target)
	case !agent.Spec.IsEnabled():
		agentCond.Status, agentCond.Reason = api.ConditionFalse, ReasonAgentDisabled
		agentCond.Message = fmt.Sprintf("agent %q is disabled (its spec.enabled is false)", t.Spec.Agent)
		target.Status, target.Reason = api.ConditionUnknown, ReasonAgentDisabled
		target.Message = fmt.Sprintf("agent %q is disabled and does not reach %s", t.Spec.Agent, t.Spec.Target)
	default:
		conn, _ := connectedCondition(r.beats().of(agent), agent.Status.Conditions, now, lease)
		if conn.Status == api.ConditionTrue {
			agentCond.Status, agentCond.Reason = api.ConditionTrue, ReasonAgentConnected
			agentCond.Message = fmt.Sprintf("agent %q is connected", t.Spec.Agent)
			target = targetCondition(agent, t)
		} else {
			agentCond.Status, agentCond.Reason = api.ConditionFalse, api.ReasonAgentOffline
			agentCond.Message = fmt.Sprintf("agent %q is offline: %s", t.Spec.Agent, conn.Message)
			target.Status, target.Reason = api.ConditionUnknown, api.ReasonAgentOffline
			target.Message = fmt.Sprintf("agent %q is offline, so whether it reaches %s is not known", t.Spec.Agent, t.Spec.Target)
		}
	}
	set(agentCond)
	set(target)

	gateways, routed := r.routes(t, conflict, now, lease)
	if !slices.Equal(st.Gateways, gateways) {
		st.Gateways = gateways
		changed = true
	}
	set(routed)
	return changed
}

// portOwner returns the tunnel that owns a public port: the oldest of
// the tunnels on it that own their hostname, since a tunnel that is
// routed nowhere cannot hold a port either (the bridge computes routes by
// the same rule). Nil when none does.
func (r *TunnelStatusReconciler) portOwner(port int) api.Object {
	var contenders []api.Object
	for _, obj := range r.Tunnels.ByIndex(publicPortIndex, strconv.Itoa(port)) {
		host := obj.(*api.Tunnel).Spec.Hostname
		if owner := hostnameOwner(r.Tunnels.ByIndex(hostnameIndex, host)); owner == nil || owner.GetMeta().Name == obj.GetMeta().Name {
			contenders = append(contenders, obj)
		}
	}
	return hostnameOwner(contenders)
}

// targetCondition reads a connected agent's report on the tunnel's
// target.
func targetCondition(agent *api.Agent, t *api.Tunnel) api.Condition {
	c := api.Condition{Type: api.TunnelTargetReachable}
	for _, ts := range agent.Status.Targets {
		if ts.Tunnel != t.Metadata.Name {
			continue
		}
		if ts.Reachable {
			c.Status, c.Reason = api.ConditionTrue, ReasonTargetReachable
			c.Message = fmt.Sprintf("agent %q reaches %s", agent.Metadata.Name, t.Spec.Target)
			return c
		}
		why := ts.Message
		if why == "" {
			why = "no answer"
		}
		c.Status, c.Reason = api.ConditionFalse, api.ReasonTargetUnreachable
		c.Message = fmt.Sprintf("agent %q cannot reach %s: %s", agent.Metadata.Name, t.Spec.Target, why)
		return c
	}
	c.Status, c.Reason = api.ConditionUnknown, ReasonTargetNotProbed
	c.Message = fmt.Sprintf("agent %q has not reported on %s yet", agent.Metadata.Name, t.Spec.Target)
	return c
}

// routes returns the tunnel's status.gateways and its Routed condition.
// conflict, when not nil, is the claim the tunnel lost.
func (r *TunnelStatusReconciler) routes(t *api.Tunnel, conflict *api.Condition, now time.Time, lease time.Duration) ([]api.TunnelGatewayStatus, api.Condition) {
	c := api.Condition{Type: api.TunnelRouted}
	since := r.specRevision(t)
	// A gateway found serving this generation stays serving while it is
	// connected: its revision only grows. This also carries the verdicts
	// of an earlier Control over a restart, when since is not known
	// precisely (see specRevision).
	wasServing := map[string]bool{}
	if t.Status.ObservedGeneration == t.Metadata.Generation {
		for _, g := range t.Status.Gateways {
			wasServing[g.Name] = g.Serving
		}
	}
	var out []api.TunnelGatewayStatus
	var serving, pending []string
	for _, obj := range r.Gateways.List() {
		if !isConnected(obj, r.beats().of(obj), now, lease) {
			continue
		}
		gw := obj.(*api.Gateway)
		e := api.TunnelGatewayStatus{Name: gw.Metadata.Name}
		switch {
		case conflict != nil:
			e.Reason = conflict.Reason
		case gw.Status.Revision >= since || wasServing[e.Name]:
			e.Serving = true
			serving = append(serving, e.Name)
		default:
			e.Reason = ReasonPending
			pending = append(pending, e.Name)
		}
		out = append(out, e)
	}
	switch {
	case conflict != nil:
		c.Status, c.Reason = api.ConditionFalse, conflict.Reason
		c.Message = "no gateway routes this tunnel: " + conflict.Message
	case len(serving) > 0:
		c.Status, c.Reason = api.ConditionTrue, ReasonServing
		c.Message = fmt.Sprintf("served by gateways %s", nameList(serving))
	case len(out) == 0:
		c.Status, c.Reason = api.ConditionFalse, api.ReasonNoGateway
		c.Message = "no enabled gateway is connected"
	default:
		c.Status, c.Reason = api.ConditionFalse, api.ReasonNoGateway
		c.Message = fmt.Sprintf("no connected gateway has applied this tunnel yet (pending on %s)", nameList(pending))
	}
	return out, c
}

// specMark records at which revision a reconciler first saw one
// generation of a tunnel.
type specMark struct {
	uid        string
	generation int64
	revision   int64
}

// specRevision returns the store revision from which the tunnel's
// current spec is in place: the resourceVersion with which this
// reconciler first saw its current generation. The tunnel's own
// resourceVersion will not do, since every status write (this loop's
// first of all) moves it past what gateways report, and a gateway's slice
// does not change, so its revision does not move, when only a tunnel's
// status does.
//
// After a restart the first resourceVersion seen may be a later status
// write; that errs on the late side, and gateways report the current
// revision once they reconnect to the restarted Control.
func (r *TunnelStatusReconciler) specRevision(t *api.Tunnel) int64 {
	rv, _ := strconv.ParseInt(t.Metadata.ResourceVersion, 10, 64)
	r.specMu.Lock()
	defer r.specMu.Unlock()
	if r.specRevs == nil {
		r.specRevs = map[string]specMark{}
	}
	m, ok := r.specRevs[t.Metadata.Name]
	if ok && m.uid == t.Metadata.UID && m.generation == t.Metadata.Generation {
		return m.revision
	}
	r.specRevs[t.Metadata.Name] = specMark{uid: t.Metadata.UID, generation: t.Metadata.Generation, revision: rv}
	return rv
}

// forgetSpecRevision drops what specRevision recorded of a tunnel that
// is gone.
func (r *TunnelStatusReconciler) forgetSpecRevision(name string) {
	r.specMu.Lock()
	defer r.specMu.Unlock()
	delete(r.specRevs, name)
}

// tunnelsOfAgent maps an agent to the tunnels that name it.
func tunnelsOfAgent(tunnels *reconcile.Informer) func(api.Object) []reconcile.Request {
	return func(obj api.Object) []reconcile.Request {
		var reqs []reconcile.Request
		for _, t := range tunnels.ByIndex(agentIndex, obj.GetMeta().Name) {
			reqs = append(reqs, reconcile.RequestFor(t))
		}
		return reqs
	}
}

// onGatewayChangeForTunnels returns an informer handler that enqueues
// the tunnels a change to a gateway can move: all of them when the
// gateway comes, goes, connects, disconnects or is enabled or disabled;
// those still pending on it when its revision grows; none for a
// heartbeat that changes neither.
func onGatewayChangeForTunnels(tunnels *reconcile.Informer, enqueue func(reconcile.Request)) func(reconcile.Change) {
	return func(ch reconcile.Change) {
		if ch.Resync {
			return
		}
		if linkOf(ch.Old) != linkOf(ch.New) {
			for _, t := range tunnels.List() {
				enqueue(reconcile.RequestFor(t))
			}
			return
		}
		before, _ := ch.Old.(*api.Gateway)
		after, _ := ch.New.(*api.Gateway)
		if before == nil || after == nil || after.Status.Revision <= before.Status.Revision {
			return
		}
		for _, t := range tunnels.ByIndex(pendingGatewayIndex, after.Metadata.Name) {
			enqueue(reconcile.RequestFor(t))
		}
	}
}
