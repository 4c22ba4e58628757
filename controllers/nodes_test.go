package controllers

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
)

// TestFirstNames checks the one-pass selection against a sort, and the
// count.
func TestFirstNames(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		ss := make([]string, r.IntN(30))
		for i := range ss {
			ss[i] = fmt.Sprintf("n%d", r.IntN(40))
		}
		n := 1 + r.IntN(6)
		want := slices.Sorted(slices.Values(ss))
		want = want[:min(n, len(want))]
		f := firstNames{n: n}
		for _, s := range ss {
			f.add(s)
		}
		if !slices.Equal(f.first, want) || f.count != len(ss) {
			t.Fatalf("round %d: firstNames of %v, %d: got %v (count %d), want %v (count %d)", round, ss, n, f.first, f.count, want, len(ss))
		}
	}
}

// TestFirstNamesRender checks how a message shows a list: every name up
// to its limit, then the first ones and how many more.
func TestFirstNamesRender(t *testing.T) {
	names := func(n int, list func() string, add func(string)) string {
		for i := range n {
			add(fmt.Sprintf("n%d", n-i)) // in reverse: rendered sorted
		}
		return list()
	}
	for _, tc := range []struct {
		n        int
		failures bool
		want     string
	}{
		{5, false, "n1, n2, n3, n4, n5"},
		{7, false, "n1, n2, n3, n4, n5 and 2 more"},
		{3, true, "n1: x; n2: x; n3: x"},
		{4, true, "n1: x; n2: x; n3: x; and 1 more"},
	} {
		var got string
		if tc.failures {
			f := firstNames{n: failureListMax}
			got = names(tc.n, f.failureList, func(s string) { f.addFailure(s, "x") })
		} else {
			f := firstNames{n: nameListMax}
			got = names(tc.n, f.nameList, f.add)
		}
		if got != tc.want {
			t.Errorf("%d names (failures %v): got %q, want %q", tc.n, tc.failures, got, tc.want)
		}
	}
}

