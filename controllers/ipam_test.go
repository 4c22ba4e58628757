package controllers

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

func TestAssignableRange(t *testing.T) {
	tests := []struct {
		prefix      string
		first, last string
		wantErr     string
	}{
		{"100.64.0.0/10", "100.64.0.1", "100.127.255.254", ""},
		{"100.64.0.0/30", "100.64.0.1", "100.64.0.2", ""},
		{"100.64.0.7/29", "100.64.0.1", "100.64.0.6", ""}, // host bits are masked off
		{"fd00:6b6b::/64", "fd00:6b6b::1", "fd00:6b6b::ffff:ffff:ffff:fffe", ""},
		{"fd00::/126", "fd00::1", "fd00::2", ""},
		{"100.64.0.0/31", "", "", "at least 4 addresses"},
		{"100.64.0.1/32", "", "", "at least 4 addresses"},
		{"fd00::/127", "", "", "at least 4 addresses"},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			first, last, err := assignableRange(netip.MustParsePrefix(tt.prefix))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || first.String() != tt.first || last.String() != tt.last {
				t.Fatalf("got %s..%s, %v, want %s..%s", first, last, err, tt.first, tt.last)
			}
		})
	}
	if _, _, err := assignableRange(netip.Prefix{}); err == nil {
		t.Fatalf("the zero prefix: got no error, want one")
	}
}

func TestLowestFree(t *testing.T) {
	first, last := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.4")
	tests := []struct {
		name string
		used []string
		want string // "" for none
	}{
		{"empty pool", nil, "10.0.0.1"},
		{"a hole is filled first", []string{"10.0.0.1", "10.0.0.3"}, "10.0.0.2"},
		{"addresses outside the range do not matter", []string{"10.0.0.0", "192.168.1.1"}, "10.0.0.1"},
		{"the last one", []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}, "10.0.0.4"},
		{"exhausted", []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			used := map[netip.Addr]bool{}
			for _, u := range tt.used {
				used[netip.MustParseAddr(u)] = true
			}
			got, ok := lowestFree(first, last, used)
			if (tt.want == "") == ok || (ok && got.String() != tt.want) {
				t.Fatalf("got %v (found %v), want %q", got, ok, tt.want)
			}
		})
	}
}

