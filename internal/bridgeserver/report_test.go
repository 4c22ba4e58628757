package bridgeserver

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// volatile are the heartbeat fields sameReport does not compare; every
// other field of bridge.NodeStatus and of its lists' elements is.
var volatile = map[string]bool{
	"PeerStatus.LastHandshake": true, // compared only as set or not
	"PeerStatus.RxBytes":       true,
	"PeerStatus.TxBytes":       true,
	"TargetStatus.CheckedAt":   true,
	"ProbeStatus.LatencyMS":    true,
	"ProbeStatus.CheckedAt":    true,
}

// TestSameReportComparesEveryOtherField changes each field of a full
// heartbeat in turn, top-level and in each list's element, and checks
// that sameReport tells the two apart unless the field is volatile: a
// field added to the protocol is compared unless listed here.
func TestSameReportComparesEveryOtherField(t *testing.T) {
	base := func() bridge.NodeStatus {
		at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		return bridge.NodeStatus{Version: "v1", DataPath: "netstack", Revision: 7, Routes: []string{"a.example.com"},
			Peers:   []bridge.PeerStatus{{Name: "p", Endpoint: "192.0.2.1:51820", LastHandshake: at, RxBytes: 1, TxBytes: 2}},
			Targets: []bridge.TargetStatus{{Tunnel: "t", Reachable: true, Message: "m", CheckedAt: at}},
			Probes:  []bridge.ProbeStatus{{Agent: "a", OK: true, Message: "m", LatencyMS: 1.5, CheckedAt: at}}}
	}
	a := base()
	b := base()
	if !sameReport(&a, &b) {
		t.Fatal("two equal heartbeats: got different")
	}
	// change sets v, a field's value, to something else.
	change := func(v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int64, reflect.Int:
			v.SetInt(v.Int() + 1)
		case reflect.Float64:
			v.SetFloat(v.Float() + 1)
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Struct: // time.Time
			v.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Minute)))
		case reflect.Slice:
			v.Set(reflect.Zero(v.Type()))
		default:
			t.Fatalf("no way to change a %s", v.Type())
		}
	}
	check := func(name string, mutate func(*bridge.NodeStatus)) {
		b := base()
		mutate(&b)
		if got, want := sameReport(&a, &b), volatile[name]; got != want {
			t.Errorf("%s changed: sameReport = %v, want %v", name, got, want)
		}
	}
	top := reflect.TypeOf(bridge.NodeStatus{})
	for i := range top.NumField() {
		f := top.Field(i)
		check("NodeStatus."+f.Name, func(s *bridge.NodeStatus) { change(reflect.ValueOf(s).Elem().Field(i)) })
		if f.Type.Kind() != reflect.Slice || f.Type.Elem().Kind() != reflect.Struct {
			continue
		}
		for j := range f.Type.Elem().NumField() {
			ef := f.Type.Elem().Field(j)
			check(f.Type.Elem().Name()+"."+ef.Name, func(s *bridge.NodeStatus) {
				change(reflect.ValueOf(s).Elem().Field(i).Index(0).Field(j))
			})
		}
	}
	// A handshake for the first time is news.
	b = base()
	a.Peers[0].LastHandshake = time.Time{}
	if sameReport(&a, &b) {
		t.Error("a peer's first handshake: got the same report")
	}
}

// gatewayStatus is a gateway's heartbeat: peers agents, each with its
// handshake at handshake and its probe failing with probe (or answering,
// when it is empty).
func gatewayStatus(peers int, handshake time.Time, probe string) bridge.NodeStatus {
	st := bridge.NodeStatus{Version: "v1", Revision: 7}
	for i := range peers {
		name := "ag-" + strconv.Itoa(i)
		st.Peers = append(st.Peers, bridge.PeerStatus{Name: name, Endpoint: "192.0.2.1:51820", LastHandshake: handshake, RxBytes: handshake.Unix()})
		st.Probes = append(st.Probes, bridge.ProbeStatus{Agent: name, OK: probe == "", Message: probe, CheckedAt: handshake})
	}
	return st
}

