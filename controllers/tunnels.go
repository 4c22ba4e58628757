package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
)

// hostnameIndex names the tunnel informer's index by spec.hostname.
const hostnameIndex = "hostname"

func indexByHostname(obj api.Object) []string {
	t, ok := obj.(*api.Tunnel)
	if !ok || t.Spec.Hostname == "" {
		return nil
	}
	return []string{t.Spec.Hostname}
}

// sameHostname maps a tunnel to itself and every tunnel that shares its
// hostname: a change to one can change which of them owns it.
func sameHostname(tunnels *reconcile.Informer, obj api.Object) []reconcile.Request {
	reqs := []reconcile.Request{reconcile.RequestFor(obj)}
	t, ok := obj.(*api.Tunnel)
	if !ok {
		return reqs
	}
	for _, other := range tunnels.ByIndex(hostnameIndex, t.Spec.Hostname) {
		if other.GetMeta().Name != t.Metadata.Name {
			reqs = append(reqs, reconcile.RequestFor(other))
		}
	}
	return reqs
}

// ReasonWaiting is the reason of a Ready condition that is Unknown
// because a condition it depends on has not been observed yet.
const ReasonWaiting = "Waiting"

// TunnelStatusReconciler writes a tunnel's HostnameAvailable and Ready
// conditions and its observedGeneration.
//
// Among the tunnels that share a hostname the oldest owns it (by
// creationTimestamp, then name): it is HostnameAvailable=True
// (HostnameClaimed), the others HostnameAvailable=False and Ready=False
// (HostnameConflict, naming the owner). A disabled tunnel keeps its claim,
// like a reserved name, so that turning a tunnel off for a while never
// hands its hostname to someone else; it is Ready=False (Disabled). So
// does a tunnel being deleted, until it is gone: two tunnels never both
// own a hostname. When the owner goes, the next oldest becomes the owner.
// Control's own public name (ControlHostname) is owned by no tunnel:
// HostnameAvailable=False and Ready=False (HostnameReservedForControl).
//
// The conditions that depend on the rest of the fleet (the public port
// of a tcp tunnel, its agent, its target, the gateways serving it) and
// status.gateways are set by observeDataPlane.
//
// Ready is computed from the other conditions (see tunnelReadyInputs), so
// that later loops feeding it only have to add their condition.
type TunnelStatusReconciler struct {
	// Store receives the status writes. Required.
	Store Store
	// Tunnels is a synced informer of tunnels with the hostname index
	// (New sets it up). Required.
	Tunnels *reconcile.Informer
	// Agents and Gateways are synced informers of the node kinds.
	// Required.
	Agents, Gateways *reconcile.Informer
	// Leases is a synced informer of the nodes' leases (api.NodeLease);
	// nil judges nodes by the lastHeartbeat of their statuses alone.
	Leases *reconcile.Informer
	// Lease is how long after its last heartbeat a node counts as
	// connected; zero means DefaultNodeLease.
	Lease time.Duration
	// Now stamps condition transitions; nil means time.Now.
	Now func() time.Time
	// Logger receives the reconciler's logs; nil discards them.
	Logger *slog.Logger
	// ControlHostname is Control's own public name, "" for none. No
	// tunnel owns it: every tunnel that claims it is
	// HostnameAvailable=False (HostnameReservedForControl).
	ControlHostname string

	specMu   sync.Mutex          // guards specRevs
	specRevs map[string]specMark // by tunnel name; see specRevision
}