func TestOverlayAllocatorReconcile(t *testing.T) {
	type want struct {
		addr   string // status.overlayAddress afterwards
		status api.ConditionStatus
		reason string // of AddressAssigned
		msgHas string
	}
	tests := []struct {
		name   string
		prefix string
		nodes  []nodeFix
		target api.Key
		want   want
	}{
		{"the first node gets the first address", "100.64.0.0/10",
			[]nodeFix{{kind: "Agent", name: "a"}},
			api.Key{Kind: "Agent", Name: "a"},
			want{"100.64.0.1", "True", ReasonAddressAssigned, "100.64.0.1"}},
		{"agents and gateways share one pool, lowest free first", "100.64.0.0/10",
			[]nodeFix{{kind: "Agent", name: "a", addr: "100.64.0.1"}, {kind: "Gateway", name: "g", addr: "100.64.0.3"},
				{kind: "Gateway", name: "new"}},
			api.Key{Kind: "Gateway", Name: "new"},
			want{"100.64.0.2", "True", ReasonAddressAssigned, "100.64.0.2"}},
		{"an address is kept, even outside the prefix", "100.64.0.0/10",
			[]nodeFix{{kind: "Agent", name: "a", addr: "10.1.2.3"}},
			api.Key{Kind: "Agent", Name: "a"},
			want{"10.1.2.3", "True", ReasonAddressAssigned, "outside the overlay prefix"}},
		{"an address that does not parse is replaced", "100.64.0.0/10",
			[]nodeFix{{kind: "Agent", name: "a", addr: "not-an-ip"}},
			api.Key{Kind: "Agent", Name: "a"},
			want{"100.64.0.1", "True", ReasonAddressAssigned, "100.64.0.1"}},
		{"of two nodes on one address the older keeps it", "100.64.0.0/10",
			[]nodeFix{{kind: "Gateway", name: "old", addr: "100.64.0.1"}, {kind: "Agent", name: "young", addr: "100.64.0.1", after: time.Minute}},
			api.Key{Kind: "Gateway", Name: "old"},
			want{"100.64.0.1", "True", ReasonAddressAssigned, "100.64.0.1"}},
		{"of two nodes on one address the younger moves", "100.64.0.0/10",
			[]nodeFix{{kind: "Gateway", name: "old", addr: "100.64.0.1"}, {kind: "Agent", name: "young", addr: "100.64.0.1", after: time.Minute}},
			api.Key{Kind: "Agent", Name: "young"},
			want{"100.64.0.2", "True", ReasonAddressAssigned, "100.64.0.2"}},
		{"a /30 holds two nodes", "100.64.0.0/30",
			[]nodeFix{{kind: "Agent", name: "a", addr: "100.64.0.1"}, {kind: "Agent", name: "b"}},
			api.Key{Kind: "Agent", Name: "b"},
			want{"100.64.0.2", "True", ReasonAddressAssigned, "100.64.0.2"}},
		{"the third node of a /30 finds it exhausted", "100.64.0.0/30",
			[]nodeFix{{kind: "Agent", name: "a", addr: "100.64.0.1"}, {kind: "Gateway", name: "b", addr: "100.64.0.2"}, {kind: "Agent", name: "c"}},
			api.Key{Kind: "Agent", Name: "c"},
			want{"", "False", ReasonOverlayExhausted, "100.64.0.0/30"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
			createAll(t, src, clk, tt.nodes)
			infs, _ := startInformers(t, src)
			a := &OverlayAllocator{Store: src, Agents: infs["Agent"], Gateways: infs["Gateway"],
				Prefix: netip.MustParsePrefix(tt.prefix), Now: clk.Now}
			if _, err := a.Reconcile(context.Background(), reconcile.Request{Key: tt.target}); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			got := getNode(t, src, tt.target.Kind, tt.target.Name)
			_, st, _, _ := nodeParts(got)
			c := condition(got, NodeAddressAssigned)
			if st.OverlayAddress != tt.want.addr {
				t.Errorf("overlayAddress: got %q, want %q", st.OverlayAddress, tt.want.addr)
			}
			if c.Status != tt.want.status || c.Reason != tt.want.reason || !strings.Contains(c.Message, tt.want.msgHas) {
				t.Errorf("AddressAssigned: got %s/%s %q, want %s/%s containing %q", c.Status, c.Reason, c.Message,
					tt.want.status, tt.want.reason, tt.want.msgHas)
			}
			ready := condition(got, api.ConditionReady)
			if tt.want.status == api.ConditionFalse && (ready.Status != api.ConditionFalse || ready.Reason != ReasonOverlayExhausted) {
				t.Errorf("Ready of an exhausted node: got %s/%s, want False/%s", ready.Status, ready.Reason, ReasonOverlayExhausted)
			}
		})
	}
}

// TestOverlayAllocatorWritesOnlyChanges checks that a node that keeps its
// address is not written again.
func TestOverlayAllocatorWritesOnlyChanges(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	mustCreate(t, src, &api.Agent{Metadata: api.ObjectMeta{Name: "a"}})
	infs, _ := startInformers(t, src)
	a := &OverlayAllocator{Store: src, Agents: infs["Agent"], Gateways: infs["Gateway"], Now: clk.Now}
	req := reconcile.Request{Key: api.Key{Kind: "Agent", Name: "a"}}
	if _, err := a.Reconcile(ctx, req); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	first := getNode(t, src, "Agent", "a")
	waitCached(t, infs["Agent"], first)
	for i := range 3 {
		if _, err := a.Reconcile(ctx, req); err != nil {
			t.Fatalf("Reconcile %d: %v", i, err)
		}
	}
	if got := getNode(t, src, "Agent", "a").GetMeta().ResourceVersion; got != first.GetMeta().ResourceVersion {
		t.Fatalf("resourceVersion after reconciles with nothing to change: got %s, want %s (no write)", got, first.GetMeta().ResourceVersion)
	}
}

