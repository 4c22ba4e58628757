package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
)

// NodeLivenessReconciler writes the Connected, DataPathReady and Ready
// conditions of Agents and Gateways, and their status.observedGeneration.
//
// Connected enforces the heartbeat lease over what the bridge wrote (see
// connectedCondition); the reconcile asks to run again when the lease
// runs out, so a silent node turns False within the lease even when
// nothing else changes.
//
// DataPathReady is "online" as a user means it (quality.md 7): traffic
// through WireGuard reaches the node. Gateways probe every agent through
// the tunnel and report each result in status.agents[].probe on every
// heartbeat, so the reports of a connected gateway are at most a
// heartbeat old; those of a gateway that is not connected are not
// trusted.
//   - An agent is True (ProbeSucceeded) when a connected gateway's probe
//     of it answered, False (ProbeFailed) when connected gateways report
//     only failures, Unknown when no enabled gateway is connected
//     (NoGatewayConnected) or none has probed it yet (ProbePending).
//   - A gateway with no connected agent (with an address) to probe is
//     True (NoAgents): nothing stands in its way. Otherwise it is True
//     when it is connected and a probe to a connected agent answered,
//     False when its probes to every connected agent failed, Unknown when
//     it is not connected (NotConnected) or has not probed yet.
//
// Ready is AddressAssigned && Connected && DataPathReady, the reason of
// the first that fails otherwise; a disabled node is Ready=False
// (Disabled).
type NodeLivenessReconciler struct {
	// Store receives the status writes. Required.
	Store Store
	// Agents and Gateways are synced informers of the two node kinds.
	// Required.
	Agents, Gateways *reconcile.Informer
	// Leases is a synced informer of the nodes' leases (api.NodeLease);
	// nil judges nodes by the lastHeartbeat of their statuses alone.
	Leases *reconcile.Informer
	// Lease is how long after its last heartbeat a node counts as
	// connected; zero means DefaultNodeLease.
	Lease time.Duration
	// Now is the clock leases are measured and transitions stamped with;
	// nil means time.Now.
	Now func() time.Time
	// Logger receives the reconciler's logs; nil discards them.
	Logger *slog.Logger

	agentsFanout, gatewaysFanout fanout
	probes                       probeIndex
	// The connected agents (with an address) and gateways, for judging
	// nodes of the other kind.
	connectedAgents, connectedGateways connectedSet
	// The last data-path judgement of each node, by what it was judged
	// from.
	agentVerdicts, gatewayVerdicts verdictCache
}

// verdictCache keeps each node's last data-path condition with the
// versions of what it was judged from. A judgement reads every node of
// the other kind: at 10,000 agents and 1,000 gateways an idle fleet's
// lease renewals asked for ten million probe lookups every lease, most
// of Control's idle CPU, for verdicts that had not changed.
type verdictCache struct {
	mu sync.Mutex
	m  map[string]verdict
}

// verdictKey is what a node's data-path condition is a function of: the
// version of the connected nodes of the other kind, the version of the
// probe reports read, for an agent its own object (whose status says
// which gateways it has sessions with), and for a gateway whether it is
// connected itself.
type verdictKey struct {
	peers, probes uint64
	self          api.Object
	connected     bool
}

type verdict struct {
	key  verdictKey
	cond api.Condition
}

func (c *verdictCache) get(name string, key verdictKey) (api.Condition, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[name]
	if !ok || v.key != key {
		return api.Condition{}, false
	}
	return v.cond, true
}

func (c *verdictCache) put(name string, key verdictKey, cond api.Condition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]verdict{}
	}
	c.m[name] = verdict{key: key, cond: cond}
}

func (c *verdictCache) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, name)
}

