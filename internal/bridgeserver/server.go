package bridgeserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/credential"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

// Config configures a Server.
type Config struct {
	// Store is read and written for registration and status. Required.
	Store *store.Store
	// Sources list and watch each kind the slices are computed from
	// ("Agent", "Gateway", "Tunnel", "Token"). Required. A source for
	// api.CertificateKeyPairKind, when present, puts certificates and
	// keys into gateways' slices; one for api.ACMEChallengeKind, pending
	// ACME HTTP-01 challenges.
	Sources map[string]reconcile.ListerWatcher
	// Logger receives the bridge's logs; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// PingInterval is how often Control pings each node; zero means 15 s.
	// A node that does not answer within the interval is disconnected.
	PingInterval time.Duration
	// LeaseInterval is the least time between two renewals of a node's
	// lease (api.NodeLease) by its heartbeats, when nothing else is
	// written; zero means 8 s.
	LeaseInterval time.Duration
	// StatusRefresh is how often a node's status is rewritten when its
	// heartbeats change nothing it shows but the times of its peers'
	// handshakes; zero means a minute. Any other change is written at
	// once.
	StatusRefresh time.Duration
	// KeepaliveSeconds is the WireGuard keepalive agents are told to use;
	// zero means 15.
	KeepaliveSeconds int
}

// Server is the watch bridge.
type Server struct {
	cfg       Config
	log       *slog.Logger
	informers map[string]*reconcile.Informer

	mu    sync.Mutex // guards conns and rev
	conns map[*conn]struct{}
	rev   int64 // highest revision the caches have seen

	// The current view, rebuilt when a change a slice reads marks it
	// dirty: by Run's loop at most once per coalesce interval, or by a
	// connection that finds its node missing from it.
	buildMu sync.Mutex // serialises rebuild
	view    atomic.Pointer[view]
	dirty   atomic.Bool
	dirtyCh chan struct{} // capacity 1: signals coalesce

	writers chan struct{} // a slot per status write in flight
	leases  leaseRenewals // renewals leaseLoop writes

	// keyMu holds a *keyUses per API key name: registrations count
	// their uses through it (see consumeKey).
	keyMu sync.Map
}

// statusWriters bounds the heartbeat status writes in flight: a fleet's
// heartbeats queue here (each node's newest replacing its older one)
// rather than as thousands of concurrent store writes.
const statusWriters = 64

// coalesce is the least time between two views built by Run's loop: a
// burst of changes (a fleet enrolling) costs one view per interval
// instead of one per change.
const coalesce = 20 * time.Millisecond

// New builds the bridge; nothing runs until Run.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = 15 * time.Second
	}
	if cfg.LeaseInterval == 0 {
		cfg.LeaseInterval = 8 * time.Second
	}
	if cfg.StatusRefresh == 0 {
		cfg.StatusRefresh = time.Minute
	}
	if cfg.KeepaliveSeconds == 0 {
		cfg.KeepaliveSeconds = 15
	}
	s := &Server{cfg: cfg, log: cfg.Logger, informers: map[string]*reconcile.Informer{}, conns: map[*conn]struct{}{},
		dirtyCh: make(chan struct{}, 1), writers: make(chan struct{}, statusWriters)}
	kinds := []string{"Agent", "Gateway", "Tunnel", "Token"}
	for _, k := range []string{api.CertificateKeyPairKind, api.ACMEChallengeKind} {
		if _, ok := cfg.Sources[k]; ok {
			kinds = append(kinds, k)
		}
	}
	for _, kind := range kinds {
		src := cfg.Sources[kind]
		if kind == "Agent" || kind == "Gateway" {
			src = withoutPeerLists{src}
		}
		inf := reconcile.NewInformer(reconcile.InformerConfig{Kind: kind, Source: src, Logger: cfg.Logger})
		kind := kind
		inf.AddHandler(func(ch reconcile.Change) { s.changed(kind, ch) })
		s.informers[kind] = inf
	}
	return s
}

// Register adds the bridge's routes to e.
func (s *Server) Register(e *echo.Echo) {
	e.POST(bridge.RegisterPath, s.register)
	e.GET(bridge.WatchPath, s.watch)
}

// Run runs the informers until ctx is done, then closes every node
// connection.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, len(s.informers))
	for _, inf := range s.informers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := inf.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- err
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.rebuildLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		s.leaseLoop(ctx)
	}()
	<-ctx.Done()
	s.mu.Lock()
	for c := range s.conns {
		c.close(websocket.StatusGoingAway, "control is shutting down")
	}
	s.mu.Unlock()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