// TestOverlayAllocatorConfirmsWithTheStore checks that an allocator whose
// cache missed an earlier assignment still does not hand the address out
// twice: the List before the write sees it.
func TestOverlayAllocatorConfirmsWithTheStore(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	mustCreate(t, src, &api.Agent{Metadata: api.ObjectMeta{Name: "b"}})
	infs, stop := startInformers(t, src)
	stop() // the cache misses everything from now on
	nodeFix{kind: "Gateway", name: "a", addr: "100.64.0.1"}.create(t, src, clk)
	al := &OverlayAllocator{Store: src, Agents: infs["Agent"], Gateways: infs["Gateway"], Now: clk.Now}
	if _, err := al.Reconcile(ctx, reconcile.Request{Key: api.Key{Kind: "Agent", Name: "b"}}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	_, st, _, _ := nodeParts(getNode(t, src, "Agent", "b"))
	if st.OverlayAddress != "100.64.0.2" {
		t.Fatalf("overlayAddress: got %q, want 100.64.0.2 (100.64.0.1 is held, though the cache does not know)", st.OverlayAddress)
	}
}

// TestOverlayAllocatorBatches checks that one reconcile gives every node
// without an address one, from a single list, and that the other nodes'
// own reconciles then change nothing.
func TestOverlayAllocatorBatches(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	createAll(t, src, clk, []nodeFix{{kind: "Agent", name: "a"}, {kind: "Gateway", name: "g", addr: "100.64.0.2"},
		{kind: "Agent", name: "b"}, {kind: "Gateway", name: "h"}})
	infs, _ := startInformers(t, src)
	al := &OverlayAllocator{Store: src, Agents: infs["Agent"], Gateways: infs["Gateway"], Now: clk.Now}
	if _, err := al.Reconcile(ctx, reconcile.Request{Key: api.Key{Kind: "Agent", Name: "b"}}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	want := map[api.Key]string{{Kind: "Agent", Name: "b"}: "100.64.0.1", {Kind: "Agent", Name: "a"}: "100.64.0.3",
		{Kind: "Gateway", Name: "g"}: "100.64.0.2", {Kind: "Gateway", Name: "h"}: "100.64.0.4"}
	for k, addr := range want {
		got := getNode(t, src, k.Kind, k.Name)
		if _, st, _, _ := nodeParts(got); st.OverlayAddress != addr {
			t.Errorf("%s: overlayAddress %q, want %q", k, st.OverlayAddress, addr)
		}
		if c := condition(got, NodeAddressAssigned); c.Status != api.ConditionTrue {
			t.Errorf("%s: AddressAssigned %s, want True", k, c.Status)
		}
	}
	for k := range want {
		waitCached(t, infs[k.Kind], getNode(t, src, k.Kind, k.Name))
	}
	delete(want, api.Key{Kind: "Gateway", Name: "g"}) // its conditions were never written: its reconcile does
	for k, addr := range want {
		before := getNode(t, src, k.Kind, k.Name).GetMeta().ResourceVersion
		if _, err := al.Reconcile(ctx, reconcile.Request{Key: k}); err != nil {
			t.Fatalf("Reconcile %s: %v", k, err)
		}
		got := getNode(t, src, k.Kind, k.Name)
		if _, st, _, _ := nodeParts(got); st.OverlayAddress != addr || got.GetMeta().ResourceVersion != before {
			t.Errorf("%s after its own reconcile: %q at %s, want %q unwritten at %s", k, st.OverlayAddress,
				got.GetMeta().ResourceVersion, addr, before)
		}
	}
}

// TestOverlayAllocatorUniqueUnderConcurrency creates 200 agents and
// gateways at once while an allocator runs with two workers, and checks
// from the store's full history that every node was given exactly one
// address, ever, and no address was given to two nodes.
func TestOverlayAllocatorUniqueUnderConcurrency(t *testing.T) {
	leakcheck.Goroutines(t)
	const nodes = 200
	ctx := context.Background()
	src := reconciletest.NewSource(reconciletest.Config{})
	infs, stop := startInformers(t, src)
	a := &OverlayAllocator{Store: src, Agents: infs["Agent"], Gateways: infs["Gateway"],
		Prefix: netip.MustParsePrefix("10.99.0.0/16")}
	c := reconcile.NewController(reconcile.ControllerConfig{Name: "ipam", Reconciler: a, Workers: 2})
	c.Watch(infs["Agent"], nil)
	c.Watch(infs["Gateway"], nil)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	stopAll := sync.OnceFunc(func() { cancel(); <-done; stop() })
	t.Cleanup(stopAll)

	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < nodes; i += 8 {
				var obj api.Object = &api.Agent{Metadata: api.ObjectMeta{Name: fmt.Sprintf("agent-%03d", i)}}
				if i%4 == 0 {
					obj = &api.Gateway{Metadata: api.ObjectMeta{Name: fmt.Sprintf("gw-%03d", i)}}
				}
				if _, err := src.Create(ctx, obj); err != nil {
					t.Errorf("create %s: %v", obj.GetMeta().Name, err)
				}
			}
		})
	}
	wg.Wait()
	eventually(t, "every node has an address", func() bool {
		n := 0
		for _, kind := range []string{"Agent", "Gateway"} {
			objs, _, _ := src.List(ctx, kind, api.Selector{})
			for _, o := range objs {
				if _, ok := nodeAddress(o); ok {
					n++
				}
			}
		}
		return n == nodes
	})

	// With the allocator stopped, a marker of each kind ends the history
	// the watches below replay.
	stopAll()
	mustCreate(t, src, &api.Agent{Metadata: api.ObjectMeta{Name: "zz-end"}})
	mustCreate(t, src, &api.Gateway{Metadata: api.ObjectMeta{Name: "zz-end"}})
	everHeld := map[string]map[string]bool{} // node -> addresses it ever held
	holder := map[string]string{}            // address -> node
	for _, kind := range []string{"Agent", "Gateway"} {
		wctx, wcancel := context.WithCancel(ctx)
		ch, err := src.Watch(wctx, kind, 1)
		if err != nil {
			t.Fatalf("watch %s: %v", kind, err)
		}
		for ev := range ch {
			if ev.Type == api.Error {
				t.Fatalf("watch %s: %v", kind, ev.Err)
			}
			if ev.Object.GetMeta().Name == "zz-end" {
				break
			}
			if addr, ok := nodeAddress(ev.Object); ok {
				name := kind + "/" + ev.Object.GetMeta().Name
				if everHeld[name] == nil {
					everHeld[name] = map[string]bool{}
				}
				everHeld[name][addr.String()] = true
				if h, taken := holder[addr.String()]; taken && h != name {
					t.Errorf("address %s: given to %s and to %s, want one node", addr, h, name)
				}
				holder[addr.String()] = name
			}
		}
		wcancel()
		for range ch { // let the watch goroutine end
		}
	}
	if len(everHeld) != nodes {
		t.Fatalf("nodes that got an address: got %d, want %d", len(everHeld), nodes)
	}
	prefix := netip.MustParsePrefix("10.99.0.0/16")
	for name, addrs := range everHeld {
		if len(addrs) != 1 {
			t.Errorf("%s: held addresses %v, want exactly one ever", name, addrs)
		}
		for s := range addrs {
			addr := netip.MustParseAddr(s)
			if !prefix.Contains(addr) || addr == prefix.Addr() || addr == lastAddress(prefix) {
				t.Errorf("%s: got %s, want an address of %s other than its first and last", name, addr, prefix)
			}
		}
	}
	// Lowest first: the 200 addresses are exactly .0.1 to .0.200.
	for i := 1; i <= nodes; i++ {
		want := netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(i)}).String()
		if _, ok := holder[want]; !ok {
			t.Errorf("address %s: unassigned, want the %d lowest addresses used", want, nodes)
		}
	}
}