// TestHeartbeatGate follows one connection's heartbeats through the gate:
// what is new is written to the status at once; a heartbeat that differs
// only in volatile fields renews the lease, at most once per interval; the
// handshake times a status shows are rewritten once per refresh, and never
// for a list too long to show them.
func TestHeartbeatGate(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g := heartbeatGate{leaseInterval: 8 * time.Second, statusRefresh: time.Minute}
	report := func(peers int, handshake time.Time, probe string) *bridge.NodeStatus {
		st := gatewayStatus(peers, handshake, probe)
		return &st
	}
	type want int
	const (
		nothing want = iota
		lease
		status
	)
	check := func(step string, st *bridge.NodeStatus, at time.Duration, w want) {
		t.Helper()
		hb, ok := g.admit(st, t0.Add(at))
		got := nothing
		switch {
		case ok && hb.leaseOnly:
			got = lease
		case ok:
			got = status
		}
		name := map[want]string{nothing: "nothing", lease: "the lease only", status: "the status"}
		if got != w {
			t.Fatalf("%s: wrote %s, want %s", step, name[got], name[w])
		}
		if ok && (!hb.at.Equal(t0.Add(at)) || hb.status.Revision != st.Revision) {
			t.Fatalf("%s: recorded %+v at %v, want the heartbeat at %v", step, hb.status, hb.at, t0.Add(at))
		}
	}
	hs := t0
	check("first heartbeat", report(3, hs, ""), 0, status)
	check("same, 3 s later", report(3, hs, ""), 3*time.Second, nothing)
	check("newer handshakes and counters, 5 s later", report(3, hs.Add(5*time.Second), ""), 5*time.Second, nothing)
	check("same, 9 s later", report(3, hs.Add(5*time.Second), ""), 9*time.Second, lease)
	check("same, 12 s later", report(3, hs.Add(5*time.Second), ""), 12*time.Second, nothing)
	check("a failed probe", report(3, hs.Add(5*time.Second), "dial: i/o timeout"), 13*time.Second, status)
	check("same failure", report(3, hs.Add(5*time.Second), "dial: i/o timeout"), 14*time.Second, nothing)
	check("handshakes of 13 s ago, 60 s after the last status", report(3, hs.Add(5*time.Second), "dial: i/o timeout"), 73*time.Second, lease)
	check("handshakes moved, 62 s after the last status", report(3, hs.Add(70*time.Second), "dial: i/o timeout"), 75*time.Second, status)

	// A list longer than a status shows in full: its handshake times are
	// not shown, and only the lease moves.
	g = heartbeatGate{leaseInterval: 8 * time.Second, statusRefresh: time.Minute}
	check("first heartbeat of a large gateway", report(bridge.EndpointPeers+1, hs, ""), 0, status)
	for i := 1; i <= 10; i++ {
		check("newer handshakes of a large gateway", report(bridge.EndpointPeers+1, hs.Add(time.Duration(i)*time.Minute), ""), time.Duration(i)*time.Minute, lease)
	}
	check("a peer gone from a large gateway", report(bridge.EndpointPeers, hs.Add(11*time.Minute), ""), 11*time.Minute, status)

	// An agent of more than api.TimedPeers gateways shows no handshake times
	// either; it shows which sessions are current, and a session running
	// out is news though the heartbeat is the same.
	g = heartbeatGate{leaseInterval: 8 * time.Second, statusRefresh: time.Minute}
	check("first heartbeat of an agent of many gateways", report(api.TimedPeers+1, hs, ""), 0, status)
	for i := 1; i <= 5; i++ {
		at := time.Duration(i) * 2 * time.Minute
		check("sessions renewed", report(api.TimedPeers+1, hs.Add(at-10*time.Second), ""), at, lease)
	}
	stale := hs.Add(10*time.Minute - 10*time.Second)
	check("no handshake for 2m50s", report(api.TimedPeers+1, stale, ""), stale.Sub(hs)+api.SessionFresh-10*time.Second, lease)
	check("no handshake for 3m10s: the sessions ran out", report(api.TimedPeers+1, stale, ""), stale.Sub(hs)+api.SessionFresh+10*time.Second, status)
	check("still none", report(api.TimedPeers+1, stale, ""), stale.Sub(hs)+api.SessionFresh+20*time.Second, lease)
	check("sessions back", report(api.TimedPeers+1, stale.Add(4*time.Minute), ""), stale.Sub(hs)+4*time.Minute+time.Second, status)
}

