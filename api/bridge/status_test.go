package bridge

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// randomStatus is a status of up to n peers, probes, targets and routes
// drawn from a small set of names, so that successive draws share some
// and differ in others, in no particular order and with duplicates.
func randomStatus(r *rand.Rand, n int, now time.Time) NodeStatus {
	st := NodeStatus{Version: fmt.Sprintf("v%d", r.IntN(2)), DataPath: "netstack", Revision: int64(r.IntN(3))}
	for range r.IntN(n + 1) {
		p := PeerStatus{Name: fmt.Sprintf("p%d", r.IntN(n)), Endpoint: fmt.Sprintf("192.0.2.%d:51820", r.IntN(2)),
			RxBytes: r.Int64N(1000), TxBytes: r.Int64N(1000)}
		if r.IntN(3) > 0 {
			p.LastHandshake = now.Add(-time.Duration(r.IntN(300)) * time.Second)
		}
		st.Peers = append(st.Peers, p)
	}
	for range r.IntN(n + 1) {
		st.Probes = append(st.Probes, ProbeStatus{Agent: fmt.Sprintf("p%d", r.IntN(n)), OK: r.IntN(2) == 0,
			Message: []string{"", "dial: i/o timeout"}[r.IntN(2)], LatencyMS: r.Float64(), CheckedAt: now})
	}
	for range r.IntN(4) {
		st.Targets = append(st.Targets, TargetStatus{Tunnel: fmt.Sprintf("t%d", r.IntN(3)), Reachable: r.IntN(2) == 0, CheckedAt: now})
	}
	for range r.IntN(n + 1) {
		st.Routes = append(st.Routes, fmt.Sprintf("h%d.example.com", r.IntN(n)))
	}
	return st
}

// TestChangesRebuildTheReport: for random pairs of statuses, the changes
// from one to the next, sent as JSON and applied to the first, give the
// next exactly; the first is left as it was.
func TestChangesRebuildTheReport(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 2000 {
		// Lists on both sides of api.TimedPeers some of the time.
		n := []int{3, 8, api.TimedPeers + 20}[i%3]
		raw := randomStatus(r, n, now)
		rawCopy := clone(t, raw)
		prev := raw.Reported(now)
		if !reflect.DeepEqual(clone(t, raw), rawCopy) {
			t.Fatalf("case %d: Reported changed the status it was given", i)
		}
		next := randomStatus(r, n, now.Add(10*time.Second)).Reported(now.Add(10 * time.Second))
		before := clone(t, prev)
		ch := prev.ChangesTo(next)
		data, err := json.Marshal(Message{Type: Heartbeat, Changes: &ch})
		if err != nil {
			t.Fatal(err)
		}
		var m Message
		if err := json.Unmarshal(data, &m); err != nil || m.Changes == nil {
			t.Fatalf("decode %s: %v", data, err)
		}
		got := prev.Apply(*m.Changes)
		if !reflect.DeepEqual(got, next) {
			t.Fatalf("case %d: apply(changes) gave\n%+v\nwant\n%+v\nchanges %s", i, got, next, data)
		}
		if !reflect.DeepEqual(prev, before) {
			t.Fatalf("case %d: Apply changed the status it was given", i)
		}
		if same := reflect.DeepEqual(prev.Peers, next.Peers) && reflect.DeepEqual(prev.Probes, next.Probes) &&
			reflect.DeepEqual(prev.Targets, next.Targets) && reflect.DeepEqual(prev.Routes, next.Routes); same != ch.Empty() {
			t.Fatalf("case %d: lists the same %v, changes empty %v", i, same, ch.Empty())
		}
	}
}

func clone(t *testing.T, st NodeStatus) NodeStatus {
	t.Helper()
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out NodeStatus
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	// Lists decode empty as nil, as Reported leaves them.
	return out
}