func (s *Server) synced() bool {
	for _, inf := range s.informers {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}

// changed is called by every informer on every change; it wakes the
// connections whose slice may depend on it and closes those whose
// credential was revoked.
func (s *Server) changed(kind string, ch reconcile.Change) {
	obj := ch.New
	if obj == nil {
		obj = ch.Old
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if obj != nil {
		if rv := parseRV(obj.GetMeta().ResourceVersion); rv > s.rev {
			s.rev = rv
		}
	}
	if kind == "Token" {
		if ch.Type == api.Deleted && ch.Old != nil {
			for c := range s.conns {
				if c.principal.UID == ch.Old.GetMeta().UID {
					c.close(websocket.StatusPolicyViolation, "credential revoked")
				}
			}
		}
		return
	}
	if ch.Type == api.Modified && ch.Old != nil && ch.New != nil && sliceInput(ch.Old) == sliceInput(ch.New) {
		// A heartbeat's status write or a condition: no slice reads it.
		return
	}
	s.dirty.Store(true)
	select {
	case s.dirtyCh <- struct{}{}:
	default:
	}
}

// rebuildLoop builds a new view after changes, at most once per
// coalesce interval, until ctx is done.
func (s *Server) rebuildLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.dirtyCh:
		}
		if s.synced() {
			s.rebuild()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(coalesce):
		}
	}
}

// rebuild builds a new view if a change marked the current one dirty (or
// there is none) and wakes the connections whose slice changed; it
// returns the current view.
func (s *Server) rebuild() *view {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	prev := s.view.Load()
	if prev != nil && !s.dirty.Load() {
		return prev
	}
	// Cleared before the caches are read: a change that lands during the
	// build marks the next view dirty again.
	s.dirty.Store(false)
	s.mu.Lock()
	rev := s.rev
	s.mu.Unlock()
	v := buildView(s.state(), rev, prev)
	s.view.Store(v)
	// Connections register before they read the view, so every one that
	// holds an older view is in conns now.
	gw, ag, nodes := wakeSet(prev, v)
	s.mu.Lock()
	for c := range s.conns {
		isGW := c.principal.Role == api.RoleGateway
		if (isGW && gw) || (!isGW && ag) || nodes[nodeID{isGW, c.principal.Node}] {
			c.wake()
		}
	}
	s.mu.Unlock()
	return v
}

// currentView returns the latest view holding p's node, rebuilding when
// the node is not in it yet (it registered a moment ago); the bool is
// false when the node does not exist.
func (s *Server) currentView(p credential.Principal) (*view, nodeSlice, bool) {
	v := s.view.Load()
	if v != nil {
		if ns, ok := v.sliceOf(p); ok {
			return v, ns, true
		}
	}
	v = s.rebuild()
	ns, ok := v.sliceOf(p)
	return v, ns, ok
}

// nodeID names a node in a view: its kind (gateway or not) and name.
type nodeID struct {
	gateway bool
	name    string
}

// wakeSet says whose slices differ between prev and v: every gateway's,
// every agent's, and those of the nodes listed.
func wakeSet(prev, v *view) (gateways, agents bool, nodes map[nodeID]bool) {
	if prev == nil {
		return true, true, nil
	}
	nodes = map[nodeID]bool{}
	selves := func(gw bool, a, b map[string]*entry) {
		for name, e := range b {
			if a[name] != e {
				nodes[nodeID{gw, name}] = true
			}
		}
		for name := range a {
			if _, ok := b[name]; !ok {
				nodes[nodeID{gw, name}] = true
			}
		}
	}
	selves(true, prev.gwSelf, v.gwSelf)
	selves(false, prev.agSelf, v.agSelf)
	for name, p := range v.agForwards {
		if prev.agForwards[name] != p {
			nodes[nodeID{false, name}] = true
		}
	}
	for name := range prev.agForwards {
		if _, ok := v.agForwards[name]; !ok {
			nodes[nodeID{false, name}] = true
		}
	}
	return prev.gwShared != v.gwShared, prev.agPeers != v.agPeers, nodes
}

// sliceInput is what of an object the slices are computed from: its spec,
// its creation and deletion times, and a node's overlay address. A change
// elsewhere (conditions, heartbeats) wakes no connection.
func sliceInput(obj api.Object) string {
	m := obj.GetMeta()
	var spec any
	var addr string
	switch o := obj.(type) {
	case *api.Tunnel:
		spec = o.Spec
	case *api.Agent:
		spec, addr = o.Spec, o.Status.OverlayAddress
	case *api.Gateway:
		spec, addr = o.Spec, o.Status.OverlayAddress
	default:
		return m.ResourceVersion
	}
	data, _ := json.Marshal(struct {
		Spec     any
		Created  time.Time
		Deleting *time.Time
		Addr     string
	}{spec, m.CreationTimestamp, m.DeletionTimestamp, addr})
	return string(data)
}

