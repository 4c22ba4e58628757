package bridgeserver

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/credential"
)

// randomState builds a state of a few nodes and tunnels, some disabled,
// some without an address, some contesting a hostname or port.
func randomState(r *rand.Rand) State {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	no := false
	st := State{KeepaliveSeconds: 15}
	for i := 0; i < 1+r.IntN(6); i++ {
		a := &api.Agent{Metadata: api.ObjectMeta{Name: fmt.Sprintf("a%d", i), CreationTimestamp: created},
			Spec: api.AgentSpec{PublicKey: fmt.Sprintf("ak%d", r.IntN(3))}}
		if r.IntN(4) > 0 {
			a.Status.OverlayAddress = fmt.Sprintf("100.64.0.%d", 10+i)
		}
		if r.IntN(5) == 0 {
			a.Spec.Enabled = &no
		}
		st.Agents = append(st.Agents, a)
	}
	for i := 0; i < 1+r.IntN(4); i++ {
		g := &api.Gateway{Metadata: api.ObjectMeta{Name: fmt.Sprintf("g%d", i), CreationTimestamp: created},
			Spec: api.GatewaySpec{PublicKey: fmt.Sprintf("gk%d", r.IntN(3)), PublicEndpoint: fmt.Sprintf("192.0.2.%d:51820", r.IntN(3))}}
		if r.IntN(4) > 0 {
			g.Status.OverlayAddress = fmt.Sprintf("100.64.1.%d", 10+i)
		}
		if r.IntN(5) == 0 {
			g.Spec.Enabled = &no
		}
		st.Gateways = append(st.Gateways, g)
	}
	for i := 0; i < r.IntN(6); i++ {
		t := &api.Tunnel{Metadata: api.ObjectMeta{Name: fmt.Sprintf("t%d", i), CreationTimestamp: created.Add(time.Duration(r.IntN(3)) * time.Second)},
			Spec: api.TunnelSpec{Hostname: fmt.Sprintf("h%d.example.com", r.IntN(4)), Agent: fmt.Sprintf("a%d", r.IntN(4)),
				Target: fmt.Sprintf("http://localhost:%d", 8000+r.IntN(3))}}
		if r.IntN(3) == 0 {
			t.Spec.Target, t.Spec.PublicPort = "tcp://localhost:22", 2200+r.IntN(2)
		}
		st.Tunnels = append(st.Tunnels, t)
		if r.IntN(2) == 0 {
			st.Certificates = append(st.Certificates, &api.CertificateKeyPair{Metadata: api.ObjectMeta{Name: t.Spec.Hostname},
				Hostname: t.Spec.Hostname, ChainPEM: "c", KeyPEM: fmt.Sprintf("k%d", r.IntN(2)), NotAfter: created})
		}
	}
	return st
}

// TestViewMatchesSlices checks, over many random successive states, that
// every node's slice in a view is the slice computed for it alone, that
// its digest is the slice's digest, that the delta from the previous view
// turns the previous slice into this one, and that a node is woken
// whenever its slice changed.
func TestViewMatchesSlices(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var prev *view
	prevSlices := map[credential.Principal]bridge.Slice{}
	for round := 0; round < 400; round++ {
		st := randomState(r)
		v := buildView(st, int64(round+1), prev)
		gwAll, agAll, nodes := wakeSet(prev, v)
		next := map[credential.Principal]bridge.Slice{}
		check := func(p credential.Principal, want bridge.Slice, ok bool) {
			ns, got := v.sliceOf(p)
			if got != ok {
				t.Fatalf("round %d %v: exists %v, want %v", round, p, got, ok)
			}
			if !ok {
				return
			}
			have := bridge.Slice{}
			for _, e := range ns.entries() {
				have[e.item.Key] = e.item
			}
			if !reflect.DeepEqual(have, want) {
				t.Fatalf("round %d %v: view slice\n%+v\nwant\n%+v", round, p, have, want)
			}
			if d := v.digest(p, ns); d != want.Digest() {
				t.Fatalf("round %d %v: digest %s, want %s", round, p, d, want.Digest())
			}
			next[p] = want
			last, had := prevSlices[p]
			if !had || prev == nil {
				return
			}
			lastNS, _ := prev.sliceOf(p)
			up, del := v.diffSlices(lastNS, ns)
			var items []bridge.Item
			for _, e := range up {
				items = append(items, e.item)
			}
			applied, err := last.Apply(bridge.Message{Type: bridge.Delta, Items: items, Deleted: del})
			if err != nil || applied.Digest() != want.Digest() {
				t.Fatalf("round %d %v: the delta does not lead to the slice (%v)", round, p, err)
			}
			woken := nodes[nodeID{p.Role == api.RoleGateway, p.Node}] || (p.Role == api.RoleGateway && gwAll) || (p.Role != api.RoleGateway && agAll)
			if last.Digest() != want.Digest() && !woken {
				t.Fatalf("round %d %v: the slice changed but the node is not woken", round, p)
			}
		}
		for i := 0; i < 7; i++ {
			p := credential.Principal{Role: api.RoleAgent, Node: fmt.Sprintf("a%d", i)}
			want, ok := AgentSlice(st, p.Node)
			check(p, want, ok)
			p = credential.Principal{Role: api.RoleGateway, Node: fmt.Sprintf("g%d", i)}
			want, ok = GatewaySlice(st, p.Node)
			check(p, want, ok)
		}
		prev, prevSlices = v, next
	}
}