// Reconcile brings one tunnel's status up to date. A tunnel that is gone
// needs nothing: the tunnels that shared its hostname were enqueued by its
// deletion. The status is written once, and only when it changed; a write
// that conflicts is returned, so the key is retried on fresh state.
func (r *TunnelStatusReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if r.Agents == nil || r.Gateways == nil {
		return reconcile.Result{}, reconcile.Terminal(fmt.Errorf("reconcile %s: no agent or gateway informer", req))
	}
	obj, ok := r.Tunnels.Get(req.Key.Name)
	if !ok {
		r.forgetSpecRevision(req.Key.Name)
		return reconcile.Result{}, nil
	}
	t, ok := obj.(*api.Tunnel)
	if !ok {
		return reconcile.Result{}, reconcile.Terminal(fmt.Errorf("reconcile %s: the cache holds a %T", req, obj))
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	next := api.Clone(t)
	st := next.GetStatus()
	gen := t.Metadata.Generation
	changed := st.ObservedGeneration != gen
	st.ObservedGeneration = gen

	owner := hostnameOwner(r.Tunnels.ByIndex(hostnameIndex, t.Spec.Hostname))
	if owner == nil {
		owner = t // not indexed yet (empty hostname): nobody contests it
	}
	avail := api.Condition{Type: api.TunnelHostnameAvailable, ObservedGeneration: gen}
	switch {
	case r.ControlHostname != "" && t.Spec.Hostname == r.ControlHostname:
		avail.Status, avail.Reason = api.ConditionFalse, api.ReasonHostnameReservedForControl
		avail.Message = fmt.Sprintf("hostname %s is Control's own public name (--public-hostname) and cannot be a tunnel's: no certificate is obtained for this tunnel; change its hostname",
			t.Spec.Hostname)
	case owner.GetMeta().Name == t.Metadata.Name:
		avail.Status, avail.Reason = api.ConditionTrue, api.ReasonHostnameClaimed
		avail.Message = fmt.Sprintf("this tunnel owns hostname %s", t.Spec.Hostname)
	default:
		avail.Status, avail.Reason = api.ConditionFalse, api.ReasonHostnameConflict
		avail.Message = fmt.Sprintf("hostname %s is already claimed by tunnel %q, created earlier; change the hostname or delete that tunnel",
			t.Spec.Hostname, owner.GetMeta().Name)
	}
	if api.SetCondition(&st.Conditions, avail, now()) {
		changed = true
	}
	if r.observeDataPlane(t, next, avail.Status == api.ConditionTrue, now()) {
		changed = true
	}
	ready := readyCondition(t.Spec.IsEnabled(), st.Conditions, tunnelReadyInputs(t), gen)
	if api.SetCondition(&st.Conditions, ready, now()) {
		changed = true
	}
	if !changed {
		return reconcile.Result{}, nil
	}
	if _, err := r.Store.UpdateStatus(ctx, next); err != nil {
		if errors.Is(err, api.ErrNotFound) {
			return reconcile.Result{}, nil // deleted meanwhile: nothing to report on
		}
		return reconcile.Result{}, fmt.Errorf("reconcile %s: %w", req, err)
	}
	if r.Logger != nil {
		r.Logger.Debug("tunnel status written", "tunnel", t.Metadata.Name, "hostname", t.Spec.Hostname,
			"owner", owner.GetMeta().Name, "ready", ready.Status, "reason", ready.Reason)
	}
	return reconcile.Result{}, nil
}

// hostnameOwner returns the oldest of the tunnels (by creationTimestamp,
// then name), nil if there are none.
func hostnameOwner(tunnels []api.Object) api.Object {
	if len(tunnels) == 0 {
		return nil
	}
	return slices.MinFunc(tunnels, func(a, b api.Object) int {
		am, bm := a.GetMeta(), b.GetMeta()
		if c := am.CreationTimestamp.Compare(bm.CreationTimestamp); c != 0 {
			return c
		}
		switch {
		case am.Name < bm.Name:
			return -1
		case am.Name > bm.Name:
			return 1
		}
		return 0
	})
}

// readyCondition sums conds up: a disabled object is not Ready; an
// enabled one is Ready when every input condition is True, and otherwise
// carries the status, reason and message of the first input that is not
// (Unknown with ReasonWaiting for one not observed yet).
func readyCondition(enabled bool, conds []api.Condition, inputs []string, gen int64) api.Condition {
	c := api.Condition{Type: api.ConditionReady, ObservedGeneration: gen}
	if !enabled {
		c.Status, c.Reason = api.ConditionFalse, api.ReasonDisabled
		c.Message = "the tunnel is disabled (spec.enabled is false)"
		return c
	}
	for _, typ := range inputs {
		in := api.FindCondition(conds, typ)
		switch {
		case in == nil:
			c.Status, c.Reason = api.ConditionUnknown, ReasonWaiting
			c.Message = fmt.Sprintf("waiting for the %s condition", typ)
			return c
		case in.Status != api.ConditionTrue:
			c.Status, c.Reason, c.Message = in.Status, in.Reason, in.Message
			return c
		}
	}
	c.Status, c.Reason = api.ConditionTrue, api.ReasonReady
	c.Message = "the tunnel is ready"
	return c
}