// TestHeartbeatGateOnChanges follows a node that sends its status whole
// once and then only what changed, through the same steps as
// TestHeartbeatGate: changes Control shows are written at once; handshake
// times, where a status shows them, once per refresh, even when the
// heartbeats after them are empty; the rest renews the lease. The gate
// keeps no copy of what it wrote.
func TestHeartbeatGateOnChanges(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var g heartbeatGate
	var sent, held *bridge.NodeStatus // what the node sent last, what Control holds
	reset := func() {
		g, sent, held = heartbeatGate{leaseInterval: 8 * time.Second, statusRefresh: time.Minute}, nil, nil
	}
	status := gatewayStatus
	const (
		nothing = "nothing"
		lease   = "the lease only"
		written = "the status"
	)
	check := func(step string, st bridge.NodeStatus, at time.Duration, want string) {
		t.Helper()
		now := t0.Add(at)
		rep := st.Reported(now)
		var hb heartbeat
		var ok bool
		if sent == nil {
			sent, held = &rep, &rep
			hb, ok = g.admit(held, now)
		} else {
			ch := sent.ChangesTo(rep)
			next := held.Apply(ch)
			prev := held
			sent, held = &rep, &next
			hb, ok = g.admitChanges(prev, &ch, held, now)
			if g.last != nil {
				t.Fatalf("%s: the gate keeps a copy of the status it wrote", step)
			}
		}
		got := nothing
		switch {
		case ok && hb.leaseOnly:
			got = lease
		case ok:
			got = written
		}
		if got != want {
			t.Fatalf("%s: wrote %s, want %s", step, got, want)
		}
		if ok && !reflect.DeepEqual(hb.status, rep) {
			t.Fatalf("%s: recorded %+v, want what the node reported, %+v", step, hb.status, rep)
		}
	}
	hs := t0
	reset()
	check("first heartbeat", status(3, hs, ""), 0, written)
	check("same, 3 s later", status(3, hs, ""), 3*time.Second, nothing)
	check("newer handshakes and counters, 5 s later", status(3, hs.Add(5*time.Second), ""), 5*time.Second, nothing)
	check("same, 9 s later", status(3, hs.Add(5*time.Second), ""), 9*time.Second, lease)
	check("a failed probe", status(3, hs.Add(5*time.Second), "dial: i/o timeout"), 13*time.Second, written)
	check("same failure", status(3, hs.Add(5*time.Second), "dial: i/o timeout"), 14*time.Second, nothing)
	check("newer handshakes, 20 s after the last status", status(3, hs.Add(30*time.Second), "dial: i/o timeout"), 33*time.Second, lease)
	check("nothing new, 59 s after the last status", status(3, hs.Add(30*time.Second), "dial: i/o timeout"), 72*time.Second, lease)
	check("nothing new, 61 s after: the handshakes are due", status(3, hs.Add(30*time.Second), "dial: i/o timeout"), 74*time.Second, written)
	check("nothing new after that", status(3, hs.Add(30*time.Second), "dial: i/o timeout"), 83*time.Second, lease)

	// An agent of more than api.TimedPeers gateways: renewals change
	// nothing; the node says when a session runs out and comes back.
	reset()
	check("first heartbeat of an agent of many gateways", status(api.TimedPeers+1, hs, ""), 0, written)
	for i := 1; i <= 5; i++ {
		at := time.Duration(i) * 2 * time.Minute
		check("sessions renewed", status(api.TimedPeers+1, hs.Add(at-10*time.Second), ""), at, lease)
	}
	stale := hs.Add(10*time.Minute - 10*time.Second)
	check("no handshake for 2m50s", status(api.TimedPeers+1, stale, ""), stale.Sub(hs)+api.SessionFresh-10*time.Second, lease)
	check("no handshake for 3m10s: the sessions ran out", status(api.TimedPeers+1, stale, ""), stale.Sub(hs)+api.SessionFresh+10*time.Second, written)
	check("still none", status(api.TimedPeers+1, stale, ""), stale.Sub(hs)+api.SessionFresh+20*time.Second, lease)
	check("sessions back", status(api.TimedPeers+1, stale.Add(4*time.Minute), ""), stale.Sub(hs)+4*time.Minute+time.Second, written)
	check("a gateway gone", status(api.TimedPeers, stale.Add(4*time.Minute), ""), stale.Sub(hs)+4*time.Minute+2*time.Second, written)
}

