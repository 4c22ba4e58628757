package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// Defaults for the zero values of Config.
const (
	DefaultShutdownGrace = 10 * time.Second
	DefaultDialTimeout   = 5 * time.Second
	DefaultProbeInterval = 10 * time.Second
	// DefaultKeepalive is the WireGuard persistent keepalive towards
	// gateways when the slice's self item names none: short enough for
	// the NAT mappings of home routers, which may expire after 30 s.
	DefaultKeepalive = 15 * time.Second
)

// MTU bounds accepted by wgnet, checked here so that a bad Config fails in
// New rather than at the first Apply.
const (
	minMTU = 1280
	maxMTU = 65535 - 80
)

// closeFlush is how long drain keeps the device up after closing streams
// that outlived the grace period, so that their closing segments reach the
// gateways.
const closeFlush = 100 * time.Millisecond

// While draining, a stream of an http(s) tunnel whose last bytes went to
// the gateway drainIdleAfter ago or more, with nothing sent to the target
// since, is taken for a pooled keep-alive connection between requests and
// closed; streams are checked every drainSweep. A response that pauses
// that long after some of its bytes, during a drain, is cut: the price of
// not holding every stop for the whole grace period.
const (
	drainIdleAfter = time.Second
	drainSweep     = 100 * time.Millisecond
)

// ErrStopped is returned by Apply once Run has begun to stop, and by Run
// when it is called a second time: an Agent serves one lifetime.
var ErrStopped = errors.New("agent stopped")

// Config configures an Agent.
type Config struct {
	// PrivateKey is the agent's WireGuard identity, the one it registered
	// with. Required: the zero key is rejected.
	PrivateKey wgnet.PrivateKey

	// ListenPort is the local UDP port of the WireGuard device. Zero picks
	// a random free port, which is right for an agent: it only dials out.
	ListenPort int

	// MTU is the overlay MTU. Zero means wgnet.DefaultMTU; otherwise it
	// must lie within 1280..65455.
	MTU int

	// ShutdownGrace is how long Run waits, once its context is done, for
	// streams in flight to finish before it closes them. Zero means
	// DefaultShutdownGrace (10 s); it must not be negative.
	ShutdownGrace time.Duration

	// DialTimeout bounds connecting to a target, TLS handshake included,
	// for streams and probes. Zero means DefaultDialTimeout (5 s); it must
	// not be negative.
	DialTimeout time.Duration

	// ProbeInterval is how often every enabled tunnel's target is dialled
	// for Status, and how often the last slice is applied again (gateway
	// hostnames resolved anew, the device's peers checked). Zero means
	// DefaultProbeInterval (10 s); it must not be negative.
	ProbeInterval time.Duration

	// Resolver resolves gateway endpoints given as host names. Nil means
	// net.DefaultResolver.
	Resolver *net.Resolver

	// Logger receives the agent's messages and wireguard-go's. Nil
	// discards them.
	Logger *slog.Logger
}

// phase is where an Agent is in its one lifetime.
type phase int

const (
	phaseIdle     phase = iota // New returned; Run not called yet
	phaseRunning               // Run serves streams
	phaseStopping              // Run's context is done; draining
	phaseStopped               // Run returned
)

