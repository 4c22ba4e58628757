package controllers

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// TestFirstSorted checks the one-pass selection against a sort.
func TestFirstSorted(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		ss := make([]string, r.IntN(30))
		for i := range ss {
			ss[i] = fmt.Sprintf("n%d", r.IntN(40))
		}
		n := 1 + r.IntN(6)
		want := slices.Sorted(slices.Values(ss))
		want = want[:min(n, len(want))]
		if got := firstSorted(ss, n); !slices.Equal(got, want) {
			t.Fatalf("round %d: firstSorted(%v, %d) = %v, want %v", round, ss, n, got, want)
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
				c, _ := connectedCondition(&a.Status.NodeStatus, a.Status.Conditions, now, lease)
				want := enabled && c.Status == api.ConditionTrue
				if got := isConnected(a, now, lease); got != want {
					t.Errorf("heartbeat %v, condition %+v, enabled %t: isConnected %t, want %t", beat, cur, enabled, got, want)
				}
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }
