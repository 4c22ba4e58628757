package controllers

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
)

// Condition types and reasons of Agents and Gateways written by Control's
// loops, besides those package api defines.
const (
	// NodeAddressAssigned is True once the node holds an overlay address
	// (status.overlayAddress) that no other node holds.
	NodeAddressAssigned = "AddressAssigned"

	// ReasonAddressAssigned: the node holds its overlay address.
	ReasonAddressAssigned = "AddressAssigned"
	// ReasonOverlayExhausted: every address of the overlay prefix is held
	// by another node; deleting a node or widening the prefix frees one.
	ReasonOverlayExhausted = "OverlayExhausted"
	// ReasonNoAgents: a gateway has no connected agent to probe, so
	// nothing stands in the way of its data path.
	ReasonNoAgents = "NoAgents"
	// ReasonNoGatewayConnected: no enabled gateway is connected, so no
	// probe can tell whether the agent's data path works.
	ReasonNoGatewayConnected = "NoGatewayConnected"
	// ReasonProbePending: the connected peers have not reported a probe
	// of this node yet.
	ReasonProbePending = "ProbePending"
	// ReasonNotConnected: the gateway is not connected, so its probe
	// reports are not current.
	ReasonNotConnected = "NotConnected"
)

// ProbeOK is api.ProbeOK, the probe report of a probe that answered.
const ProbeOK = api.ProbeOK

// Defaults for zero Config fields of the node loops.
const (
	// DefaultNodeLease is how long after its last heartbeat a node still
	// counts as connected: four heartbeats (every ~10 s) may be lost.
	DefaultNodeLease = 40 * time.Second
	// DefaultOverlayPrefix is the overlay every node gets an address in:
	// carrier-grade NAT space, which users' LANs rarely use.
	DefaultOverlayPrefix = "100.64.0.0/10"
)

// nodeParts returns the parts of an Agent or Gateway the node loops
// read and write: whether it is enabled, its node status (a pointer into
// obj) and its peers as reported (gateways for an agent, agents for a
// gateway). ok is false for any other kind.
func nodeParts(obj api.Object) (enabled bool, st *api.NodeStatus, peers []api.NodePeerStatus, ok bool) {
	switch n := obj.(type) {
	case *api.Agent:
		return n.Spec.IsEnabled(), &n.Status.NodeStatus, n.Status.Gateways, true
	case *api.Gateway:
		return n.Spec.IsEnabled(), &n.Status.NodeStatus, n.Status.Agents, true
	}
	return false, nil, nil, false
}

// connectedCondition returns the Connected condition a node should carry
// at now, and how long until it would change by itself (the lease runs
// out), zero when only a new heartbeat can change it.
//
// The bridge sets Connected=True on each heartbeat it accepts and False
// when the connection closes. What it cannot do is notice that it is no
// longer there: a Control that crashed or restarted leaves True behind.
// So the lease rules: no heartbeat ever is Unknown (NeverConnected); a
// heartbeat older than the lease is False (HeartbeatExpired), whatever
// the bridge wrote. Within the lease the bridge's word stands, except
// that a fresh heartbeat overrides a verdict of this loop's (expired,
// never connected) or a missing condition: the heartbeat is proof.
func connectedCondition(beat *time.Time, conds []api.Condition, now time.Time, lease time.Duration) (api.Condition, time.Duration) {
	c := api.Condition{Type: api.NodeConnected}
	if beat == nil {
		c.Status, c.Reason = api.ConditionUnknown, api.ReasonNeverConnected
		c.Message = "no heartbeat has been received from this node yet"
		return c, 0
	}
	last := *beat
	left := last.Add(lease).Sub(now)
	if left <= 0 {
		c.Status, c.Reason = api.ConditionFalse, api.ReasonHeartbeatExpired
		c.Message = fmt.Sprintf("no heartbeat since %s (lease %s)", last.UTC().Format(time.RFC3339), lease)
		return c, 0
	}
	cur := api.FindCondition(conds, api.NodeConnected)
	if cur != nil && (cur.Status == api.ConditionTrue ||
		(cur.Status == api.ConditionFalse && cur.Reason != api.ReasonHeartbeatExpired)) {
		return *cur, left
	}
	c.Status, c.Reason = api.ConditionTrue, api.ReasonHeartbeat
	c.Message = fmt.Sprintf("heartbeats arrive within the %s lease", lease)
	return c, left
}

// heartbeatOnly reports whether ch is a node's heartbeat that changed
// nothing but its lastHeartbeat (and so its resourceVersion) while the
// lease it had still held at now. The bridge renews a lease apart from
// the status (api.NodeLease), so such a write is rare: a status written
// by a Control that does not (an older one, a replica being upgraded), or
// one whose only change was rounded away. Judging the node then would
// find what it found before, since the node was connected before and
// after. Its own liveness reconcile still runs when the lease it last
// judged runs out (it asked to be requeued then), and finds the later
// heartbeat. Added, deleted and resynced objects are never heartbeats.
func heartbeatOnly(ch reconcile.Change, now time.Time, lease time.Duration) bool {
	if ch.Resync || ch.Old == nil || ch.New == nil || ch.Old == ch.New {
		return false
	}
	a, last := withoutBeat(ch.Old)
	b, next := withoutBeat(ch.New)
	return a != nil && b != nil && leaseRenewed(last, next, now, lease) && reflect.DeepEqual(a, b)
}