// TestViewReusesUnchangedParts checks that a view built from an equal
// state shares every part with the previous one, so no connection is
// woken and nothing is marshalled again.
func TestViewReusesUnchangedParts(t *testing.T) {
	st := randomState(rand.New(rand.NewPCG(3, 4)))
	a := buildView(st, 1, nil)
	b := buildView(st, 2, a)
	if a.gwShared != b.gwShared || a.agPeers != b.agPeers {
		t.Errorf("shared parts rebuilt from an equal state")
	}
	if gw, ag, nodes := wakeSet(a, b); gw || ag || len(nodes) != 0 {
		t.Errorf("wakeSet of equal states: gateways %v agents %v nodes %v, want none", gw, ag, nodes)
	}
}

// TestEncodeMessage checks that a message written from cached encodings
// decodes as the one json.Marshal writes.
func TestEncodeMessage(t *testing.T) {
	items := []bridge.Item{{Key: "peer/a", Peer: &bridge.Peer{Name: "a", PublicKey: "k"}}, {Key: "self", Self: &bridge.Self{Name: "g"}}}
	var entries []*entry
	for _, it := range items {
		entries = append(entries, newEntry(it))
	}
	for _, want := range []bridge.Message{
		{Type: bridge.Snapshot, Revision: 7, Digest: "abc", Items: items},
		{Type: bridge.Delta, Revision: 8, Digest: "def", Items: items[:1], Deleted: []string{"route/x"}},
		{Type: bridge.Delta, Revision: 9, Digest: "0", Deleted: []string{"peer/a"}},
	} {
		var got bridge.Message
		if err := json.Unmarshal(encodeMessage(want.Type, want.Revision, want.Digest, entries[:len(want.Items)], want.Deleted, want.AcceptsChanges), &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("encodeMessage: decoded %+v, want %+v", got, want)
		}
	}
}

// TestSharedDiffComputedOnce checks that every gateway diffing the same
// two views gets the same delta from one comparison of the shared part,
// concurrently (run with -race), and that a delta handed to one
// connection is not changed by another's.
func TestSharedDiffComputedOnce(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var a, b *view
	var st1 State
	for {
		st1 = randomState(r)
		a = buildView(st1, 1, nil)
		b = buildView(randomState(r), 2, a)
		if a.gwShared != b.gwShared && len(b.gwSelf) > 1 {
			break
		}
	}
	var names []string
	for name := range b.gwSelf {
		if _, ok := a.gwSelf[name]; ok {
			names = append(names, name)
		}
	}
	type result struct {
		up  []string
		del []string
	}
	results := make([]result, len(names)*4)
	var wg sync.WaitGroup
	for i := range results {
		p := credential.Principal{Role: api.RoleGateway, Node: names[i%len(names)]}
		wg.Go(func() {
			last, _ := a.sliceOf(p)
			next, _ := b.sliceOf(p)
			up, del := b.diffSlices(last, next)
			var keys []string
			for _, e := range up {
				keys = append(keys, e.item.Key)
			}
			results[i] = result{keys, del}
		})
	}
	wg.Wait()
	n := 0
	b.sharedDiffs.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Errorf("%d shared diffs computed for one pair of views, want 1", n)
	}
	shared := func(up []string) []string {
		return slices.DeleteFunc(slices.Clone(up), func(k string) bool { return k == "self" })
	}
	for i, res := range results {
		if !slices.IsSorted(res.up) || !slices.IsSorted(res.del) {
			t.Errorf("gateway %s: delta not in key order: %v %v", names[i%len(names)], res.up, res.del)
		}
		// Gateways' deltas differ in their self only.
		if !slices.Equal(shared(res.up), shared(results[0].up)) || !slices.Equal(res.del, results[0].del) {
			t.Errorf("gateway %s: delta %v %v, another's %v %v", names[i%len(names)], res.up, res.del, results[0].up, results[0].del)
		}
	}
}