// TestIsConnectedAgreesWithConnectedCondition checks isConnected, which
// skips the message, against the condition it stands for.
func TestIsConnectedAgreesWithConnectedCondition(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lease := 40 * time.Second
	no := false
	for _, beat := range []*time.Time{nil, ptr(now.Add(-time.Minute)), ptr(now.Add(-lease)), ptr(now.Add(-time.Second))} {
		for _, cur := range []*api.Condition{nil,
			{Type: api.NodeConnected, Status: api.ConditionTrue},
			{Type: api.NodeConnected, Status: api.ConditionFalse, Reason: "Disconnected"},
			{Type: api.NodeConnected, Status: api.ConditionFalse, Reason: api.ReasonHeartbeatExpired},
			{Type: api.NodeConnected, Status: api.ConditionUnknown}} {
			for _, enabled := range []bool{true, false} {
				a := &api.Agent{Metadata: api.ObjectMeta{Name: "a"}}
				if !enabled {
					a.Spec.Enabled = &no
				}
				a.Status.LastHeartbeat = beat
				if cur != nil {
					a.Status.Conditions = []api.Condition{*cur}
				}
				c, _ := connectedCondition(a.Status.LastHeartbeat, a.Status.Conditions, now, lease)
				want := enabled && c.Status == api.ConditionTrue
				if got := isConnected(a, a.Status.LastHeartbeat, now, lease); got != want {
					t.Errorf("heartbeat %v, condition %+v, enabled %t: isConnected %t, want %t", beat, cur, enabled, got, want)
				}
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestHeartbeatOnly checks which node changes count as a bare lease
// renewal that the judging loops may pass over.
func TestHeartbeatOnly(t *testing.T) {
	const lease = 40 * time.Second
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) *time.Time { ts := t0.Add(d); return &ts }
	agent := func(rv string, beat *time.Time, change func(*api.Agent)) *api.Agent {
		a := &api.Agent{Metadata: api.ObjectMeta{Name: "ag", ResourceVersion: rv, Generation: 1}}
		a.Status.OverlayAddress = "100.64.0.2"
		a.Status.LastHeartbeat = beat
		a.Status.Conditions = []api.Condition{{Type: api.NodeConnected, Status: api.ConditionTrue, Reason: api.ReasonHeartbeat}}
		a.Status.Targets = []api.TargetStatus{{Tunnel: "web", Reachable: true}}
		if change != nil {
			change(a)
		}
		return a
	}
	gateway := func(rv string, beat *time.Time, change func(*api.Gateway)) *api.Gateway {
		g := &api.Gateway{Metadata: api.ObjectMeta{Name: "gw", ResourceVersion: rv}}
		g.Status.LastHeartbeat = beat
		g.Status.Agents = []api.NodePeerStatus{{Name: "ag", Probe: ProbeOK}}
		if change != nil {
			change(g)
		}
		return g
	}
	same := agent("5", at(0), nil)
	for _, tc := range []struct {
		name string
		ch   reconcile.Change
		now  time.Duration
		want bool
	}{
		{"agent lease renewed", reconcile.Change{Type: api.Modified, Old: agent("5", at(0), nil), New: agent("6", at(20*time.Second), nil)}, 21 * time.Second, true},
		{"gateway lease renewed", reconcile.Change{Type: api.Modified, Old: gateway("5", at(0), nil), New: gateway("6", at(20*time.Second), nil)}, 21 * time.Second, true},
		{"the old lease had run out", reconcile.Change{Type: api.Modified, Old: agent("5", at(0), nil), New: agent("6", at(45*time.Second), nil)}, 45 * time.Second, false},
		{"first heartbeat", reconcile.Change{Type: api.Modified, Old: agent("5", nil, nil), New: agent("6", at(0), nil)}, 0, false},
		{"heartbeat went back", reconcile.Change{Type: api.Modified, Old: agent("5", at(20*time.Second), nil), New: agent("6", at(0), nil)}, 21 * time.Second, false},
		{"a target turned unreachable", reconcile.Change{Type: api.Modified, Old: agent("5", at(0), nil),
			New: agent("6", at(20*time.Second), func(a *api.Agent) { a.Status.Targets[0].Reachable = false })}, 21 * time.Second, false},
		{"disabled", reconcile.Change{Type: api.Modified, Old: agent("5", at(0), nil),
			New: agent("6", at(20*time.Second), func(a *api.Agent) { a.Spec.Enabled = new(bool) })}, 21 * time.Second, false},
		{"a condition changed", reconcile.Change{Type: api.Modified, Old: agent("5", at(0), nil),
			New: agent("6", at(20*time.Second), func(a *api.Agent) { a.Status.Conditions[0].Reason = "Other" })}, 21 * time.Second, false},
		{"a probe failed", reconcile.Change{Type: api.Modified, Old: gateway("5", at(0), nil),
			New: gateway("6", at(20*time.Second), func(g *api.Gateway) { g.Status.Agents[0].Probe = "timeout" })}, 21 * time.Second, false},
		{"slice revision moved", reconcile.Change{Type: api.Modified, Old: gateway("5", at(0), nil),
			New: gateway("6", at(20*time.Second), func(g *api.Gateway) { g.Status.Revision = 9 })}, 21 * time.Second, false},
		{"added", reconcile.Change{Type: api.Added, New: agent("6", at(0), nil)}, 1 * time.Second, false},
		{"deleted", reconcile.Change{Type: api.Deleted, Old: agent("6", at(0), nil)}, 1 * time.Second, false},
		{"resync", reconcile.Change{Type: api.Modified, Old: same, New: same, Resync: true}, 1 * time.Second, false},
		{"not a node", reconcile.Change{Type: api.Modified, Old: &api.Tunnel{Metadata: api.ObjectMeta{Name: "t", ResourceVersion: "5"}},
			New: &api.Tunnel{Metadata: api.ObjectMeta{Name: "t", ResourceVersion: "6"}}}, 1 * time.Second, false},
	} {
		if got := heartbeatOnly(tc.ch, t0.Add(tc.now), lease); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
