package controllers

import (
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
)

// nodeBeats finds when Control last heard from a node (api.LastHeard):
// from the lastHeartbeat its status was last written with and its lease
// (api.NodeLease), which the bridge renews between status writes.
type nodeBeats struct {
	// leases is a synced informer of NodeLeases; nil: statuses only.
	leases *reconcile.Informer
}

// of returns obj's latest heartbeat, nil if it never had one. The time is
// shared with the caches: read only.
func (b nodeBeats) of(obj api.Object) *time.Time {
	_, st, _, ok := nodeParts(obj)
	if !ok {
		return nil
	}
	if b.leases == nil {
		return st.LastHeartbeat
	}
	name, _ := api.NodeLeaseName(obj.GetTypeMeta().Kind, obj.GetMeta().Name)
	var renewed *time.Time
	if cached, ok := b.leases.Get(name); ok {
		if l, ok := cached.(*api.NodeLease); ok {
			renewed = &l.RenewTime
		}
	}
	return api.LastHeard(st.LastHeartbeat, renewed, obj.GetMeta().CreationTimestamp)
}

func (r *NodeLivenessReconciler) beats() nodeBeats { return nodeBeats{leases: r.Leases} }

func (r *TunnelStatusReconciler) beats() nodeBeats { return nodeBeats{leases: r.Leases} }
