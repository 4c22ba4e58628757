package bridgeserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/coder/websocket"
	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/credential"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

// conn is one node's bridge connection.
type conn struct {
	principal credential.Principal
	ws        *websocket.Conn
	wakeCh    chan struct{}  // capacity 1: wakes coalesce
	statusCh  chan heartbeat // capacity 1: the newest status wins
	lastRead  atomic.Int64   // unix nanoseconds of the last message read
	cancel    context.CancelFunc
	closeOnce sync.Once
}

// wake tells the connection its slice may have changed; it never blocks.
func (c *conn) wake() {
	select {
	case c.wakeCh <- struct{}{}:
	default:
	}
}

func (c *conn) close(code websocket.StatusCode, reason string) {
	c.closeOnce.Do(func() {
		c.cancel()
		// Close waits for the peer's close frame; never block the caller
		// (an informer handler) on a slow node.
		go c.ws.Close(code, reason)
	})
}

func (s *Server) watch(c echo.Context) error {
	ctx := c.Request().Context()
	p, err := credential.Authenticate(ctx, s.cfg.Store.Get, c.Request().Header.Get("Authorization"), s.cfg.Now())
	if err != nil {
		return writeStatus(c, err)
	}
	if !p.Role.IsNodeRole() {
		return writeStatus(c, api.NewStatusError(api.ReasonForbidden, "token %q is not a node credential; nodes enrol with an API key", p.Name))
	}
	if !s.synced() {
		return writeStatus(c, api.NewStatusError(api.ReasonUnavailable, "control is starting; retry"))
	}
	if _, _, ok := s.currentView(p); !ok && !s.awaitNode(ctx, p) {
		return writeStatus(c, api.NewStatusError(api.ReasonNotFound, "%s %q does not exist (deleted?); register again", p.Role.NodeKind(), p.Node))
	}
	var since int64
	if v := c.QueryParam("revision"); v != "" {
		since = parseRV(v)
	}
	digest := c.QueryParam("digest")
	ws, err := websocket.Accept(c.Response(), c.Request(), &websocket.AcceptOptions{})
	if err != nil {
		return nil // Accept has answered the client
	}
	ws.SetReadLimit(bridge.MaxMessageBytes)
	cctx, cancel := context.WithCancel(context.Background())
	cn := &conn{principal: p, ws: ws, wakeCh: make(chan struct{}, 1), statusCh: make(chan heartbeat, 1), cancel: cancel}
	s.mu.Lock()
	s.conns[cn] = struct{}{}
	s.mu.Unlock()
	s.log.Info("node connected", "kind", p.Role.NodeKind(), "name", p.Node, "resume", since)
	defer func() {
		s.mu.Lock()
		delete(s.conns, cn)
		others := false
		for o := range s.conns {
			others = others || (o.principal.Node == p.Node && o.principal.Role == p.Role)
		}
		s.mu.Unlock()
		cn.close(websocket.StatusNormalClosure, "")
		if !others {
			s.markDisconnected(p)
		}
		s.log.Info("node disconnected", "kind", p.Role.NodeKind(), "name", p.Node)
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(3)
	go func() {
		defer wg.Done()
		defer cn.close(websocket.StatusNormalClosure, "")
		s.readLoop(cctx, cn)
	}()
	go func() {
		defer wg.Done()
		s.statusLoop(cctx, cn)
	}()
	go func() {
		defer wg.Done()
		defer cn.close(websocket.StatusNormalClosure, "")
		s.pingLoop(cctx, cn)
	}()
	s.writeLoop(cctx, cn, digest)
	cn.close(websocket.StatusNormalClosure, "")
	return nil
}

// awaitNode waits, for at most nodeLag, until a node that the store
// holds is in the view: one that registered a moment ago may connect
// before the informers have seen it. It reports false at once for a node
// the store does not hold.
func (s *Server) awaitNode(ctx context.Context, p credential.Principal) bool {
	if _, err := s.cfg.Store.Get(ctx, p.Role.NodeKind(), p.Node); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, nodeLag)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		if _, ok := s.informers[p.Role.NodeKind()].Get(p.Node); ok {
			_, _, ok := s.currentView(p)
			return ok
		}
	}
}

// nodeLag is how long a connection waits for its node to reach the view.
const nodeLag = 5 * time.Second

func send(ctx context.Context, ws *websocket.Conn, m bridge.Message) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return sendRaw(ctx, ws, data)
}

