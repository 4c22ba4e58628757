package bridgeserver

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"hash"
	"sort"
	"strconv"
	"sync"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/credential"
)

// A view is every node's slice at one moment, computed once for all
// connections rather than once per connection: a fleet of N agents and M
// gateways would otherwise cost O((N+M) × (N+M)) on every change. All
// gateways share one set of items besides their self; all enabled agents
// share the gateways as peers and add their self and forwards. Items are
// kept with their JSON encoding, and an item that did not change is the
// same entry in the next view, so deltas, digests and messages reuse the
// encoding instead of marshalling the same peer once per node.
//
// A view is never modified once built, but for the memo of shared diffs.
type view struct {
	rev int64 // the store revision it reflects

	gwShared *part             // every gateway's items but its self
	gwSelf   map[string]*entry // by gateway name
	// gwBefore is the SHA-256 state after the lines of gwShared whose
	// keys sort before "self"; gwAfter holds the lines after it.
	gwBefore []byte
	gwAfter  []byte

	agPeers *part             // the gateways, as every enabled agent's peers
	agSelf  map[string]*entry // by agent name
	// agBefore is the SHA-256 state after agPeers' lines: the digest of
	// an enabled agent without forwards only adds its self.
	agBefore   []byte
	agForwards map[string]*part // by agent name, for agents that have any

	// sharedDiffs memoizes diffParts between a shared part a node last
	// had and this view's: every gateway (every agent) makes the same
	// comparison, of as many entries as there are agents (gateways), so
	// one change would cost O(nodes × peers) instead of O(peers).
	sharedDiffs sync.Map // partPair -> *partDiff
}

type partPair struct{ a, b *part }

type partDiff struct {
	once sync.Once
	up   []*entry
	del  []string
}

// entry is one item and its JSON encoding, shared by every slice that
// holds it.
type entry struct {
	item bridge.Item
	json []byte
}

func newEntry(it bridge.Item) *entry {
	data, _ := json.Marshal(it)
	return &entry{item: it, json: data}
}

// part is a set of entries, by key and in key order.
type part struct {
	keys    []string
	entries map[string]*entry
	lines   []byte // every entry's JSON and a newline, in key order
}

// newPart builds a part from items, reusing prev's entry of an item that
// did not change.
func newPart(items bridge.Slice, prev *part) *part {
	p := &part{keys: make([]string, 0, len(items)), entries: make(map[string]*entry, len(items))}
	for k := range items {
		p.keys = append(p.keys, k)
	}
	sort.Strings(p.keys)
	n := 0
	for _, k := range p.keys {
		var old *entry
		if prev != nil {
			old = prev.entries[k]
		}
		e := reuse(old, items[k])
		p.entries[k] = e
		n += len(e.json) + 1
	}
	p.lines = make([]byte, 0, n)
	for _, k := range p.keys {
		p.lines = append(append(p.lines, p.entries[k].json...), '\n')
	}
	// Reuse the previous part itself when nothing changed, so that a
	// connection that holds it diffs nothing.
	if prev != nil && samePart(prev, p) {
		return prev
	}
	return p
}

func samePart(a, b *part) bool {
	if len(a.keys) != len(b.keys) {
		return false
	}
	for k, e := range b.entries {
		if a.entries[k] != e {
			return false
		}
	}
	return true
}

// reuse returns old when it holds an item equal to it, else a new entry.
func reuse(old *entry, it bridge.Item) *entry {
	if old != nil && sameItem(old.item, it) {
		return old
	}
	return newEntry(it)
}

// sameItem compares two items by value; it may answer false for items
// that encode alike (a time in another location), never true for items
// that differ.
func sameItem(a, b bridge.Item) bool {
	return a.Key == b.Key && eq(a.Self, b.Self) && eq(a.Peer, b.Peer) && eq(a.Route, b.Route) &&
		eq(a.Forward, b.Forward) && eq(a.Certificate, b.Certificate) && eq(a.Challenge, b.Challenge)
}