// withoutBeat returns a copy of a node without what a bare lease renewal
// changes, and the lastHeartbeat it had; nil for an object of another
// kind.
func withoutBeat(obj api.Object) (api.Object, *time.Time) {
	var c api.Object
	switch n := obj.(type) {
	case *api.Agent:
		cp := *n
		c = &cp
	case *api.Gateway:
		cp := *n
		c = &cp
	default:
		return nil, nil
	}
	_, st, _, _ := nodeParts(c)
	beat := st.LastHeartbeat
	c.GetMeta().ResourceVersion, st.LastHeartbeat = "", nil
	return c, beat
}

// leaseRenewed reports whether a heartbeat at next renewed a lease that
// the one at last still held at now.
func leaseRenewed(last, next *time.Time, now time.Time, lease time.Duration) bool {
	return last != nil && next != nil && !next.Before(*last) && last.Add(lease).After(now)
}

// isConnected reports whether a node whose latest heartbeat was beat
// counts as connected at now: it is enabled and its Connected condition,
// as connectedCondition computes it, is True. Loops judging one node by
// another's state use it rather than the stored condition, which may be
// stale until the node's own reconcile. It is connectedCondition's Status
// without the message, which would cost a formatted string per node per
// loop.
func isConnected(obj api.Object, beat *time.Time, now time.Time, lease time.Duration) bool {
	enabled, _, _, ok := nodeParts(obj)
	if !ok || !enabled || beat == nil || !beat.Add(lease).After(now) {
		return false
	}
	cur := api.FindCondition(obj.GetStatus().Conditions, api.NodeConnected)
	return cur == nil || cur.Status != api.ConditionFalse || cur.Reason == api.ReasonHeartbeatExpired
}

// nodeReadyInputs are the conditions that must all be True for an
// enabled node to be Ready, in the order their failures are reported:
// without an address nothing else can work.
func nodeReadyInputs() []string {
	return []string{NodeAddressAssigned, api.NodeConnected, api.NodeDataPath}
}

// nodeReadyCondition sums a node's conditions up, as readyCondition does
// for tunnels, with messages that name the kind.
func nodeReadyCondition(kind string, enabled bool, conds []api.Condition, gen int64) api.Condition {
	c := readyCondition(enabled, conds, nodeReadyInputs(), gen)
	what := strings.ToLower(kind)
	switch {
	case !enabled:
		c.Message = fmt.Sprintf("the %s is disabled (spec.enabled is false)", what)
	case c.Status == api.ConditionTrue:
		c.Message = fmt.Sprintf("the %s is connected and its data path is ready", what)
	}
	return c
}

// probeVerdict sorts a peer's probe report: ok, failed (with the report
// as the reason), or not probed yet.
func probeVerdict(probe string) (ok, failed bool) {
	switch probe {
	case "":
		return false, false
	case ProbeOK:
		return true, false
	}
	return false, true
}

// How many names a message shows of a list, and of probe failures.
const (
	nameListMax    = 5
	failureListMax = 3
)

// nameList renders names for a message, shortening long lists so that a
// message does not grow with the fleet.
func nameList(names []string) string {
	f := firstNames{n: nameListMax}
	for _, s := range names {
		f.add(s)
	}
	return f.nameList()
}

// firstNames keeps the n smallest of the strings added, in order, in one
// pass, and counts them all: the lists are of a fleet's nodes, and a
// message shows only a few.
type firstNames struct {
	n     int
	count int
	first []string
}

func (f *firstNames) add(s string) {
	f.count++
	if len(f.first) == f.n && s >= f.first[f.n-1] {
		return
	}
	i, _ := slices.BinarySearch(f.first, s)
	f.first = slices.Insert(f.first, i, s)
	if len(f.first) > f.n {
		f.first = f.first[:f.n]
	}
}

// addFailure adds a node's failed probe, shown as "name: failure".
func (f *firstNames) addFailure(name, probe string) { f.add(name + ": " + probe) }

// nameList renders the names: "a, b, c and 4 more".
func (f *firstNames) nameList() string { return f.render(", ", " ") }

// failureList renders failures: "a: x; b: y; and 4 more".
func (f *firstNames) failureList() string { return f.render("; ", "; ") }

func (f *firstNames) render(sep, beforeMore string) string {
	if f.count <= len(f.first) {
		return strings.Join(f.first, sep)
	}
	return fmt.Sprintf("%s%sand %d more", strings.Join(f.first, sep), beforeMore, f.count-len(f.first))
}