func sendRaw(ctx context.Context, ws *websocket.Conn, data []byte) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return ws.Write(wctx, websocket.MessageText, data)
}

// writeLoop sends the first slice (or UpToDate when the node already has
// it), then a delta each time the node's slice changes.
func (s *Server) writeLoop(ctx context.Context, c *conn, digest string) {
	v, last, ok := s.currentView(c.principal)
	if !ok {
		send(ctx, c.ws, bridge.Message{Type: bridge.Error, Message: "node deleted"})
		return
	}
	var err error
	if d := v.digest(c.principal, last); digest != "" && digest == d {
		err = send(ctx, c.ws, bridge.Message{Type: bridge.UpToDate, Revision: v.rev, Digest: digest, AcceptsChanges: true})
	} else {
		err = sendRaw(ctx, c.ws, encodeMessage(bridge.Snapshot, v.rev, d, last.entries(), nil, true))
	}
	if err != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wakeCh:
		}
		next := s.view.Load()
		if next == v {
			continue
		}
		v = next
		ns, ok := v.sliceOf(c.principal)
		if !ok {
			send(ctx, c.ws, bridge.Message{Type: bridge.Error, Message: "node deleted"})
			return
		}
		up, del := v.diffSlices(last, ns)
		last = ns
		if len(up) == 0 && len(del) == 0 {
			continue
		}
		if err := sendRaw(ctx, c.ws, encodeMessage(bridge.Delta, v.rev, v.digest(c.principal, ns), up, del, false)); err != nil {
			return
		}
		// Changes that come in a burst (a fleet enrolling) reach a node
		// as one delta per interval, not one per view: a gateway of
		// thousands of peers spends its time serving, not applying.
		select {
		case <-ctx.Done():
			return
		case <-time.After(deltaSpacing):
		}
	}
}

// deltaSpacing is the least time between two deltas to one node. A
// change after a quiet spell goes out at once.
const deltaSpacing = 250 * time.Millisecond

func (s *Server) pingLoop(ctx context.Context, c *conn) {
	t := time.NewTicker(s.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, s.cfg.PingInterval)
		err := c.ws.Ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) &&
			time.Since(time.Unix(0, c.lastRead.Load())) < 2*s.cfg.PingInterval {
			// The pong waits behind messages the node has yet to read,
			// but it has sent something within two intervals (a
			// heartbeat): busy, not gone. Cutting it off would only
			// bring it back with a snapshot to catch up on.
			continue
		}
		if err != nil {
			s.log.Info("node stopped answering pings", "name", c.principal.Node, "err", err)
			return
		}
	}
}

