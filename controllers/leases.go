package controllers

import (
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
)

// nodeBeats finds when Control last heard from a node: the later of the
// lastHeartbeat its status was last written with and its lease
// (api.NodeLease), which the bridge renews between status writes. A lease
// older than the node itself is one a deleted node of the same name left
// behind, and is not its.
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
	beat := st.LastHeartbeat
	if b.leases == nil {
		return beat
	}
	name, _ := api.NodeLeaseName(obj.GetTypeMeta().Kind, obj.GetMeta().Name)
	cached, ok := b.leases.Get(name)
	if !ok {
		return beat
	}
	l, ok := cached.(*api.NodeLease)
	if !ok || l.RenewTime.Before(obj.GetMeta().CreationTimestamp) {
		return beat
	}
	if beat == nil || l.RenewTime.After(*beat) {
		return &l.RenewTime
	}
	return beat
}

// nodeOfLease returns the key of the node a lease belongs to.
func nodeOfLease(obj api.Object) (api.Key, bool) {
	if obj == nil {
		return api.Key{}, false
	}
	name := obj.GetMeta().Name
	for _, k := range []string{"Agent", "Gateway"} {
		prefix, _ := api.NodeLeaseName(k, "")
		if len(name) > len(prefix) && name[:len(prefix)] == prefix {
			return api.Key{Kind: k, Name: name[len(prefix):]}, true
		}
	}
	return api.Key{}, false
}

func (r *TunnelStatusReconciler) beats() nodeBeats { return nodeBeats{leases: r.Leases} }