func eq[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// buildView computes the view of st, reusing prev's entries and parts
// where nothing changed.
func buildView(st State, rev int64, prev *view) *view {
	v := &view{rev: rev, gwSelf: map[string]*entry{}, agSelf: map[string]*entry{}, agForwards: map[string]*part{}}
	pv := prev
	if pv == nil {
		pv = &view{}
	}
	owned := owners(st.Tunnels)
	v.gwShared = newPart(gatewayShared(st, owned), pv.gwShared)
	for name, it := range gatewaySelf(st.Gateways) {
		v.gwSelf[name] = reuse(pv.gwSelf[name], it)
	}
	if pv.gwShared == v.gwShared {
		v.gwBefore, v.gwAfter = pv.gwBefore, pv.gwAfter
	} else {
		h := sha256.New()
		i := sort.SearchStrings(v.gwShared.keys, "self")
		for _, k := range v.gwShared.keys[:i] {
			h.Write(v.gwShared.entries[k].json)
			h.Write([]byte{'\n'})
		}
		v.gwBefore, _ = h.(encoding.BinaryMarshaler).MarshalBinary()
		for _, k := range v.gwShared.keys[i:] {
			v.gwAfter = append(append(v.gwAfter, v.gwShared.entries[k].json...), '\n')
		}
	}

	v.agPeers = newPart(agentPeers(st.Gateways), pv.agPeers)
	if pv.agPeers == v.agPeers {
		v.agBefore = pv.agBefore
	} else {
		h := sha256.New()
		h.Write(v.agPeers.lines)
		v.agBefore, _ = h.(encoding.BinaryMarshaler).MarshalBinary()
	}
	for _, o := range st.Agents {
		a := o.(*api.Agent)
		v.agSelf[a.Metadata.Name] = reuse(pv.agSelf[a.Metadata.Name], agentSelf(a, st.KeepaliveSeconds))
	}
	for agent, items := range agentForwards(owned) {
		s := bridge.Slice{}
		for _, it := range items {
			s[it.Key] = it
		}
		v.agForwards[agent] = newPart(s, pv.agForwards[agent])
	}
	return v
}

// nodeSlice is one node's slice in a view: a shared part and the node's
// own entries (its self, an agent's forwards).
type nodeSlice struct {
	shared *part // nil for a disabled agent
	own    *part
}

// sliceOf returns p's slice in v, false when the node does not exist.
func (v *view) sliceOf(p credential.Principal) (nodeSlice, bool) {
	if p.Role == api.RoleGateway {
		self, ok := v.gwSelf[p.Node]
		if !ok {
			return nodeSlice{}, false
		}
		return nodeSlice{shared: v.gwShared, own: ownPart(self, nil)}, true
	}
	self, ok := v.agSelf[p.Node]
	if !ok {
		return nodeSlice{}, false
	}
	if !self.item.Self.Enabled {
		return nodeSlice{own: ownPart(self, nil)}, true
	}
	return nodeSlice{shared: v.agPeers, own: ownPart(self, v.agForwards[p.Node])}, true
}

// ownPart is a node's self plus its forwards, if any.
func ownPart(self *entry, forwards *part) *part {
	p := &part{keys: []string{"self"}, entries: map[string]*entry{"self": self}}
	if forwards != nil {
		p.keys = append(append([]string(nil), forwards.keys...), "self") // "forward/..." < "self"
		for k, e := range forwards.entries {
			p.entries[k] = e
		}
	}
	return p
}

// digest is bridge.Slice.Digest of the node's slice, computed from the
// view's shared hash states where it can.
func (v *view) digest(p credential.Principal, ns nodeSlice) string {
	self := ns.own.entries["self"].json
	var h hash.Hash
	switch {
	case p.Role == api.RoleGateway:
		h = resume(v.gwBefore)
		h.Write(self)
		h.Write([]byte{'\n'})
		h.Write(v.gwAfter)
	case ns.shared == nil:
		h = sha256.New()
		h.Write(self)
		h.Write([]byte{'\n'})
	case len(ns.own.keys) == 1:
		h = resume(v.agBefore)
		h.Write(self)
		h.Write([]byte{'\n'})
	default:
		h = sha256.New()
		for _, k := range ns.own.keys[:len(ns.own.keys)-1] {
			h.Write(ns.own.entries[k].json)
			h.Write([]byte{'\n'})
		}
		h.Write(ns.shared.lines)
		h.Write(self)
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func resume(state []byte) hash.Hash {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		panic("bridgeserver: resume a SHA-256 state: " + err.Error())
	}
	return h
}

// entries returns every entry of ns in key order.
func (ns nodeSlice) entries() []*entry {
	var out []*entry
	if ns.shared != nil {
		out = make([]*entry, 0, len(ns.shared.keys)+len(ns.own.keys))
		for _, k := range ns.shared.keys {
			out = append(out, ns.shared.entries[k])
		}
	}
	for _, k := range ns.own.keys {
		out = append(out, ns.own.entries[k])
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].item.Key < out[j].item.Key })
	return out
}