// readLoop takes heartbeats until the connection ends. It never waits
// for the store: a status or lease to record goes to statusLoop, replacing
// one not yet written, so that a slow store delays no pong (and no node is
// taken for dead while Control is busy).
//
// A heartbeat is written into the node's status when it reports
// something new; when it differs only in the times of the peers'
// handshakes the status shows, at most once per StatusRefresh; otherwise
// it only renews the node's lease, once per LeaseInterval.
//
// A heartbeat brings the node's whole status or what changed in it since
// the one before (bridge.StatusChanges); the connection keeps the whole,
// with its names interned: ten thousand agents list the same thousand
// gateways.
func (s *Server) readLoop(ctx context.Context, c *conn) {
	gate := heartbeatGate{leaseInterval: s.cfg.LeaseInterval, statusRefresh: s.cfg.StatusRefresh}
	var report *bridge.NodeStatus // the node's status as of its last heartbeat
	for {
		typ, data, err := c.ws.Read(ctx)
		if err != nil {
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		if typ != websocket.MessageText {
			continue
		}
		var m bridge.Message
		if err := json.Unmarshal(data, &m); err != nil {
			s.log.Warn("bad message from node", "name", c.principal.Node, "err", err)
			return
		}
		if m.Type != bridge.Heartbeat {
			continue
		}
		var changes *bridge.StatusChanges
		prev := report
		switch {
		case m.Status != nil:
			st := m.Status.Sorted()
			internStatus(st.Peers, st.Probes, st.Routes)
			report = &st
		case m.Changes != nil && report != nil:
			changes = m.Changes
			internStatus(changes.Peers, changes.Probes, changes.Routes)
			next := report.Apply(*changes)
			report = &next
		case m.Changes != nil:
			s.log.Warn("bad message from node", "name", c.principal.Node, "err", "status changes before a whole status")
			return
		default:
			continue
		}
		if n := max(len(report.Peers), len(report.Probes), len(report.Targets), len(report.Routes)); n > maxReported {
			s.log.Warn("bad message from node", "name", c.principal.Node, "err", fmt.Sprintf("a status of %d entries in one list; at most %d", n, maxReported))
			return
		}
		now := s.cfg.Now()
		var hb heartbeat
		var ok bool
		if changes != nil {
			hb, ok = gate.admitChanges(prev, changes, report, now)
		} else {
			hb, ok = gate.admit(report, now)
		}
		if !ok {
			continue
		}
		select {
		case c.statusCh <- hb:
		default:
			// The one queued is not written yet: this one replaces it,
			// and writes the status if that one was to.
			select {
			case prev := <-c.statusCh:
				hb.leaseOnly = hb.leaseOnly && prev.leaseOnly
			default:
			}
			c.statusCh <- hb
		}
	}
}

// maxReported bounds each list of a node's status as the connection
// keeps it: changes add up over many messages, and what one node reports
// must not take Control's memory.
const maxReported = 1 << 17

// internStatus replaces the names in a heartbeat's lists by their
// interned copies, which the connection keeps for as long as it lasts.
func internStatus(peers []bridge.PeerStatus, probes []bridge.ProbeStatus, routes []string) {
	for i := range peers {
		peers[i].Name, peers[i].Endpoint = intern(peers[i].Name), intern(peers[i].Endpoint)
	}
	for i := range probes {
		probes[i].Agent = intern(probes[i].Agent)
	}
	for i, r := range routes {
		routes[i] = intern(r)
	}
}

func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// heartbeatGate decides what each heartbeat of one connection writes: the
// node's status when it reports something new (or, once per
// statusRefresh, newer handshake times its status shows), else its lease
// once per leaseInterval, else nothing.
//
// A heartbeat of changes says itself what is new, so the gate keeps no
// copy of what it last wrote for it: at ten thousand agents of a thousand
// gateways, that copy was gigabytes.
type heartbeatGate struct {
	leaseInterval, statusRefresh time.Duration

	last             *bridge.NodeStatus // the whole report last written to the status
	statusAt, beatAt time.Time
	// timesPending: heartbeats of changes brought handshake times (all
	// they changed) that are not written yet.
	timesPending bool
}

// admitChanges returns what to record of a heartbeat of changes ch,
// received at now, that made next of prev; false for nothing.
func (g *heartbeatGate) admitChanges(prev *bridge.NodeStatus, ch *bridge.StatusChanges, next *bridge.NodeStatus, now time.Time) (heartbeat, bool) {
	g.last = nil // the whole status was written when it came
	news, times := newsIn(prev, ch)
	g.timesPending = g.timesPending || times
	writeStatus := news || (g.timesPending && now.Sub(g.statusAt) >= g.statusRefresh)
	if !writeStatus && now.Sub(g.beatAt) < g.leaseInterval {
		return heartbeat{}, false
	}
	if writeStatus {
		g.statusAt, g.timesPending = now, false
	}
	g.beatAt = now
	return heartbeat{status: *next, at: now, leaseOnly: !writeStatus}, true
}

// newsIn reports whether changes ch to prev bring anything a status
// shows but handshake times, and whether they bring handshake times.
func newsIn(prev *bridge.NodeStatus, ch *bridge.StatusChanges) (news, times bool) {
	if ch.Version != prev.Version || ch.DataPath != prev.DataPath || ch.Revision != prev.Revision ||
		len(ch.PeersGone) > 0 || len(ch.Targets) > 0 || len(ch.TargetsGone) > 0 || len(ch.Routes) > 0 ||
		len(ch.RoutesGone) > 0 || len(ch.Probes) > 0 || len(ch.ProbesGone) > 0 {
		return true, false
	}
	for _, p := range ch.Peers {
		i, found := slices.BinarySearchFunc(prev.Peers, p.Name, func(q bridge.PeerStatus, name string) int { return strings.Compare(q.Name, name) })
		if !found {
			return true, false
		}
		q := prev.Peers[i]
		if q.Endpoint != p.Endpoint || q.Connected != p.Connected || q.LastHandshake.IsZero() != p.LastHandshake.IsZero() {
			return true, false
		}
		if !q.LastHandshake.Truncate(time.Second).Equal(p.LastHandshake.Truncate(time.Second)) {
			times = true
		}
	}
	return false, times
}

// admit returns what to record of a heartbeat st received at now, and
// false for nothing.
func (g *heartbeatGate) admit(st *bridge.NodeStatus, now time.Time) (heartbeat, bool) {
	writeStatus := g.last == nil || !sameReport(g.last, st) || !sameConnected(g.last, g.statusAt, st, now) ||
		(now.Sub(g.statusAt) >= g.statusRefresh && !sameHandshakesShown(g.last, st))
	if !writeStatus && now.Sub(g.beatAt) < g.leaseInterval {
		return heartbeat{}, false
	}
	cp := *st
	if writeStatus {
		g.last, g.statusAt = &cp, now
	}
	g.beatAt = now
	return heartbeat{status: cp, at: now, leaseOnly: !writeStatus}, true
}

// sameReport reports whether two heartbeats say the same of a node but for
// what changes on every one: when each peer last handshook (not whether
// it ever did), its byte counters, and when each probe and target check
// ran and how long a probe took. A heartbeat that differs only in those
// renews the node's lease and leaves its status alone: a gateway's lists
// every agent, and writing all of it every few seconds for its timestamps
// was most of what an idle fleet wrote into the store.
func sameReport(a, b *bridge.NodeStatus) bool {
	return a.Version == b.Version && a.DataPath == b.DataPath && a.Revision == b.Revision && a.ReportedForm == b.ReportedForm &&
		slices.Equal(a.Routes, b.Routes) &&
		slices.EqualFunc(a.Peers, b.Peers, func(x, y bridge.PeerStatus) bool {
			return x.Name == y.Name && x.Endpoint == y.Endpoint && x.Connected == y.Connected &&
				x.LastHandshake.IsZero() == y.LastHandshake.IsZero()
		}) &&
		slices.EqualFunc(a.Targets, b.Targets, func(x, y bridge.TargetStatus) bool {
			return x.Tunnel == y.Tunnel && x.Reachable == y.Reachable && x.Message == y.Message
		}) &&
		slices.EqualFunc(a.Probes, b.Probes, func(x, y bridge.ProbeStatus) bool {
			return x.Agent == y.Agent && x.OK == y.OK && x.Message == y.Message
		})
}

// connected reports whether p's session was current at now
// (api.SessionFresh): as the node said, in a status in reported form, or
// else as its handshake time shows.
func connected(p bridge.PeerStatus, reported bool, now time.Time) bool {
	if reported {
		return p.Connected
	}
	return bridge.Fresh(p.LastHandshake, now)
}

// sameConnected reports whether heartbeat a, written at aAt, and b,
// received at bAt, which sameReport finds the same, show each peer as
// connected or not alike: a session running out is news, though nothing
// in the heartbeat changed but the time.
func sameConnected(a *bridge.NodeStatus, aAt time.Time, b *bridge.NodeStatus, bAt time.Time) bool {
	return a.ReportedForm == b.ReportedForm && slices.EqualFunc(a.Peers, b.Peers, func(x, y bridge.PeerStatus) bool {
		return connected(x, a.ReportedForm, aAt) == connected(y, b.ReportedForm, bAt)
	})
}

// sameHandshakesShown reports whether the statuses written from two
// heartbeats that sameReport finds the same would show the same handshake
// times: the only volatile part a status keeps, and only in a list short
// enough to be shown with them (peerStatuses).
func sameHandshakesShown(a, b *bridge.NodeStatus) bool {
	if len(b.Peers) > api.TimedPeers {
		return true
	}
	return slices.EqualFunc(a.Peers, b.Peers, func(x, y bridge.PeerStatus) bool {
		return x.LastHandshake.Truncate(time.Second).Equal(y.LastHandshake.Truncate(time.Second))
	})
}

// heartbeat is a node status to record and when it arrived.
type heartbeat struct {
	status bridge.NodeStatus
	at     time.Time
	// leaseOnly: the status says nothing new; renew the lease only.
	leaseOnly bool
}

// statusLoop records the heartbeats readLoop queues: statuses at most
// statusWriters at a time across all connections, lease renewals through
// leaseLoop.
func (s *Server) statusLoop(ctx context.Context, c *conn) {
	for {
		var hb heartbeat
		select {
		case <-ctx.Done():
			return
		case hb = <-c.statusCh:
		}
		if hb.leaseOnly {
			s.leases.renew(c.principal.Role.NodeKind(), c.principal.Node, hb.at)
			continue
		}
		select {
		case <-ctx.Done():
			return
		case s.writers <- struct{}{}:
		}
		err := s.recordStatus(ctx, c.principal, hb.status, hb.at)
		<-s.writers
		if err != nil && !errors.Is(err, context.Canceled) {
			s.log.Warn("record node status", "name", c.principal.Node, "err", err)
		}
	}
}

// failureChars is how much of a probe failure's message a status shows
// for a peer in a list too long to show endpoints (bridge.EndpointPeers):
// a gateway lists every agent, and its status is one object in the
// store, which takes at most api.MaxObjectBytes. In full, some 9,000
// agents filled it; the heartbeat was then not recorded and the gateway
// looked offline. Listed briefly, an agent takes about 40 bytes, 80 with
// a failure. Handshake times are listed up to api.TimedPeers.
const failureChars = 32

// peerStatuses returns the list of peers a status shows for a heartbeat's
// peers and, for a gateway, its probes (nil for an agent), and beyond
// api.ListedPeers their counts with every peer in trouble listed, and
// only those: a peer not listed must be fine, however many are not.
func peerStatuses(ps []bridge.PeerStatus, probes []bridge.ProbeStatus, gateway, reported bool, now time.Time) ([]api.NodePeerStatus, *api.PeerCounts) {
	if len(ps) == 0 {
		return nil, nil
	}
	brief, timed := len(ps) > bridge.EndpointPeers, len(ps) <= api.TimedPeers
	var counts *api.PeerCounts
	if len(ps) > api.ListedPeers {
		counts = &api.PeerCounts{Total: len(ps)}
	}
	probeOf := probeFinder(ps, probes)
	size := len(ps)
	if counts != nil {
		size = 0
	}
	out := make([]api.NodePeerStatus, 0, size)
	for _, p := range ps {
		n := api.NodePeerStatus{Name: p.Name, Connected: connected(p, reported, now)}
		if pr, ok := probeOf(p.Name); ok {
			n.Probe = probeText(pr, brief)
		}
		if counts != nil {
			answered := n.Probe == api.ProbeOK
			if n.Connected {
				counts.Connected++
			}
			if answered {
				counts.Answered++
			}
			if n.Connected && (answered || !gateway) {
				continue // not in trouble
			}
		}
		if !brief {
			n.Endpoint = p.Endpoint
		}
		if timed {
			if !p.LastHandshake.IsZero() {
				t := p.LastHandshake.UTC().Truncate(time.Second)
				n.LastHandshake = &t
			}
		}
		out = append(out, n)
	}
	if counts != nil {
		// The list is read by name (a peer not in it is not in trouble);
		// a node of this build sends its peers sorted, an older one may
		// not, and sorting a sorted list is a pass over it.
		slices.SortFunc(out, func(a, b api.NodePeerStatus) int { return strings.Compare(a.Name, b.Name) })
		if len(out) == 0 {
			out = nil
		}
	}
	return out, counts
}

// probeText is a probe as a status shows it: api.ProbeOK, or "failed: "
// and why, cut to failureChars in a brief list.
func probeText(p bridge.ProbeStatus, brief bool) string {
	if p.OK {
		return api.ProbeOK
	}
	msg := p.Message
	if brief && len(msg) > failureChars {
		msg = strings.ToValidUTF8(msg[:failureChars], "") + "…"
	}
	return "failed: " + msg
}

// probeFinder returns a function that finds the probe of each peer of ps,
// asked in ps's order. A node of this build reports both lists sorted by
// name, and they are walked side by side; an older one's are looked up in
// a map (the last probe of a name wins). A gateway of 10,000 agents built
// that map at every status write.
func probeFinder(ps []bridge.PeerStatus, probes []bridge.ProbeStatus) func(name string) (bridge.ProbeStatus, bool) {
	if slices.IsSortedFunc(ps, func(a, b bridge.PeerStatus) int { return strings.Compare(a.Name, b.Name) }) &&
		slices.IsSortedFunc(probes, func(a, b bridge.ProbeStatus) int { return strings.Compare(a.Agent, b.Agent) }) {
		j := 0
		return func(name string) (bridge.ProbeStatus, bool) {
			for j < len(probes) && probes[j].Agent < name {
				j++
			}
			// The last of equal names, as the map keeps.
			for j+1 < len(probes) && probes[j+1].Agent == name {
				j++
			}
			if j < len(probes) && probes[j].Agent == name {
				return probes[j], true
			}
			return bridge.ProbeStatus{}, false
		}
	}
	byAgent := make(map[string]int, len(probes))
	for i, p := range probes {
		byAgent[p.Agent] = i
	}
	return func(name string) (bridge.ProbeStatus, bool) {
		i, ok := byAgent[name]
		if !ok {
			return bridge.ProbeStatus{}, false
		}
		return probes[i], true
	}
}

// recordStatus writes a heartbeat into the node's status.
func (s *Server) recordStatus(ctx context.Context, p credential.Principal, hb bridge.NodeStatus, now time.Time) error {
	kind := p.Role.NodeKind()
	for attempt := 0; attempt < 5; attempt++ {
		// The first try starts from the cached node (the write checks its
		// resourceVersion); a conflict reads the store.
		obj, ok := s.informers[kind].Get(p.Node)
		if !ok || attempt > 0 {
			var err error
			if obj, err = s.cfg.Store.Get(ctx, kind, p.Node); err != nil {
				return err
			}
		}
		obj = statusCopy(obj)
		ts := now.UTC().Truncate(time.Second)
		switch n := obj.(type) {
		case *api.Agent:
			n.Status.Version, n.Status.Revision, n.Status.LastHeartbeat = hb.Version, hb.Revision, &ts
			n.Status.DataPath = hb.DataPath
			n.Status.Gateways, n.Status.Peers = peerStatuses(hb.Peers, nil, false, hb.ReportedForm, now)
			n.Status.Targets = nil
			for _, t := range hb.Targets {
				n.Status.Targets = append(n.Status.Targets, api.TargetStatus{Tunnel: t.Tunnel, Reachable: t.Reachable, Message: t.Message})
			}
		case *api.Gateway:
			n.Status.Version, n.Status.Revision, n.Status.LastHeartbeat = hb.Version, hb.Revision, &ts
			n.Status.DataPath = hb.DataPath
			n.Status.Agents, n.Status.Peers = peerStatuses(hb.Peers, hb.Probes, true, hb.ReportedForm, now)
			n.Status.Routes = len(hb.Routes)
		}
		conds := &obj.GetStatus().Conditions
		api.SetCondition(conds, api.Condition{Type: api.NodeConnected, Status: api.ConditionTrue,
			Reason: api.ReasonHeartbeat, Message: "connected to control; heartbeats arrive",
			ObservedGeneration: obj.GetMeta().Generation}, now)
		_, err := s.cfg.Store.UpdateStatus(ctx, obj, store.WriteOptions{})
		if !errors.Is(err, api.ErrConflict) {
			return err
		}
	}
	return api.ErrConflict
}

// statusCopy returns a copy of a node whose status recordStatus may
// change: the object and its conditions are copied, and the rest is
// shared with the informer's cache, which nothing here changes. Every
// heartbeat makes one; a deep copy cost a JSON round trip of the whole
// node.
func statusCopy(obj api.Object) api.Object {
	switch n := obj.(type) {
	case *api.Agent:
		c := *n
		c.Status.Conditions = slices.Clone(n.Status.Conditions)
		return &c
	case *api.Gateway:
		c := *n
		c.Status.Conditions = slices.Clone(n.Status.Conditions)
		return &c
	}
	return api.Clone(obj)
}

// markDisconnected records that the node's last connection ended.
func (s *Server) markDisconnected(p credential.Principal) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for attempt := 0; attempt < 5; attempt++ {
		obj, err := s.cfg.Store.Get(ctx, p.Role.NodeKind(), p.Node)
		if err != nil {
			return
		}
		obj = api.Clone(obj)
		if !api.SetCondition(&obj.GetStatus().Conditions, api.Condition{Type: api.NodeConnected, Status: api.ConditionFalse,
			Reason: "Disconnected", Message: "the node's connection to control ended",
			ObservedGeneration: obj.GetMeta().Generation}, s.cfg.Now()) {
			return
		}
		if _, err := s.cfg.Store.UpdateStatus(ctx, obj, store.WriteOptions{}); !errors.Is(err, api.ErrConflict) {
			return
		}
	}
}
