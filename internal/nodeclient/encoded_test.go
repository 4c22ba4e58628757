package nodeclient

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// TestEncodedFollowsTheSlice applies random snapshots and deltas to a
// slice and to its encoding, and checks that the encoding's digest is the
// slice's and that the saved file holds the slice.
func TestEncodedFollowsTheSlice(t *testing.T) {
	for _, size := range []int{20, 5 * markEvery} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { testEncodedFollows(t, size) })
	}
}

// testEncodedFollows runs the test with keys of up to size peers and
// routes: more than markEvery, the digest resumes from marks.
func testEncodedFollows(t *testing.T, size int) {
	r := rand.New(rand.NewPCG(5, uint64(size)))
	item := func() bridge.Item {
		n := r.IntN(size)
		switch r.IntN(3) {
		case 0:
			return bridge.Item{Key: fmt.Sprintf("peer/p%d", n), Peer: &bridge.Peer{Name: fmt.Sprintf("p%d", n),
				PublicKey: fmt.Sprint(r.IntN(3)), Address: netip.AddrFrom4([4]byte{100, 64, 0, byte(n)})}}
		case 1:
			return bridge.Item{Key: fmt.Sprintf("route/h%d", n), Route: &bridge.Route{Hostname: fmt.Sprintf("h%d", n), Enabled: r.IntN(2) == 0}}
		default:
			return bridge.Item{Key: "self", Self: &bridge.Self{Name: "n", Enabled: r.IntN(2) == 0}}
		}
	}
	var sl bridge.Slice
	var enc *encoded
	resumed := 0
	defer func() {
		if size > 2*markEvery && resumed == 0 && !t.Failed() {
			t.Errorf("no digest resumed from a mark")
		}
	}()
	for round := 0; round < 500; round++ {
		m := bridge.Message{Type: bridge.Delta}
		if sl == nil || r.IntN(10) == 0 {
			m.Type = bridge.Snapshot
		}
		items := r.IntN(5)
		if m.Type == bridge.Snapshot {
			items = r.IntN(2 * size)
		}
		for range items {
			m.Items = append(m.Items, item())
		}
		for k := range sl {
			if r.IntN(8*size/20) == 0 {
				m.Deleted = append(m.Deleted, k)
			}
		}
		if sl == nil {
			sl = bridge.Slice{}
		}
		next, err := sl.Apply(m)
		if err != nil {
			t.Fatal(err)
		}
		sl, enc = next, enc.apply(m)
		if enc.valid > 1 {
			resumed++
		}
		if got, want := enc.digest(), sl.Digest(); got != want {
			t.Fatalf("round %d: digest %s, want %s", round, got, want)
		}
		var saved savedSlice
		if err := json.Unmarshal(enc.saved(int64(round)), &saved); err != nil {
			t.Fatalf("round %d: saved file: %v", round, err)
		}
		if want := (savedSlice{Revision: int64(round), Items: sl.Items()}); !reflect.DeepEqual(saved, want) && len(sl) > 0 {
			t.Fatalf("round %d: saved %+v, want %+v", round, saved, want)
		}
	}
}