// Agent is the agent's data plane. Create it with New, feed it slices with
// Apply, and serve with Run. Its methods are safe for concurrent use.
type Agent struct {
	cfg Config
	log *slog.Logger

	// applyMu serialises whole applies (Apply and Run's resync), so that
	// the device, its peers and the forwards always come from one slice
	// even though the slow parts (DNS, creating a device) run without mu.
	applyMu sync.Mutex

	// hardCtx bounds target dials and probes; it is cancelled when Run
	// gives up on draining, so nothing waits on a target after that.
	hardCtx    context.Context
	hardCancel context.CancelFunc

	// probeNow asks Run for a probe round at once (new or changed
	// forwards). Buffered 1: a pending request covers any later one.
	probeNow chan struct{}

	// mu guards every field below it.
	mu    sync.Mutex
	phase phase
	// want is the last slice given to Apply, applied again by resync
	// until it takes: a failed Apply is retried level-triggered.
	want bridge.Slice
	// cur is the configuration last applied; nil before the first Apply.
	cur *desired
	// dev is the WireGuard device, nil while the slice has no self.
	dev *wgnet.Device
	// ln is the forward listener on dev; served tells whether an accept
	// loop already runs for it.
	ln     net.Listener
	served bool
	// streams are every connection accepted and not yet finished.
	streams map[*stream]struct{}
	// refusing are connections accepted while draining, being answered
	// "stopping"; refusalsClosed is set once drain has closed them, and
	// later ones are closed at once.
	refusing       map[net.Conn]struct{}
	refusalsClosed bool
	// targets are the last probe (or stream dial) result per tunnel.
	targets map[string]bridge.TargetStatus

	// loops counts accept loops and the probe round; handlers counts
	// stream handlers. Both are only added to while phase is running (or
	// idle, for Apply), under mu, so Run's Waits never race an Add.
	loops    sync.WaitGroup
	handlers sync.WaitGroup
}

// New checks cfg and returns an Agent with no device yet: the first Apply
// whose slice contains "self" creates it.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.PrivateKey.IsZero():
		return nil, fmt.Errorf("creating agent: private key is required: %w", api.ErrInvalid)
	case cfg.ListenPort < 0 || cfg.ListenPort > 65535:
		return nil, fmt.Errorf("creating agent: listen port %d out of range 0..65535: %w", cfg.ListenPort, api.ErrInvalid)
	case cfg.MTU != 0 && (cfg.MTU < minMTU || cfg.MTU > maxMTU):
		return nil, fmt.Errorf("creating agent: MTU %d out of range %d..%d: %w", cfg.MTU, minMTU, maxMTU, api.ErrInvalid)
	case cfg.ShutdownGrace < 0:
		return nil, fmt.Errorf("creating agent: negative shutdown grace %v: %w", cfg.ShutdownGrace, api.ErrInvalid)
	case cfg.DialTimeout < 0:
		return nil, fmt.Errorf("creating agent: negative dial timeout %v: %w", cfg.DialTimeout, api.ErrInvalid)
	case cfg.ProbeInterval < 0:
		return nil, fmt.Errorf("creating agent: negative probe interval %v: %w", cfg.ProbeInterval, api.ErrInvalid)
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hardCtx, hardCancel := context.WithCancel(context.Background())
	return &Agent{
		cfg:        cfg,
		log:        log,
		hardCtx:    hardCtx,
		hardCancel: hardCancel,
		probeNow:   make(chan struct{}, 1),
		streams:    make(map[*stream]struct{}),
		refusing:   make(map[net.Conn]struct{}),
		targets:    make(map[string]bridge.TargetStatus),
	}, nil
}

// PublicKey returns the agent's WireGuard public key, the one gateways
// know it by.
func (a *Agent) PublicKey() wgnet.Key { return a.cfg.PrivateKey.PublicKey() }

// applyReport says what an apply changed; "nothing" is the normal outcome
// of applying the same slice again.
type applyReport struct {
	deviceCreated bool // a device was created (first self, or a new address)
	deviceClosed  bool // the previous device was closed
	peersChanged  bool // SetPeers wrote something
	streamsClosed int  // streams of tunnels no longer served as they were
	forwards      bool // the set of forwards changed
}

func (r applyReport) changed() bool {
	return r.deviceCreated || r.deviceClosed || r.peersChanged || r.streamsClosed > 0 || r.forwards
}

// Apply converges the agent to s: the WireGuard device (created with the
// first self, recreated when self's address changes, closed when self is
// gone), its peers (every gateway of s with an endpoint) and the forwards
// streams are checked against. It is idempotent: applying the same slice
// again changes nothing, and live streams stay up. Streams of a tunnel that
// s removes, disables or points elsewhere are closed, as are all streams
// while self is disabled.
//
// Problems with single peers (an endpoint that does not resolve, a bad key)
// do not fail Apply: those peers are left out, logged and reported by
// Status; Run applies the slice again every ProbeInterval, so they are
// retried. Apply fails for a slice that cannot be applied at all (self
// without an address) and when the device cannot be created; after
// Run has begun to stop it fails with ErrStopped.
func (a *Agent) Apply(s bridge.Slice) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.DialTimeout)
	defer cancel()
	_, err := a.apply(ctx, s)
	return err
}