func TestManagerOverlayAddressesEndToEnd(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx := context.Background()
	clk := newClock()
	src := reconciletest.NewSource(reconciletest.Config{Now: clk.Now})
	// No resync: the waiting node must be woken by the deletion itself.
	runManagerWith(t, Config{Store: src, Workers: 2, Resync: -1, Now: clk.Now,
		OverlayPrefix: netip.MustParsePrefix("100.64.0.0/30")})

	addrOf := func(kind, name string) string {
		_, st, _, _ := nodeParts(getNode(t, src, kind, name))
		return st.OverlayAddress
	}
	mustCreate(t, src, &api.Agent{Metadata: api.ObjectMeta{Name: "a"}})
	eventually(t, "agent a gets 100.64.0.1", func() bool { return addrOf("Agent", "a") == "100.64.0.1" })
	mustCreate(t, src, &api.Gateway{Metadata: api.ObjectMeta{Name: "g"}})
	eventually(t, "gateway g gets 100.64.0.2", func() bool { return addrOf("Gateway", "g") == "100.64.0.2" })

	// The pool is exhausted: the third node says so in its conditions.
	mustCreate(t, src, &api.Agent{Metadata: api.ObjectMeta{Name: "c"}})
	eventually(t, "agent c reports OverlayExhausted", func() bool {
		c := getNode(t, src, "Agent", "c")
		return condition(c, NodeAddressAssigned).Reason == ReasonOverlayExhausted &&
			condition(c, api.ConditionReady).Reason == ReasonOverlayExhausted
	})

	// A re-registration (a new key in the spec), heartbeats and being
	// disabled keep the address.
	a := getNode(t, src, "Agent", "a").(*api.Agent)
	a.Spec.PublicKey = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	off := false
	a.Spec.Enabled = &off
	if _, err := src.Update(ctx, a); err != nil {
		t.Fatalf("update agent a: %v", err)
	}
	heartbeat(t, src, clk, "Agent", "a", nil)
	eventually(t, "agent a's new generation observed", func() bool {
		return getNode(t, src, "Agent", "a").GetStatus().ObservedGeneration == 2
	})
	if got := addrOf("Agent", "a"); got != "100.64.0.1" {
		t.Fatalf("agent a's address after an update: got %q, want 100.64.0.1 kept", got)
	}
	if got := addrOf("Agent", "c"); got != "" {
		t.Fatalf("agent c's address: got %q, want none (the pool is full)", got)
	}

	// Deleting a node frees its address for the one waiting.
	mustDelete(t, src, "Agent", "a")
	eventually(t, "agent c gets the freed 100.64.0.1", func() bool {
		c := getNode(t, src, "Agent", "c")
		_, st, _, _ := nodeParts(c)
		return st.OverlayAddress == "100.64.0.1" && condition(c, NodeAddressAssigned).Status == api.ConditionTrue
	})
	if got := addrOf("Gateway", "g"); got != "100.64.0.2" {
		t.Fatalf("gateway g's address: got %q, want 100.64.0.2 kept", got)
	}
}

func TestManagerRejectsATinyOverlay(t *testing.T) {
	src := reconciletest.NewSource(reconciletest.Config{})
	m := New(Config{Store: src, OverlayPrefix: netip.MustParsePrefix("100.64.0.0/31")})
	err := m.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "at least 4 addresses") {
		t.Fatalf("Run with a /31 overlay: got %v, want an error saying it needs at least 4 addresses", err)
	}
}