// diffSlices returns the entries of next, a slice in v, that are new or
// changed since last and the keys last has and next lacks, both in key
// order.
func (v *view) diffSlices(last, next nodeSlice) (up []*entry, del []string) {
	u1, d1 := v.diffShared(last.shared, next.shared)
	u2, d2 := diffParts(last.own, next.own)
	// u1 and d1 are shared with other connections: copy, never append.
	up = append(append(make([]*entry, 0, len(u1)+len(u2)), u1...), u2...)
	del = append(append(make([]string, 0, len(d1)+len(d2)), d1...), d2...)
	sort.Slice(up, func(i, j int) bool { return up[i].item.Key < up[j].item.Key })
	sort.Strings(del)
	return up, del
}

// diffShared is diffParts of two shared parts, computed once per view for
// all the connections that ask.
func (v *view) diffShared(a, b *part) (up []*entry, del []string) {
	if a == b {
		return nil, nil
	}
	d, _ := v.sharedDiffs.LoadOrStore(partPair{a, b}, new(partDiff))
	pd := d.(*partDiff)
	pd.once.Do(func() { pd.up, pd.del = diffParts(a, b) })
	return pd.up, pd.del
}

func diffParts(a, b *part) (up []*entry, del []string) {
	if a == b {
		return nil, nil
	}
	if b != nil {
		for _, k := range b.keys {
			e := b.entries[k]
			var old *entry
			if a != nil {
				old = a.entries[k]
			}
			if old == nil || (old != e && !bytes.Equal(old.json, e.json)) {
				up = append(up, e)
			}
		}
	}
	if a != nil {
		for _, k := range a.keys {
			if b == nil || b.entries[k] == nil {
				del = append(del, k)
			}
		}
	}
	return up, del
}

// encodeMessage encodes a Snapshot or Delta from entries' cached JSON; it
// decodes as the bridge.Message json.Marshal would have written. first
// marks a connection's first message, which says that Control takes
// heartbeats with only what changed (bridge.Message.AcceptsChanges).
func encodeMessage(typ bridge.MessageType, rev int64, digest string, items []*entry, deleted []string, first bool) []byte {
	n := 96 + len(digest)
	for _, e := range items {
		n += len(e.json) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	if first {
		b = append(b, `"acceptsChanges":true,`...)
	}
	b = append(b, `"type":`...)
	b = strconv.AppendQuote(b, string(typ))
	if rev != 0 {
		b = append(b, `,"revision":`...)
		b = strconv.AppendInt(b, rev, 10)
	}
	if digest != "" {
		b = append(b, `,"digest":`...)
		b = strconv.AppendQuote(b, digest)
	}
	if len(items) > 0 {
		b = append(b, `,"items":[`...)
		for i, e := range items {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, e.json...)
		}
		b = append(b, ']')
	}
	if len(deleted) > 0 {
		data, _ := json.Marshal(deleted)
		b = append(append(b, `,"deleted":`...), data...)
	}
	return append(b, '}')
}