// TestApplyTakesChangesInAnyOrder: Control cannot rely on a node sorting
// its changes; applied out of order, with a key both changed and gone,
// the result is still sorted and the key gone.
func TestApplyTakesChangesInAnyOrder(t *testing.T) {
	cur := NodeStatus{Peers: []PeerStatus{{Name: "b"}, {Name: "d"}}, Routes: []string{"x"}}
	got := cur.Apply(StatusChanges{Revision: 4,
		Peers:     []PeerStatus{{Name: "e"}, {Name: "a", Connected: true}, {Name: "d", Connected: true}, {Name: "c"}},
		PeersGone: []string{"c", "b", "zz"}, Routes: []string{"y", "w"}})
	want := NodeStatus{Revision: 4, Peers: []PeerStatus{{Name: "a", Connected: true}, {Name: "d", Connected: true}, {Name: "e"}},
		Routes: []string{"w", "x", "y"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

// TestReportedLeavesOutWhatChangesEveryBeat: a node's heartbeats while
// nothing Control shows changes are empty changes, however its sessions
// renew, its counters move and its probes are timed; what Control shows
// changing is in them.
func TestReportedLeavesOutWhatChangesEveryBeat(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// status is a gateway of n agents at now: every session renewed two
	// minutes apart, at its own moment, and every agent probed.
	status := func(n int, now time.Time) NodeStatus {
		st := NodeStatus{Version: "v1", Revision: 9}
		for i := range n {
			name := fmt.Sprintf("agent-%04d", i)
			phase := time.Duration((now.Unix()+int64(i)*7)%120) * time.Second
			st.Peers = append(st.Peers, PeerStatus{Name: name, Endpoint: "192.0.2.1:40000",
				LastHandshake: now.Add(-phase), RxBytes: now.UnixNano(), TxBytes: int64(i)})
			st.Probes = append(st.Probes, ProbeStatus{Agent: name, OK: true, LatencyMS: float64(now.Nanosecond()), CheckedAt: now})
		}
		return st
	}
	// Beyond api.TimedPeers, ten minutes of heartbeats change nothing.
	long := api.TimedPeers + 1
	prev := status(long, t0).Reported(t0)
	for now := t0.Add(10 * time.Second); now.Before(t0.Add(10 * time.Minute)); now = now.Add(10 * time.Second) {
		next := status(long, now).Reported(now)
		if ch := prev.ChangesTo(next); !ch.Empty() {
			t.Fatalf("%v in: changes %+v; want none", now.Sub(t0), ch)
		}
		prev = next
	}
	// Within api.TimedPeers the times are shown, so renewals are sent.
	short := status(api.TimedPeers, t0).Reported(t0)
	if ch := short.ChangesTo(status(api.TimedPeers, t0.Add(10*time.Second)).Reported(t0.Add(10 * time.Second))); len(ch.Peers) == 0 {
		t.Fatal("a list of api.TimedPeers: renewed handshakes sent no change; want them")
	}

	// A session running out, in a long list: that peer, and only it.
	stale := status(long, t0)
	stale.Peers[5].LastHandshake = t0.Add(-api.SessionFresh + 5*time.Second)
	before := stale.Reported(t0)
	after := stale.Reported(t0.Add(10 * time.Second))
	if ch := before.ChangesTo(after); len(ch.Peers) != 1 || ch.Peers[0].Name != "agent-0005" || ch.Peers[0].Connected {
		t.Fatalf("a session running out: changes %+v; want agent-0005 not connected", ch.Peers)
	}
	// A probe failing, and an endpoint moving while endpoints are shown.
	moved := status(long, t0)
	moved.Probes[3] = ProbeStatus{Agent: "agent-0003", Message: "dial: i/o timeout", CheckedAt: t0}
	moved.Peers[4].Endpoint = "192.0.2.9:40000"
	ch := status(long, t0).Reported(t0).ChangesTo(moved.Reported(t0))
	if len(ch.Probes) != 1 || ch.Probes[0].Agent != "agent-0003" || len(ch.Peers) != 1 || ch.Peers[0].Endpoint != "192.0.2.9:40000" {
		t.Fatalf("a failed probe and a moved endpoint: changes %+v", ch)
	}
	// Beyond EndpointPeers, endpoints are not shown, nor sent.
	huge, hugeMoved := status(EndpointPeers+1, t0), status(EndpointPeers+1, t0)
	hugeMoved.Peers[4].Endpoint = "192.0.2.9:40000"
	if ch := huge.Reported(t0).ChangesTo(hugeMoved.Reported(t0)); !ch.Empty() {
		t.Fatalf("an endpoint moving in a list of %d: changes %+v; want none", EndpointPeers+1, ch)
	}
}

// FuzzHeartbeatDecode: whatever a node sends as a heartbeat, Control can
// apply it to what it holds without a panic, the result stays sorted by
// key with one entry per key, what it held is left alone, and the changes
// from what it held to the result rebuild the result.
func FuzzHeartbeatDecode(f *testing.F) {
	f.Add([]byte(`{"type":"heartbeat","status":{"revision":3,"reportedForm":true,"peers":[{"name":"g","connected":true}],"routes":["a"]}}`))
	f.Add([]byte(`{"type":"heartbeat","changes":{"revision":4,"peers":[{"name":"b"},{"name":"a","connected":true}],"peersGone":["g","b"],"routesGone":["a"]}}`))
	f.Add([]byte(`{"type":"heartbeat","changes":{"revision":5,"probes":[{"agent":"x","message":"m"},{"agent":"x","ok":true}],"targets":[{"tunnel":"t"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Message
		if err := json.Unmarshal(data, &m); err != nil {
			return
		}
		held := NodeStatus{Revision: 1, Peers: []PeerStatus{{Name: "a"}, {Name: "g", Connected: true}},
			Probes: []ProbeStatus{{Agent: "g", OK: true}}, Routes: []string{"a", "b"}}
		if m.Status != nil {
			held = m.Status.Sorted()
		}
		before := clone(t, held)
		next := held
		if m.Changes != nil {
			next = held.Apply(*m.Changes)
		}
		if !reflect.DeepEqual(clone(t, held), before) {
			t.Fatal("Apply changed the status it was given")
		}
		for _, keys := range [][]string{
			keysOf(next.Peers, func(p PeerStatus) string { return p.Name }),
			keysOf(next.Probes, func(p ProbeStatus) string { return p.Agent }),
			keysOf(next.Targets, func(t TargetStatus) string { return t.Tunnel }),
			next.Routes,
		} {
			for i := 1; i < len(keys); i++ {
				if keys[i-1] >= keys[i] {
					t.Fatalf("keys %q: not sorted with one entry per key", keys)
				}
			}
		}
		if got := held.Apply(held.ChangesTo(next)); !reflect.DeepEqual(clone(t, got), clone(t, next)) {
			t.Fatalf("changes from the held status to %+v rebuilt %+v", next, got)
		}
	})
}

func keysOf[T any](s []T, key func(T) string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = key(x)
	}
	return out
}
