package api

import (
	"testing"
	"time"
)

// TestLastHeard checks which of a node's status heartbeat and lease time
// says when Control last heard from it.
func TestLastHeard(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	at := func(s int) *time.Time { v := created.Add(time.Duration(s) * time.Second); return &v }
	tests := []struct {
		name        string
		beat, lease *time.Time
		want        *time.Time
	}{
		{"neither", nil, nil, nil},
		{"the status alone", at(5), nil, at(5)},
		{"the lease alone", nil, at(5), at(5)},
		{"a later lease", at(5), at(9), at(9)},
		{"an earlier lease", at(9), at(5), at(9)},
		{"the same time", at(5), at(5), at(5)},
		{"a deleted namesake's lease", nil, at(-1), nil},
		{"a deleted namesake's lease beside a status", at(5), at(-1), at(5)},
	}
	for _, tt := range tests {
		got := LastHeard(tt.beat, tt.lease, created)
		if (got == nil) != (tt.want == nil) || got != nil && !got.Equal(*tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestNodeOfLease checks that NodeOfLease inverts NodeLeaseName and
// refuses names that are no node's lease.
func TestNodeOfLease(t *testing.T) {
	for _, kind := range []string{"Agent", "Gateway"} {
		lease, ok := NodeLeaseName(kind, "home")
		k, n, back := NodeOfLease(lease)
		if !ok || !back || k != kind || n != "home" {
			t.Errorf("%s home: lease %q (%v) back to %s %s (%v)", kind, lease, ok, k, n, back)
		}
	}
	if _, ok := NodeLeaseName("Tunnel", "web"); ok {
		t.Error("a tunnel has a lease name")
	}
	for _, bad := range []string{"", "agents", "agents/", "tunnels/web", "home"} {
		if k, n, ok := NodeOfLease(bad); ok {
			t.Errorf("NodeOfLease(%q): got %s %s, want no node", bad, k, n)
		}
	}
}