// TestPeerStatusesShowWhatTheListCanHold: handshake times for up to
// api.TimedPeers peers, endpoints for up to bridge.EndpointPeers, and for any number
// whether each session is current; beyond api.ListedPeers, counts and the
// peers in trouble only.
func TestPeerStatusesShowWhatTheListCanHold(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	list := func(n int) []bridge.PeerStatus {
		ps := make([]bridge.PeerStatus, n)
		for i := range ps {
			ps[i] = bridge.PeerStatus{Name: fmt.Sprintf("p%05d", i), Endpoint: "192.0.2.1:51820", LastHandshake: now.Add(-time.Minute)}
		}
		ps[0].LastHandshake = now.Add(-api.SessionFresh - time.Second) // ran out
		ps[1].LastHandshake = time.Time{}                              // never
		return ps
	}
	for _, tc := range []struct {
		peers            int
		times, endpoints bool
	}{{api.TimedPeers, true, true}, {api.TimedPeers + 1, false, true}, {api.ListedPeers + 1, false, true}, {bridge.EndpointPeers + 1, false, false}} {
		got, counts := peerStatuses(list(tc.peers), nil, false, false, now)
		listed := tc.peers
		if tc.peers > api.ListedPeers {
			listed = 2 // the two not connected
			if want := (api.PeerCounts{Total: tc.peers, Connected: tc.peers - 2}); counts == nil || *counts != want {
				t.Fatalf("%d peers: counts %+v, want %+v", tc.peers, counts, want)
			}
		} else if counts != nil {
			t.Fatalf("%d peers: counts %+v, want none (every peer listed)", tc.peers, counts)
		}
		if len(got) != listed {
			t.Fatalf("%d peers: listed %d, want %d", tc.peers, len(got), listed)
		}
		for i, p := range got[:min(3, listed)] {
			if want := i == 2; p.Connected != want {
				t.Errorf("%d peers: %s connected = %v, want %v", tc.peers, p.Name, p.Connected, want)
			}
			if hasTime := p.LastHandshake != nil; hasTime != (tc.times && i != 1) {
				t.Errorf("%d peers: %s shows handshake %v, want a time: %v", tc.peers, p.Name, p.LastHandshake, tc.times && i != 1)
			}
			if hasEndpoint := p.Endpoint != ""; hasEndpoint != tc.endpoints {
				t.Errorf("%d peers: %s shows endpoint %q, want one: %v", tc.peers, p.Name, p.Endpoint, tc.endpoints)
			}
		}
	}
}