// connectedSet is the names of the connected nodes of one kind, kept
// between judgements: every gateway's judgement reads every agent, and a
// fleet coming online asks for all of them twice a second. It is built
// again when a node of the kind comes, goes, connects, disconnects, is
// enabled or disabled or gets an address (the kind's informer handler
// says so), and when the first lease among its nodes may have run out.
type connectedSet struct {
	gen atomic.Uint64 // bumped on every such change

	mu         sync.Mutex
	built      bool
	builtGen   uint64
	validUntil time.Time
	names      []string
	ver        uint64 // bumped when a build gives other names
}

// changed notes a change to a node's link state.
func (s *connectedSet) changed() { s.gen.Add(1) }

// get returns the names of inf's nodes that are connected at now (and,
// with needAddress, have an overlay address), and a version that changes
// whenever they do. The slice is shared: read only.
func (s *connectedSet) get(inf *reconcile.Informer, beats nodeBeats, now time.Time, lease time.Duration, needAddress bool) ([]string, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gen := s.gen.Load()
	if s.built && s.builtGen == gen && now.Before(s.validUntil) {
		return s.names, s.ver
	}
	var names []string
	until := now.Add(lease)
	for _, obj := range inf.ListUnsorted() {
		beat := beats.of(obj)
		if !isConnected(obj, beat, now, lease) {
			continue
		}
		if _, ok := nodeAddress(obj); needAddress && !ok {
			continue
		}
		names = append(names, obj.GetMeta().Name)
		until = minTime(until, beat.Add(lease))
	}
	// The informer lists in no set order; a fleet whose leases are
	// renewed rebuilds the set every few heartbeats with the same names.
	slices.Sort(names)
	if !s.built || !slices.Equal(names, s.names) {
		s.names, s.ver = names, s.ver+1
	}
	s.built, s.builtGen, s.validUntil = true, gen, until
	return s.names, s.ver
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// probeIndex holds each gateway's probe reports by agent name, for the
// object (the informer's, which is never modified) it was built from. Judging one agent reads one
// report of every gateway; looking it up in each gateway's list made that
// O(gateways × agents), and a fleet's heartbeats judge every agent
// every few seconds.
//
// Its version changes whenever any gateway's reports do: a judgement made
// from reports read after it read a version holds while that version
// does. Each gateway's reports carry the version they changed at.
type probeIndex struct {
	ver       atomic.Uint64
	mu        sync.Mutex
	byGateway map[string]gatewayProbes
}

type gatewayProbes struct {
	from   *api.Gateway
	probes map[string]string // the reports listed, by agent name
	// summed: the gateway has more than api.ListedPeers agents, and its
	// list names only those in trouble; answered counts those whose
	// probe answered.
	summed   bool
	answered int
	ver      uint64 // the index's version when these reports changed
}

// report returns the gateway's report of an agent: ProbeOK, a failure, or
// "" for none yet. A gateway that sums its agents up does not list those
// that answered; unlistedOK says whether an agent it leaves out is taken
// as one of them, which the caller tells:
//   - judging the agent: the gateway has it as a peer at all, which the
//     agent's own status shows (it lists the gateway as connected, or sums
//     its gateways up and does not list it); a session needs both ends to
//     have each other as peers;
//   - judging the gateway: the left-out agent answered, or is no peer of
//     the gateway, and the count of those that answered tells whether any
//     did (p.answered > 0).
func (p gatewayProbes) report(agent string, unlistedOK bool) string {
	if v, listed := p.probes[agent]; listed {
		return v
	}
	if p.summed && unlistedOK {
		return ProbeOK
	}
	return ""
}

func (p gatewayProbes) same(q gatewayProbes) bool {
	return p.summed == q.summed && p.answered == q.answered && maps.Equal(p.probes, q.probes)
}

// of returns gw's probe reports by agent name.
func (x *probeIndex) of(gw *api.Gateway) map[string]string { return x.get(gw).probes }

// get returns gw's probe reports and the version they changed at, which
// it moves the index's to if they changed. A new object with the same
// reports keeps them and their version.
func (x *probeIndex) get(gw *api.Gateway) gatewayProbes {
	x.mu.Lock()
	defer x.mu.Unlock()
	p, ok := x.byGateway[gw.Metadata.Name]
	if ok && p.from == gw {
		return p
	}
	next := probesOfGateway(gw)
	if ok && next.same(p) {
		p.from = gw
	} else {
		p, p.ver = next, x.ver.Add(1)
	}
	if x.byGateway == nil {
		x.byGateway = map[string]gatewayProbes{}
	}
	x.byGateway[gw.Metadata.Name] = p
	return p
}

// forget drops a deleted gateway's reports.
func (x *probeIndex) forget(name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.byGateway[name]; ok {
		delete(x.byGateway, name)
		x.ver.Add(1)
	}
}

// Reconcile brings one node's liveness conditions up to date, writing the
// status only when it changed, and asks to be called again when the
// node's lease runs out.
func (r *NodeLivenessReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var inf *reconcile.Informer
	switch req.Key.Kind {
	case "Agent":
		inf = r.Agents
	case "Gateway":
		inf = r.Gateways
	default:
		return reconcile.Result{}, reconcile.Terminal(fmt.Errorf("judge liveness of %s: not a node kind", req))
	}
	cached, ok := inf.Get(req.Key.Name)
	if !ok {
		return reconcile.Result{}, nil
	}
	now := r.now()
	lease := r.lease()
	// Judged on the informer's object, which is only read; cloned only
	// when there is something to write (most heartbeats change nothing).
	enabled, _, _, ok := nodeParts(cached)
	if !ok {
		return reconcile.Result{}, reconcile.Terminal(fmt.Errorf("judge liveness of %s: the cache holds a %T", req, cached))
	}
	gen := cached.GetMeta().Generation
	changed := cached.GetStatus().ObservedGeneration != gen
	conds := slices.Clone(cached.GetStatus().Conditions)

	conn, expiresIn := connectedCondition(r.beats().of(cached), conds, now, lease)
	if cur := api.FindCondition(conds, api.NodeConnected); cur == nil || *cur != conn {
		// Ours rather than the bridge's kept as it was: say which spec
		// it saw. The bridge's is left alone, so the two never fight.
		conn.ObservedGeneration = gen
	}
	if api.SetCondition(&conds, conn, now) {
		changed = true
	}
	var dp api.Condition
	if g, isGateway := cached.(*api.Gateway); isGateway {
		dp = r.gatewayDataPath(g, conn.Status == api.ConditionTrue && enabled, now, lease)
	} else {
		dp = r.agentDataPath(req.Key.Name, now, lease)
	}
	dp.ObservedGeneration = gen
	if api.SetCondition(&conds, dp, now) {
		changed = true
	}
	ready := nodeReadyCondition(req.Key.Kind, enabled, conds, gen)
	if api.SetCondition(&conds, ready, now) {
		changed = true
	}
	res := reconcile.Result{RequeueAfter: expiresIn}
	if !changed {
		return res, nil
	}
	next := api.Clone(cached)
	st := next.GetStatus()
	st.ObservedGeneration, st.Conditions = gen, conds
	if _, err := r.Store.UpdateStatus(ctx, next); err != nil {
		if errors.Is(err, api.ErrNotFound) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("judge liveness of %s: %w", req, err)
	}
	if r.Logger != nil {
		r.Logger.Debug("node status written", "node", req.String(), "connected", conn.Status,
			"dataPath", dp.Status, "ready", ready.Status, "reason", ready.Reason)
	}
	return res, nil
}

// agentDataPath judges an agent's data path from the probe reports of the
// connected gateways. Every heartbeat of the agent asks for it, and it
// reads every connected gateway: it allocates for what a message shows,
// not per gateway.
//
// The verdict is kept until the connected gateways or any gateway's
// reports change: an idle fleet's renewals judge every agent each lease.
func (r *NodeLivenessReconciler) agentDataPath(agent string, now time.Time, lease time.Duration) api.Condition {
	// The versions are read before what they stand for.
	probesVer := r.probes.ver.Load()
	gateways, gatewaysVer := r.connectedGateways.get(r.Gateways, r.beats(), now, lease, false)
	self, _ := r.Agents.Get(agent) // its own status says which gateways it has sessions with
	key := verdictKey{peers: gatewaysVer, probes: probesVer, self: self}
	if c, ok := r.agentVerdicts.get(agent, key); ok {
		return c
	}
	c := r.judgeAgentDataPath(agent, gatewaysSeen(self), gateways)
	r.agentVerdicts.put(agent, key, c)
	return c
}

func (r *NodeLivenessReconciler) judgeAgentDataPath(agent string, seen func(string) bool, gateways []string) api.Condition {
	c := api.Condition{Type: api.NodeDataPath}
	connected := 0
	answered, pending := firstNames{n: nameListMax}, firstNames{n: nameListMax}
	failures := firstNames{n: failureListMax}
	for _, name := range gateways {
		obj, ok := r.Gateways.Get(name)
		if !ok {
			continue
		}
		gw := obj.(*api.Gateway)
		connected++
		p := r.probes.get(gw)
		probe := p.report(agent, p.summed && seen(p.from.Metadata.Name))
		switch ok, failed := probeVerdict(probe); {
		case ok:
			answered.add(gw.Metadata.Name)
		case failed:
			failures.addFailure(gw.Metadata.Name, probe)
		default:
			pending.add(gw.Metadata.Name)
		}
	}
	switch {
	case answered.count > 0:
		c.Status, c.Reason = api.ConditionTrue, api.ReasonProbeSucceeded
		c.Message = fmt.Sprintf("probes from gateways %s reach the agent through WireGuard", answered.nameList())
	case failures.count > 0:
		c.Status, c.Reason = api.ConditionFalse, api.ReasonProbeFailed
		c.Message = fmt.Sprintf("no connected gateway reaches the agent through WireGuard (%s)", failures.failureList())
	case connected == 0:
		c.Status, c.Reason = api.ConditionUnknown, ReasonNoGatewayConnected
		c.Message = "no enabled gateway is connected to probe the agent"
	default:
		c.Status, c.Reason = api.ConditionUnknown, ReasonProbePending
		c.Message = fmt.Sprintf("waiting for gateways %s to probe the agent", pending.nameList())
	}
	return c
}

// gatewayDataPath judges a gateway's data path from its own probe
// reports of the connected agents. It reads every connected agent, and
// allocates only for what a message shows.
// The verdict is kept until the connected agents or the gateway's
// reports change.
func (r *NodeLivenessReconciler) gatewayDataPath(gw *api.Gateway, gwConnected bool, now time.Time, lease time.Duration) api.Condition {
	// Agents without an address are left out: no gateway has them as a
	// peer yet.
	// Keyed by the version its reports came with, from the same read: a
	// new object's reports take a new one on their first read, which may
	// be this one.
	probes := r.probes.get(gw)
	agents, agentsVer := r.connectedAgents.get(r.Agents, r.beats(), now, lease, true)
	key := verdictKey{peers: agentsVer, probes: probes.ver, connected: gwConnected}
	if c, ok := r.gatewayVerdicts.get(gw.Metadata.Name, key); ok {
		return c
	}
	c := judgeGatewayDataPath(probes, agents, gwConnected)
	r.gatewayVerdicts.put(gw.Metadata.Name, key, c)
	return c
}

func judgeGatewayDataPath(probes gatewayProbes, agents []string, gwConnected bool) api.Condition {
	c := api.Condition{Type: api.NodeDataPath}
	targets, answered := 0, 0
	pending, failures := firstNames{n: nameListMax}, firstNames{n: failureListMax}
	for _, name := range agents {
		targets++
		probe := probes.report(name, probes.answered > 0)
		switch ok, failed := probeVerdict(probe); {
		case ok:
			answered++
		case failed:
			failures.addFailure(name, probe)
		default:
			pending.add(name)
		}
	}
	switch {
	case targets == 0:
		c.Status, c.Reason = api.ConditionTrue, ReasonNoAgents
		c.Message = "no connected agent to probe"
	case !gwConnected:
		c.Status, c.Reason = api.ConditionUnknown, ReasonNotConnected
		c.Message = "the gateway is not connected, so its probe reports are not current"
	case answered > 0:
		c.Status, c.Reason = api.ConditionTrue, api.ReasonProbeSucceeded
		c.Message = "probes through WireGuard reach connected agents"
	case failures.count > 0:
		c.Status, c.Reason = api.ConditionFalse, api.ReasonProbeFailed
		c.Message = fmt.Sprintf("probes through WireGuard reach no connected agent (%s)", failures.failureList())
	default:
		c.Status, c.Reason = api.ConditionUnknown, ReasonProbePending
		c.Message = fmt.Sprintf("waiting for the gateway to probe agents %s", pending.nameList())
	}
	return c
}

// onGatewayChange returns an informer handler that enqueues the agents
// whose data path a change to a gateway can move: all of them when the
// gateway comes, goes, connects, disconnects or is enabled or disabled;
// otherwise those whose probe report changed. Heartbeats that change
// nothing else enqueue nothing.
func (r *NodeLivenessReconciler) onGatewayChange(enqueue func(reconcile.Request)) func(reconcile.Change) {
	return func(ch reconcile.Change) {
		if ch.New == nil && ch.Old != nil {
			r.probes.forget(ch.Old.GetMeta().Name)
			r.gatewayVerdicts.forget(ch.Old.GetMeta().Name)
		}
		if ch.Resync {
			return
		}
		// The new object's reports go into the index the judgements read,
		// moving its version if they changed.
		var after map[string]string
		if gw, ok := ch.New.(*api.Gateway); ok {
			after = r.probes.of(gw)
		}
		if linkOf(ch.Old) != linkOf(ch.New) {
			r.connectedGateways.changed()
			r.agentsFanout.do(fanoutInterval, func() {
				for _, a := range r.Agents.ListUnsorted() {
					enqueue(reconcile.RequestFor(a))
				}
			})
			return
		}
		before := probesOf(ch.Old)
		for name, p := range after {
			if q, ok := before[name]; !ok || q != p {
				enqueue(reconcile.Request{Key: api.Key{Kind: "Agent", Name: name}})
			}
		}
		for name := range before {
			if _, ok := after[name]; !ok {
				enqueue(reconcile.Request{Key: api.Key{Kind: "Agent", Name: name}})
			}
		}
	}
}

// onAgentChange returns an informer handler that enqueues every gateway
// when an agent comes, goes, connects, disconnects, is enabled or
// disabled or gets an address: the set of agents each gateway must reach
// changed.
func (r *NodeLivenessReconciler) onAgentChange(enqueue func(reconcile.Request)) func(reconcile.Change) {
	return func(ch reconcile.Change) {
		if ch.New == nil && ch.Old != nil {
			r.agentVerdicts.forget(ch.Old.GetMeta().Name)
		}
		if ch.Resync || linkOf(ch.Old) == linkOf(ch.New) {
			return
		}
		r.connectedAgents.changed()
		r.gatewaysFanout.do(fanoutInterval, func() {
			for _, g := range r.Gateways.ListUnsorted() {
				enqueue(reconcile.RequestFor(g))
			}
		})
	}
}

// fanoutInterval is the least time between two enqueues of every node of
// a kind: each of them reconciles over every node of the other kind, so a
// fleet coming online one node at a time would otherwise cost
// O(agents × gateways) per node.
const fanoutInterval = 500 * time.Millisecond

// fanout runs an enqueue of a whole kind at once if none ran within the
// interval, else once when the interval has passed: a burst of changes
// costs two, and the last change is always followed by one.
type fanout struct {
	mu      sync.Mutex
	last    time.Time
	pending bool
}

func (f *fanout) do(interval time.Duration, run func()) {
	f.mu.Lock()
	if f.pending {
		f.mu.Unlock()
		return
	}
	wait := interval - time.Since(f.last)
	if wait <= 0 {
		f.last = time.Now()
		f.mu.Unlock()
		run()
		return
	}
	f.pending = true
	f.mu.Unlock()
	time.AfterFunc(wait, func() {
		f.mu.Lock()
		f.pending, f.last = false, time.Now()
		f.mu.Unlock()
		run()
	})
}

func (r *NodeLivenessReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// onLeaseChange returns a lease informer handler that enqueues the node
// of a renewed lease when the node does not count as connected yet: a
// silent node heard from again. A renewal of a connected node's lease
// enqueues nothing; its reconcile runs when the lease it judged runs out
// and finds the renewal then.
func (r *NodeLivenessReconciler) onLeaseChange(enqueue func(reconcile.Request)) func(reconcile.Change) {
	return func(ch reconcile.Change) {
		if ch.Resync || ch.New == nil {
			return
		}
		kind, name, ok := api.NodeOfLease(ch.New.GetMeta().Name)
		if !ok {
			return
		}
		inf := r.Agents
		if kind == "Gateway" {
			inf = r.Gateways
		}
		obj, ok := inf.Get(name)
		if !ok || api.IsConditionTrue(obj.GetStatus().Conditions, api.NodeConnected) {
			return
		}
		enqueue(reconcile.Request{Key: api.Key{Kind: kind, Name: name}})
	}
}

func (r *NodeLivenessReconciler) lease() time.Duration {
	if r.Lease > 0 {
		return r.Lease
	}
	return DefaultNodeLease
}

// linkState is what other objects' conditions read of a node besides its
// probe reports: a change to it fans out to them.
type linkState struct {
	exists, enabled bool
	connected       api.ConditionStatus
	address         string
}

func linkOf(obj api.Object) linkState {
	if obj == nil {
		return linkState{}
	}
	enabled, st, _, ok := nodeParts(obj)
	if !ok {
		return linkState{}
	}
	ls := linkState{exists: true, enabled: enabled, address: st.OverlayAddress}
	if c := api.FindCondition(obj.GetStatus().Conditions, api.NodeConnected); c != nil {
		ls.connected = c.Status
	}
	return ls
}

// probesOf returns a gateway's probe reports by agent name.
func probesOf(obj api.Object) map[string]string {
	gw, ok := obj.(*api.Gateway)
	if !ok {
		return nil
	}
	return probesOfGateway(gw).probes
}

func probesOfGateway(gw *api.Gateway) gatewayProbes {
	out := gatewayProbes{from: gw, probes: make(map[string]string, len(gw.Status.Agents))}
	for _, p := range gw.Status.Agents {
		out.probes[p.Name] = p.Probe
	}
	if c := gw.Status.Peers; c != nil {
		out.summed, out.answered = true, c.Answered
	}
	return out
}

// gatewaysSeen returns whether an agent's own status shows a current
// session with a gateway: listed as connected or, in a list that sums
// its gateways up, not listed.
func gatewaysSeen(obj api.Object) func(gateway string) bool {
	a, ok := obj.(*api.Agent)
	if !ok {
		return func(string) bool { return false }
	}
	listed := make(map[string]bool, len(a.Status.Gateways))
	for _, g := range a.Status.Gateways {
		listed[g.Name] = g.Connected
	}
	summed := a.Status.Peers != nil
	return func(gateway string) bool {
		if c, ok := listed[gateway]; ok {
			return c
		}
		return summed
	}
}
