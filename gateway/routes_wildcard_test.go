package gateway

import (
	"testing"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// TestWildcardRouteServesOneLabel: a "*.example.com" route answers any
// single label under it that no exact route claims; deeper names and the
// parent are not its.
func TestWildcardRouteServesOneLabel(t *testing.T) {
	s := bridge.Slice{}
	for _, r := range []bridge.Route{{Tunnel: "wild", Hostname: "*.example.com", Protocol: "http", Enabled: true},
		{Tunnel: "exact", Hostname: "exact.example.com", Protocol: "http", Enabled: true}} {
		s["route/"+r.Hostname] = bridge.Item{Key: "route/" + r.Hostname, Route: &r}
	}
	d, err := parseSlice(s, [32]byte{})
	if err != nil {
		t.Fatalf("parseSlice: got %v, want nil", err)
	}
	for host, want := range map[string]string{"a.example.com": "wild", "b.example.com": "wild", "exact.example.com": "exact",
		"a.b.example.com": "", "example.com": "", "a.example.org": ""} {
		got := ""
		if r, ok := d.table.lookup(host); ok {
			got = r.tunnel
		}
		if got != want {
			t.Errorf("lookup(%q): got tunnel %q, want %q", host, got, want)
		}
	}
}