// apply is Apply with a context for DNS, returning what it changed.
func (a *Agent) apply(ctx context.Context, s bridge.Slice) (applyReport, error) {
	var rep applyReport
	a.applyMu.Lock()
	defer a.applyMu.Unlock()

	a.mu.Lock()
	if a.phase >= phaseStopping {
		a.mu.Unlock()
		return rep, fmt.Errorf("applying slice: %w", ErrStopped)
	}
	a.want = s
	prev, dev := a.cur, a.dev
	a.mu.Unlock()

	d, err := a.build(ctx, s, prev)
	if err != nil {
		return rep, fmt.Errorf("applying slice: %w", err)
	}

	// The device: one per overlay address.
	if dev != nil && (!d.hasSelf || dev.Address() != d.self.Address) {
		a.detachDevice(dev)
		dev = nil
		rep.deviceClosed = true
	}
	if d.hasSelf && dev == nil {
		dev, err = a.createDevice(d.self.Address)
		if err != nil {
			// Forwards still follow the slice, so nothing stale is served
			// once a device comes up on the next try.
			rep.streamsClosed, rep.forwards = a.installForwards(d)
			a.logApply(rep, d)
			return rep, fmt.Errorf("applying slice: %w", err)
		}
		rep.deviceCreated = true
	}

	var peersErr error
	if dev != nil {
		rep.peersChanged, peersErr = dev.SetPeers(d.peers)
		if peersErr != nil {
			peersErr = fmt.Errorf("applying slice: %w", peersErr)
		}
	}
	rep.streamsClosed, rep.forwards = a.installForwards(d)
	a.logApply(rep, d)
	return rep, peersErr
}

// createDevice brings up a device on addr with the forward listener and
// installs both, serving the listener at once if Run is running.
func (a *Agent) createDevice(addr netip.Addr) (*wgnet.Device, error) {
	dev, err := wgnet.New(wgnet.Config{
		PrivateKey: a.cfg.PrivateKey,
		Address:    addr,
		ListenPort: a.cfg.ListenPort,
		MTU:        a.cfg.MTU,
		Logger:     a.log,
	})
	if err != nil {
		return nil, err
	}
	ln, err := dev.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(bridge.AgentForwardPort)))
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("listening for streams: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.phase >= phaseStopping {
		ln.Close()
		dev.Close()
		return nil, ErrStopped
	}
	a.dev, a.ln, a.served = dev, ln, false
	if a.phase == phaseRunning {
		a.serveLocked()
	}
	a.log.Info("wireguard device up", "address", addr, "listen_port", dev.ListenPort(), "public_key", dev.PublicKey().Short())
	return dev, nil
}

// detachDevice uninstalls dev and closes it, which ends its listener's
// accept loop and every stream on it.
func (a *Agent) detachDevice(dev *wgnet.Device) {
	a.mu.Lock()
	if a.dev == dev {
		a.dev, a.ln, a.served = nil, nil, false
	}
	a.mu.Unlock()
	dev.Close()
	a.log.Info("wireguard device closed", "address", dev.Address())
}

// installForwards makes d the current configuration: streams that d no
// longer serves as they were, or whose gateway it no longer has, are
// closed, target results that no longer
// apply are dropped, and a probe round is asked for when the forwards
// changed.
func (a *Agent) installForwards(d *desired) (closed int, changed bool) {
	a.mu.Lock()
	prev := a.cur
	a.cur = d
	for st := range a.streams {
		// A stream whose gateway is no longer a peer could never finish:
		// its packets have nowhere to go.
		if (st.attached && !d.serves(st.fwd)) || !d.gateways[st.from] {
			if !st.closed {
				closed++
			}
			st.close()
		}
	}
	for tunnel := range a.targets {
		if f, ok := d.forwards[tunnel]; !ok || !d.active(f) || (prev != nil && prev.forwards[tunnel] != f) {
			delete(a.targets, tunnel)
		}
	}
	// A target that cannot even be parsed is reported as it is, with no
	// probe needed.
	for tunnel, f := range d.forwards {
		if f.invalid != "" && d.active(f) {
			a.targets[tunnel] = bridge.TargetStatus{Tunnel: tunnel, Message: f.invalid, CheckedAt: time.Now()}
		}
	}
	a.mu.Unlock()

	changed = prev == nil || !maps.Equal(prev.forwards, d.forwards) || prev.self.Enabled != d.self.Enabled
	if changed {
		select {
		case a.probeNow <- struct{}{}:
		default:
		}
	}
	return closed, changed
}