// TestPeerStatusesSumUpLongLists: a gateway of more than api.ListedPeers
// agents counts them and lists, by name, every one not connected or whose
// probe has not answered, however many: a peer left out must be fine.
func TestPeerStatusesSumUpLongLists(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const n = 4 * api.ListedPeers // 30% in trouble: more than ListedPeers
	var ps []bridge.PeerStatus
	var probes []bridge.ProbeStatus
	for i := range n {
		name := fmt.Sprintf("agent-%05d", n-1-i) // an older node's order
		ps = append(ps, bridge.PeerStatus{Name: name, LastHandshake: now.Add(-time.Minute)})
		switch {
		case i%10 == 1:
			ps[i].LastHandshake = time.Time{} // not connected, probe failed
			probes = append(probes, bridge.ProbeStatus{Agent: name, Message: "dial: i/o timeout"})
		case i%10 == 2: // connected, not probed yet
		case i%10 == 3: // connected, probe failed
			probes = append(probes, bridge.ProbeStatus{Agent: name, Message: "refused"})
		default:
			probes = append(probes, bridge.ProbeStatus{Agent: name, OK: true})
		}
	}
	got, counts := peerStatuses(ps, probes, true, false, now)
	want := api.PeerCounts{Total: n, Connected: n - n/10, Answered: n - 3*n/10}
	if counts == nil || *counts != want {
		t.Fatalf("counts %+v, want %+v", counts, want)
	}
	if len(got) != 3*n/10 {
		t.Fatalf("listed %d, want the %d in trouble", len(got), 3*n/10)
	}
	if !slices.IsSortedFunc(got, func(a, b api.NodePeerStatus) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatal("the list is not sorted by name")
	}
	for _, p := range got {
		if p.Connected && p.Probe == api.ProbeOK {
			t.Fatalf("%+v listed: connected and answered", p)
		}
	}
	// An agent's list of gateways: in trouble is not connected.
	got, counts = peerStatuses(ps, nil, false, false, now)
	if want := (api.PeerCounts{Total: n, Connected: n - n/10}); counts == nil || *counts != want || len(got) != n/10 {
		t.Fatalf("an agent's gateways: %d listed, counts %+v; want %d and %+v", len(got), counts, n/10, want)
	}
}

// TestProbeFinderWalksOrLooksUp: for lists sorted by name (walked side by
// side) and for the same lists in any order (looked up), every peer gets
// the probe a map of the probes gives it, the last of a name winning.
func TestProbeFinderWalksOrLooksUp(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for round := range 200 {
		var ps []bridge.PeerStatus
		var probes []bridge.ProbeStatus
		for range rng.IntN(40) {
			name := fmt.Sprintf("a%02d", rng.IntN(30))
			ps = append(ps, bridge.PeerStatus{Name: name})
			if rng.IntN(4) > 0 {
				probes = append(probes, bridge.ProbeStatus{Agent: name, OK: rng.IntN(2) == 0, Message: strconv.Itoa(rng.IntN(1000))})
			}
		}
		for range rng.IntN(5) { // probes of agents no longer peers
			probes = append(probes, bridge.ProbeStatus{Agent: fmt.Sprintf("b%d", rng.IntN(9))})
		}
		slices.SortStableFunc(ps, func(a, b bridge.PeerStatus) int { return strings.Compare(a.Name, b.Name) })
		slices.SortStableFunc(probes, func(a, b bridge.ProbeStatus) int { return strings.Compare(a.Agent, b.Agent) })
		check := func(form string, ps []bridge.PeerStatus, probes []bridge.ProbeStatus) {
			want := map[string]bridge.ProbeStatus{}
			for _, p := range probes {
				want[p.Agent] = p
			}
			find := probeFinder(ps, probes)
			for _, p := range ps {
				got, ok := find(p.Name)
				w, wok := want[p.Name]
				if ok != wok || got != w {
					t.Fatalf("round %d, %s: probe of %s: %+v %v, want %+v %v", round, form, p.Name, got, ok, w, wok)
				}
			}
		}
		check("sorted", ps, probes)
		rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
		rng.Shuffle(len(probes), func(i, j int) { probes[i], probes[j] = probes[j], probes[i] })
		check("in any order", ps, probes)
	}
}

// BenchmarkPeerStatuses builds the status of a gateway of 10,000 agents,
// a few of them in trouble, from a heartbeat in reported form: what every
// status write of such a gateway costs Control.
func BenchmarkPeerStatuses(b *testing.B) {
	now := time.Now()
	const n = 10000
	ps := make([]bridge.PeerStatus, n)
	probes := make([]bridge.ProbeStatus, n)
	for i := range n {
		name := fmt.Sprintf("agent-%05d", i)
		ps[i] = bridge.PeerStatus{Name: name, Connected: i%1000 != 3}
		probes[i] = bridge.ProbeStatus{Agent: name, OK: i%1000 != 5, Message: "dial: i/o timeout"}
	}
	b.ReportAllocs()
	for b.Loop() {
		if list, counts := peerStatuses(ps, probes, true, true, now); counts == nil || len(list) != 20 {
			b.Fatalf("listed %d, counts %+v", len(list), counts)
		}
	}
}