func parseRV(s string) int64 {
	var n int64
	for _, ch := range s {
		if ch < '0' || ch > '9' {
			return 0
		}
		n = n*10 + int64(ch-'0')
	}
	return n
}

func (s *Server) state() State {
	st := State{Agents: s.informers["Agent"].List(), Gateways: s.informers["Gateway"].List(),
		Tunnels: s.informers["Tunnel"].List(), KeepaliveSeconds: s.cfg.KeepaliveSeconds}
	if inf, ok := s.informers[api.CertificateKeyPairKind]; ok {
		st.Certificates = inf.List()
	}
	if inf, ok := s.informers[api.ACMEChallengeKind]; ok {
		st.Challenges = inf.List()
	}
	return st
}

// nodeTokenName names a node's credential: stable per node, within the
// name limits whatever the node's name.
func nodeTokenName(kind, node string) string {
	sum := sha256.Sum256([]byte(kind + "/" + node))
	return "node-" + hex.EncodeToString(sum[:10])
}

func writeStatus(c echo.Context, err error) error {
	st := api.StatusFromError(err)
	return c.JSON(st.Code, st)
}

// register enrols a node: it checks the API key, creates or updates the
// node's object with its WireGuard key, and issues the node a fresh
// credential that replaces any earlier one.
func (s *Server) register(c echo.Context) error {
	ctx := c.Request().Context()
	key, err := s.checkAPIKey(ctx, c.Request().Header.Get("Authorization"))
	if err != nil {
		return writeStatus(c, err)
	}
	var req bridge.RegisterRequest
	dec := json.NewDecoder(http.MaxBytesReader(c.Response(), c.Request().Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return writeStatus(c, api.NewStatusError(api.ReasonBadRequest, "decode registration: %v", err))
	}
	if req.Kind != key.Spec.Role.NodeKind() {
		return writeStatus(c, api.NewStatusError(api.ReasonForbidden, "API key %q enrols %ss, not %ss", key.Metadata.Name, key.Spec.Role, req.Kind))
	}
	if err := api.ValidateName(req.Name); err != nil {
		return writeStatus(c, err)
	}
	node, err := api.New(req.Kind)
	if err != nil {
		return writeStatus(c, api.NewStatusError(api.ReasonBadRequest, "%v", err))
	}
	node.GetMeta().Name = req.Name
	switch n := node.(type) {
	case *api.Agent:
		n.Spec.PublicKey = req.PublicKey
	case *api.Gateway:
		n.Spec.PublicKey = req.PublicKey
		n.Spec.PublicEndpoint = req.PublicEndpoint
	}
	node.Default()
	if err := api.Validate(node); err != nil {
		return writeStatus(c, err)
	}
	if req.PublicKey == "" {
		return writeStatus(c, api.ErrorList{{Type: api.FieldRequired, Field: "publicKey", Detail: "required: the node's WireGuard public key"}})
	}
	if err := s.consumeKey(ctx, key); err != nil {
		return writeStatus(c, err)
	}
	stored, err := s.upsertNode(ctx, node)
	if err != nil {
		return writeStatus(c, err)
	}
	cred, err := s.issueCredential(ctx, stored)
	if err != nil {
		return writeStatus(c, err)
	}
	s.log.Info("node registered", "kind", req.Kind, "name", req.Name, "apikey", key.Metadata.Name, "version", req.Version)
	return c.JSON(http.StatusOK, bridge.RegisterResponse{Name: req.Name, Credential: cred})
}

func (s *Server) checkAPIKey(ctx context.Context, header string) (*api.APIKey, error) {
	bearer, ok := cutBearer(header)
	if !ok {
		return nil, api.NewStatusError(api.ReasonUnauthorized, "an API key is required as the bearer token")
	}
	name, secret, ok := api.ParseAPIKey(bearer)
	if !ok {
		return nil, api.NewStatusError(api.ReasonUnauthorized, "the API key is malformed")
	}
	obj, err := s.cfg.Store.Get(ctx, "APIKey", name)
	if errors.Is(err, api.ErrNotFound) {
		return nil, api.NewStatusError(api.ReasonUnauthorized, "the API key is unknown or revoked")
	}
	if err != nil {
		return nil, err
	}
	key := obj.(*api.APIKey)
	if !credential.Matches(key.Spec.SecretHash, secret) {
		return nil, api.NewStatusError(api.ReasonUnauthorized, "the API key is unknown or revoked")
	}
	if key.Spec.ExpiresAt != nil && s.cfg.Now().After(*key.Spec.ExpiresAt) {
		return nil, api.NewStatusError(api.ReasonUnauthorized, "the API key expired at %s", key.Spec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return key, nil
}

func cutBearer(h string) (string, bool) {
	const p = "Bearer "
	if len(h) <= len(p) || h[:len(p)] != p {
		return "", false
	}
	return h[len(p):], true
}

// consumeKey counts a use; the write carries the key's resourceVersion so
// two concurrent registrations cannot both take a single-use key's last use.
// Registrations with one key take turns; those with a key without a use
// limit share one write per turn, so a fleet enrolling at once costs a
// few writes of the key rather than one each.
func (s *Server) consumeKey(ctx context.Context, key *api.APIKey) error {
	v, _ := s.keyMu.LoadOrStore(key.Metadata.Name, &keyUses{})
	ku := v.(*keyUses)
	if key.Spec.MaxUses > 0 {
		ku.turn.Lock()
		defer ku.turn.Unlock()
		return s.addUses(ctx, key, 1)
	}
	done := make(chan error, 1)
	ku.mu.Lock()
	ku.waiting = append(ku.waiting, done)
	leader := len(ku.waiting) == 1
	ku.mu.Unlock()
	if leader {
		go s.flushUses(key, ku)
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// keyUses is the registrations of one API key waiting for their use to
// be counted.
type keyUses struct {
	turn    sync.Mutex // held while a turn writes
	mu      sync.Mutex // guards waiting
	waiting []chan error
}

// flushUses writes the uses of everyone waiting, turn by turn, until no
// one is.
func (s *Server) flushUses(key *api.APIKey, ku *keyUses) {
	ku.turn.Lock()
	defer ku.turn.Unlock()
	for {
		ku.mu.Lock()
		batch := ku.waiting
		ku.waiting = nil
		ku.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := s.addUses(ctx, key, int64(len(batch)))
		cancel()
		for _, ch := range batch {
			ch <- err
		}
		// A later batch counts on the stored key, not the one read by
		// the registration that started this flush.
		key = &api.APIKey{Metadata: api.ObjectMeta{Name: key.Metadata.Name}}
	}
}

// addUses adds n uses to the stored key, re-reading it on a conflict.
// key is the key as last read; one with no resourceVersion is read first.
func (s *Server) addUses(ctx context.Context, key *api.APIKey, n int64) error {
	for attempt := 0; attempt < 5; attempt++ {
		if key.Metadata.ResourceVersion != "" {
			if key.Spec.MaxUses > 0 && key.Status.Uses+n > key.Spec.MaxUses {
				return api.NewStatusError(api.ReasonForbidden, "the API key %q has been used %d of %d times", key.Metadata.Name, key.Status.Uses, key.Spec.MaxUses)
			}
			k := api.Clone(key)
			k.Status.Uses += n
			now := s.cfg.Now().UTC().Truncate(time.Second)
			k.Status.LastUsed = &now
			_, err := s.cfg.Store.UpdateStatus(ctx, k, store.WriteOptions{})
			if err == nil {
				return nil
			}
			if !errors.Is(err, api.ErrConflict) {
				return err
			}
		}
		obj, err := s.cfg.Store.Get(ctx, "APIKey", key.Metadata.Name)
		if errors.Is(err, api.ErrNotFound) {
			return api.NewStatusError(api.ReasonUnauthorized, "the API key is unknown or revoked")
		}
		if err != nil {
			return err
		}
		key = obj.(*api.APIKey)
	}
	return api.NewStatusError(api.ReasonConflict, "the API key is being used concurrently; retry")
}

// upsertNode creates the node or updates its key and endpoint, keeping
// everything else (enabled, labels, its overlay address in status).
func (s *Server) upsertNode(ctx context.Context, node api.Object) (api.Object, error) {
	kind := node.GetTypeMeta().Kind
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := s.cfg.Store.Get(ctx, kind, node.GetMeta().Name)
		if errors.Is(err, api.ErrNotFound) {
			created, err := s.cfg.Store.Create(ctx, node, store.WriteOptions{})
			if errors.Is(err, api.ErrAlreadyExists) {
				continue
			}
			return created, err
		}
		if err != nil {
			return nil, err
		}
		upd := api.Clone(cur)
		switch u := upd.(type) {
		case *api.Agent:
			u.Spec.PublicKey = node.(*api.Agent).Spec.PublicKey
		case *api.Gateway:
			u.Spec.PublicKey = node.(*api.Gateway).Spec.PublicKey
			u.Spec.PublicEndpoint = node.(*api.Gateway).Spec.PublicEndpoint
		}
		out, err := s.cfg.Store.Update(ctx, upd, store.WriteOptions{})
		if errors.Is(err, api.ErrConflict) {
			continue
		}
		return out, err
	}
	return nil, api.NewStatusError(api.ReasonConflict, "the node is being registered concurrently; retry")
}

// issueCredential creates or replaces the node's credential, owned by the
// node object so it goes when the node is deleted.
func (s *Server) issueCredential(ctx context.Context, node api.Object) (string, error) {
	secret, err := credential.NewSecret()
	if err != nil {
		return "", err
	}
	kind := node.GetTypeMeta().Kind
	role := api.RoleAgent
	if kind == "Gateway" {
		role = api.RoleGateway
	}
	name := nodeTokenName(kind, node.GetMeta().Name)
	tok := &api.Token{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Token"},
		Metadata: api.ObjectMeta{Name: name, OwnerReferences: []api.OwnerReference{{APIVersion: api.APIVersion,
			Kind: kind, Name: node.GetMeta().Name, UID: node.GetMeta().UID, Controller: true}}},
		Spec: api.TokenSpec{Role: role, Node: node.GetMeta().Name, SecretHash: credential.Hash(secret),
			Description: fmt.Sprintf("credential of %s %s, issued at registration", kind, node.GetMeta().Name)}}
	// Replacing the credential is delete + create, so the old token's uid
	// goes and any connection holding it is closed.
	if _, err := s.cfg.Store.Delete(ctx, "Token", name, store.DeleteOptions{}); err != nil && !errors.Is(err, api.ErrNotFound) {
		return "", err
	}
	if _, err := s.cfg.Store.Create(ctx, tok, store.WriteOptions{}); err != nil {
		return "", err
	}
	return api.FormatToken(name, secret), nil
}

// EnrolLocal registers a node that runs inside Control's own process (the
// single-server install's gateway) without an API key, and returns its
// credential. It is what a registration does after the key check.
func (s *Server) EnrolLocal(ctx context.Context, req bridge.RegisterRequest) (string, error) {
	node, err := api.New(req.Kind)
	if err != nil {
		return "", err
	}
	node.GetMeta().Name = req.Name
	switch n := node.(type) {
	case *api.Agent:
		n.Spec.PublicKey = req.PublicKey
	case *api.Gateway:
		n.Spec.PublicKey, n.Spec.PublicEndpoint = req.PublicKey, req.PublicEndpoint
	}
	node.Default()
	if err := api.Validate(node); err != nil {
		return "", fmt.Errorf("enrol local %s: %w", req.Kind, err)
	}
	stored, err := s.upsertNode(ctx, node)
	if err != nil {
		return "", fmt.Errorf("enrol local %s: %w", req.Kind, err)
	}
	return s.issueCredential(ctx, stored)
}

// withoutPeerLists wraps a source of agents or gateways so that the
// objects it gives have no peer lists or target reports in their status:
// the bridge computes slices from their specs and addresses, and writes
// those lists from heartbeats, never from the cache. A gateway lists
// every agent and an agent every gateway; at 10,000 agents of 1,000
// gateways the lists were a gigabyte of the bridge's cache.
type withoutPeerLists struct {
	src reconcile.ListerWatcher
}

func (w withoutPeerLists) List(ctx context.Context) ([]api.Object, int64, error) {
	objs, rev, err := w.src.List(ctx)
	for i, obj := range objs {
		objs[i] = stripPeerLists(obj)
	}
	return objs, rev, err
}

func (w withoutPeerLists) Watch(ctx context.Context, fromRev int64) (<-chan reconcile.Event, error) {
	in, err := w.src.Watch(ctx, fromRev)
	if err != nil {
		return nil, err
	}
	return reconcile.Relay(ctx, in, func(ev reconcile.Event) (reconcile.Event, bool) {
		if ev.Object != nil {
			ev.Object = stripPeerLists(ev.Object)
		}
		return ev, true
	}), nil
}

// stripPeerLists returns a copy of an agent or gateway without its
// status's peer list and target reports; other objects as they are.
func stripPeerLists(obj api.Object) api.Object {
	switch n := obj.(type) {
	case *api.Agent:
		c := *n
		c.Status.Gateways, c.Status.Targets = nil, nil
		return &c
	case *api.Gateway:
		c := *n
		c.Status.Agents = nil
		return &c
	}
	return obj
}