// logApply logs what an apply changed, and every peer left out; an apply
// that changed nothing logs at debug level only, since Run resyncs often.
func (a *Agent) logApply(rep applyReport, d *desired) {
	for _, p := range d.stale {
		a.log.Warn("gateway endpoint did not resolve; keeping its last address", "peer", p.name, "endpoint", p.endpoint, "reason", p.reason)
	}
	if !rep.changed() {
		a.log.Debug("slice applied, nothing changed")
		return
	}
	a.log.Info("slice applied",
		"self", d.self.Name, "address", d.self.Address, "enabled", d.self.Enabled,
		"peers", len(d.peers), "skipped_peers", len(d.skipped), "forwards", len(d.forwards),
		"device_created", rep.deviceCreated, "peers_changed", rep.peersChanged, "streams_closed", rep.streamsClosed)
	for _, p := range d.skipped {
		a.log.Warn("gateway left out of the wireguard peers", "peer", p.name, "endpoint", p.endpoint, "reason", p.reason)
	}
}

// Status reports the agent's WireGuard peers (by gateway name, with those
// left out of the device listed with their configured endpoint and no
// handshake) and the last result for each enabled tunnel's target. It
// reads the device's live state and is cheap. Revision is left zero: the
// node client fills it in.
func (a *Agent) Status() bridge.NodeStatus {
	a.mu.Lock()
	dev, cur := a.dev, a.cur
	targets := make([]bridge.TargetStatus, 0, len(a.targets))
	for _, t := range a.targets {
		targets = append(targets, t)
	}
	a.mu.Unlock()

	st := bridge.NodeStatus{DataPath: string(wgnet.BackendNetstack)}
	if cur == nil {
		return st
	}
	if dev != nil {
		// An error means the device was closed under us (a new address,
		// or Run stopping): it has no peers to report.
		ps, _ := dev.Peers()
		for _, p := range ps {
			ep := ""
			if p.Endpoint.IsValid() {
				ep = p.Endpoint.String()
			}
			name, ok := cur.peerNames[p.PublicKey]
			if !ok {
				name = p.PublicKey.String()
			}
			st.Peers = append(st.Peers, bridge.PeerStatus{
				Name:          name,
				Endpoint:      ep,
				LastHandshake: p.LastHandshake,
				RxBytes:       clampInt64(p.RxBytes),
				TxBytes:       clampInt64(p.TxBytes),
			})
		}
	}
	for _, p := range cur.skipped {
		st.Peers = append(st.Peers, bridge.PeerStatus{Name: p.name, Endpoint: p.endpoint})
	}
	slices.SortFunc(st.Peers, func(x, y bridge.PeerStatus) int { return strings.Compare(x.Name, y.Name) })
	slices.SortFunc(targets, func(x, y bridge.TargetStatus) int { return strings.Compare(x.Tunnel, y.Tunnel) })
	if len(targets) > 0 {
		st.Targets = targets
	}
	return st
}

func clampInt64(v uint64) int64 {
	if v > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(v)
}

