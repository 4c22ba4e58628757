package bridge

import (
	"slices"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// StatusChanges is a heartbeat that says only what changed in a node's
// status since its previous heartbeat on the same connection. A node
// sends one only on a connection whose first message from Control had
// Message.AcceptsChanges set, and only after a full Status in the
// reported form (NodeStatus.Reported) on that connection: Control keeps
// the last one and applies the changes to it (NodeStatus.Apply).
//
// A gateway lists every agent and an agent every gateway; at 10,000
// agents of 1,000 gateways full heartbeats would bring Control some
// 350 MB of JSON every ten seconds, most of it unchanged.
type StatusChanges struct {
	Version  string `json:"version,omitempty"`
	DataPath string `json:"dataPath,omitempty"`
	// Revision is the slice revision the node has applied.
	Revision int64 `json:"revision"`
	// Peers are the peers added or changed, by name.
	Peers []PeerStatus `json:"peers,omitempty"`
	// PeersGone names the peers removed.
	PeersGone []string `json:"peersGone,omitempty"`
	// Targets are the targets added or changed, by tunnel.
	Targets []TargetStatus `json:"targets,omitempty"`
	// TargetsGone names the tunnels whose targets are no longer checked.
	TargetsGone []string `json:"targetsGone,omitempty"`
	// Routes are the routes added; RoutesGone those no longer served.
	Routes     []string `json:"routes,omitempty"`
	RoutesGone []string `json:"routesGone,omitempty"`
	// Probes are the probes added or changed, by agent.
	Probes []ProbeStatus `json:"probes,omitempty"`
	// ProbesGone names the agents no longer probed.
	ProbesGone []string `json:"probesGone,omitempty"`
}

// Empty reports whether c changes nothing but what every heartbeat
// carries (version, data path and revision).
func (c *StatusChanges) Empty() bool {
	return len(c.Peers) == 0 && len(c.PeersGone) == 0 && len(c.Targets) == 0 && len(c.TargetsGone) == 0 &&
		len(c.Routes) == 0 && len(c.RoutesGone) == 0 && len(c.Probes) == 0 && len(c.ProbesGone) == 0
}

// EndpointPeers is how many peers a status lists with their endpoints:
// beyond it a node reports, and Control shows, each peer by name,
// connection and probe only.
const EndpointPeers = 1000

// Reported returns st in the form a node reports it with StatusChanges,
// as of now: each list sorted by its key and without duplicates, and
// without what changes on every heartbeat and Control never shows (byte
// counters, probe latencies, check times). Each peer's Connected is set
// from its handshake; the handshake time itself is kept only in a list
// of at most api.TimedPeers, and the endpoint in one of at most
// EndpointPeers. So a peer appears in a StatusChanges when what Control
// would show of it changes, and not every time it handshakes.
func (st NodeStatus) Reported(now time.Time) NodeStatus {
	out := NodeStatus{Version: st.Version, DataPath: st.DataPath, Revision: st.Revision, ReportedForm: true}
	timed, endpoints := len(st.Peers) <= api.TimedPeers, len(st.Peers) <= EndpointPeers
	peers := sortedUnique(st.Peers, func(p PeerStatus) string { return p.Name })
	out.Peers = make([]PeerStatus, len(peers))
	for i, p := range peers {
		q := PeerStatus{Name: p.Name, Connected: p.Connected || Fresh(p.LastHandshake, now)}
		if endpoints {
			q.Endpoint = p.Endpoint
		}
		if timed && !p.LastHandshake.IsZero() {
			q.LastHandshake = p.LastHandshake.UTC().Truncate(time.Second)
		}
		out.Peers[i] = q
	}
	targets := sortedUnique(st.Targets, func(t TargetStatus) string { return t.Tunnel })
	out.Targets = make([]TargetStatus, len(targets))
	for i, t := range targets {
		out.Targets[i] = TargetStatus{Tunnel: t.Tunnel, Reachable: t.Reachable, Message: t.Message}
	}
	probes := sortedUnique(st.Probes, func(p ProbeStatus) string { return p.Agent })
	out.Probes = make([]ProbeStatus, len(probes))
	for i, p := range probes {
		out.Probes[i] = ProbeStatus{Agent: p.Agent, OK: p.OK, Message: p.Message}
	}
	out.Routes = slices.Clone(sortedUnique(st.Routes, func(r string) string { return r }))
	// Empty lists as JSON decodes them, so that what Control holds and
	// what the node sent compare alike.
	if len(out.Peers) == 0 {
		out.Peers = nil
	}
	if len(out.Targets) == 0 {
		out.Targets = nil
	}
	if len(out.Probes) == 0 {
		out.Probes = nil
	}
	return out
}

// Sorted returns st with each list sorted by its key and one element per
// key, as Apply needs the status it applies changes to; lists already so
// are shared, not copied.
func (st NodeStatus) Sorted() NodeStatus {
	st.Peers = sortedUnique(st.Peers, func(p PeerStatus) string { return p.Name })
	st.Targets = sortedUnique(st.Targets, func(t TargetStatus) string { return t.Tunnel })
	st.Probes = sortedUnique(st.Probes, func(p ProbeStatus) string { return p.Agent })
	st.Routes = sortedUnique(st.Routes, func(r string) string { return r })
	return st
}

// Fresh reports whether a session whose latest handshake was at hs was
// current at now (api.SessionFresh).
func Fresh(hs, now time.Time) bool {
	return !hs.IsZero() && now.Sub(hs) <= api.SessionFresh
}

// sortedUnique returns s sorted with one element per key, the last
// given: s itself when it already is, else a sorted copy; nil for an
// empty s.
func sortedUnique[T any](s []T, key func(T) string) []T {
	if len(s) == 0 {
		return nil
	}
	ascending := true
	for i := 1; i < len(s) && ascending; i++ {
		ascending = key(s[i-1]) < key(s[i])
	}
	if ascending {
		return s // as a node's lists mostly come
	}
	out := slices.Clone(s)
	slices.SortStableFunc(out, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	w := 0
	for i := range out {
		if w > 0 && key(out[w-1]) == key(out[i]) {
			out[w-1] = out[i]
			continue
		}
		out[w] = out[i]
		w++
	}
	return out[:w]
}

// ChangesTo returns what changed from prev to next, both in reported
// form (Reported).
func (prev NodeStatus) ChangesTo(next NodeStatus) StatusChanges {
	c := StatusChanges{Version: next.Version, DataPath: next.DataPath, Revision: next.Revision}
	c.Peers, c.PeersGone = diffSorted(prev.Peers, next.Peers, func(p PeerStatus) string { return p.Name }, samePeer)
	c.Targets, c.TargetsGone = diffSorted(prev.Targets, next.Targets, func(t TargetStatus) string { return t.Tunnel },
		func(a, b TargetStatus) bool { return a == b })
	c.Probes, c.ProbesGone = diffSorted(prev.Probes, next.Probes, func(p ProbeStatus) string { return p.Agent }, sameProbe)
	c.Routes, c.RoutesGone = diffSorted(prev.Routes, next.Routes, func(r string) string { return r },
		func(a, b string) bool { return true })
	return c
}

func samePeer(a, b PeerStatus) bool {
	return a.Name == b.Name && a.Endpoint == b.Endpoint && a.Connected == b.Connected &&
		a.LastHandshake.Equal(b.LastHandshake) && a.RxBytes == b.RxBytes && a.TxBytes == b.TxBytes
}

func sameProbe(a, b ProbeStatus) bool {
	return a.Agent == b.Agent && a.OK == b.OK && a.Message == b.Message && a.LatencyMS == b.LatencyMS &&
		a.CheckedAt.Equal(b.CheckedAt)
}

// diffSorted walks two lists sorted by key and returns the elements of
// next that are new or differ, and the keys of prev that next lacks.
func diffSorted[T any](prev, next []T, key func(T) string, same func(a, b T) bool) (up []T, gone []string) {
	i, j := 0, 0
	for i < len(prev) || j < len(next) {
		switch {
		case j == len(next) || (i < len(prev) && key(prev[i]) < key(next[j])):
			gone = append(gone, key(prev[i]))
			i++
		case i == len(prev) || key(next[j]) < key(prev[i]):
			up = append(up, next[j])
			j++
		default:
			if !same(prev[i], next[j]) {
				up = append(up, next[j])
			}
			i++
			j++
		}
	}
	return up, gone
}

// Apply returns st with c applied; st is not modified, and lists c does
// not touch are shared with it. st's lists must be sorted by key and
// without duplicates, as Reported leaves them; c's may come in any order.
func (st NodeStatus) Apply(c StatusChanges) NodeStatus {
	out := st
	out.Version, out.DataPath, out.Revision = c.Version, c.DataPath, c.Revision
	out.Peers = applySorted(st.Peers, c.Peers, c.PeersGone, func(p PeerStatus) string { return p.Name })
	out.Targets = applySorted(st.Targets, c.Targets, c.TargetsGone, func(t TargetStatus) string { return t.Tunnel })
	out.Probes = applySorted(st.Probes, c.Probes, c.ProbesGone, func(p ProbeStatus) string { return p.Agent })
	out.Routes = applySorted(st.Routes, c.Routes, c.RoutesGone, func(r string) string { return r })
	return out
}

// applySorted returns cur, sorted by key, with the elements of up
// replacing or added to those of the same key and the keys in gone
// removed; cur itself when both are empty.
func applySorted[T any](cur, up []T, gone []string, key func(T) string) []T {
	if len(up) == 0 && len(gone) == 0 {
		return cur
	}
	up = sortedUnique(up, key)
	gone = slices.Clone(gone)
	slices.Sort(gone)
	out := make([]T, 0, len(cur)+len(up))
	i, j := 0, 0
	for i < len(cur) || j < len(up) {
		var next T
		switch {
		case j == len(up) || (i < len(cur) && key(cur[i]) < key(up[j])):
			next = cur[i]
			i++
		case i == len(cur) || key(up[j]) < key(cur[i]):
			next = up[j]
			j++
		default:
			next = up[j]
			i++
			j++
		}
		if _, found := slices.BinarySearch(gone, key(next)); !found {
			out = append(out, next)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return slices.Clip(out)
}