// Run serves streams and probes targets until ctx is done. Then it stops
// accepting streams, waits up to ShutdownGrace for those in flight, closes
// whatever is left and the device, and returns nil. An Agent runs once: a
// second call returns ErrStopped.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.phase != phaseIdle {
		a.mu.Unlock()
		return fmt.Errorf("running agent: %w", ErrStopped)
	}
	a.phase = phaseRunning
	a.serveLocked()
	a.mu.Unlock()

	a.log.Info("agent running")
	tick := time.NewTicker(a.cfg.ProbeInterval)
	defer tick.Stop()
	probing := make(chan struct{}) // closed while no probe round runs
	close(probing)
	startProbe := func() {
		select {
		case <-probing:
		default:
			return // a round is still running; the next tick catches up
		}
		probing = make(chan struct{})
		done := probing
		a.loops.Add(1)
		go func() {
			defer a.loops.Done()
			defer close(done)
			a.probeRound()
		}()
	}
	for {
		select {
		case <-ctx.Done():
			a.drain()
			return nil
		case <-a.probeNow:
			startProbe()
		case <-tick.C:
			a.resync(ctx)
			startProbe()
		}
	}
}

// resync applies the last slice again: peers whose endpoint did not
// resolve are retried, changed DNS answers are followed, and a device that
// could not be created is tried again.
func (a *Agent) resync(ctx context.Context) {
	a.mu.Lock()
	s := a.want
	a.mu.Unlock()
	if s == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, a.cfg.DialTimeout)
	defer cancel()
	if _, err := a.apply(rctx, s); err != nil && !errors.Is(err, ErrStopped) {
		a.log.Warn("resyncing slice", "err", err)
	}
}

// serveLocked starts the accept loop for the current listener if it has
// none. Callers hold mu and have checked that Run is running.
func (a *Agent) serveLocked() {
	if a.ln == nil || a.served {
		return
	}
	a.served = true
	ln := a.ln
	a.loops.Add(1)
	go a.acceptLoop(ln)
}

// drain stops the agent: no new streams (new ones are answered
// "stopping", so gateways still see the agent while its streams finish),
// up to ShutdownGrace for those in flight, then everything closed. Every
// goroutine of the agent has ended when it returns.
func (a *Agent) drain() {
	a.mu.Lock()
	a.phase = phaseStopping
	ln := a.ln
	a.ln, a.served = nil, false
	inflight := len(a.streams)
	a.mu.Unlock()
	a.log.Info("agent stopping: draining streams", "in_flight", inflight, "grace", a.cfg.ShutdownGrace)

	done := make(chan struct{})
	go func() {
		// Ends once every handler has: forced below if need be.
		a.handlers.Wait()
		close(done)
	}()
	grace := time.NewTimer(a.cfg.ShutdownGrace)
	defer grace.Stop()
	// A gateway keeps streams to agents in a keep-alive pool; waiting for
	// it to close idle ones would hold every stop for the whole grace
	// period. So, as an HTTP server's shutdown does, streams idle between
	// requests are closed while the others are waited for.
	sweep := time.NewTicker(drainSweep)
	defer sweep.Stop()
	forced := false
wait:
	for {
		select {
		case <-done:
			break wait
		case now := <-sweep.C:
			a.mu.Lock()
			for st := range a.streams {
				if st.idleKeepAlive(now, drainIdleAfter) {
					st.close()
				}
			}
			a.mu.Unlock()
		case <-grace.C:
			a.mu.Lock()
			left := len(a.streams)
			for st := range a.streams {
				st.close()
			}
			a.mu.Unlock()
			a.log.Warn("agent stopping: grace period over, closing streams", "closed", left)
			a.hardCancel()
			<-done
			forced = left > 0
			break wait
		}
	}
	if ln != nil {
		ln.Close()
	}
	a.mu.Lock()
	a.refusalsClosed = true
	for c := range a.refusing {
		c.Close()
	}
	a.mu.Unlock()
	a.hardCancel()
	a.loops.Wait()
	if forced {
		// The streams' FINs and resets leave through the device; give
		// them a moment so gateways learn at once that their streams are
		// gone, rather than when their own timeouts run out.
		time.Sleep(closeFlush)
	}

	// Stop an Apply in progress from installing anything, then close the
	// device it may have installed.
	a.applyMu.Lock()
	a.mu.Lock()
	dev := a.dev
	a.dev, a.ln = nil, nil
	a.phase = phaseStopped
	a.mu.Unlock()
	a.applyMu.Unlock()
	if dev != nil {
		dev.Close()
	}
	a.log.Info("agent stopped")
}
