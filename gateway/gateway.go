package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// MaxHeaderBytes bounds a request's header block; a client that sends more
// gets 431 Request Header Fields Too Large.
const MaxHeaderBytes = 64 << 10

// Defaults for the zero values of Config's durations.
const (
	DefaultShutdownGrace     = 10 * time.Second
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultDialTimeout       = 2 * time.Second
	DefaultAnswerTimeout     = 10 * time.Second
	DefaultProbeInterval     = 10 * time.Second
	DefaultProbeTimeout      = 3 * time.Second
)

// Config configures a Gateway.
type Config struct {
	// PrivateKey is the gateway's WireGuard identity. Required.
	PrivateKey wgnet.PrivateKey

	// WireGuardPort is the UDP port agents send WireGuard to. Zero picks a
	// random free port (tests); a device recreated for a new overlay
	// address keeps the port it had.
	WireGuardPort int

	// WireGuardBackend is the data path of the gateway's WireGuard device:
	// wgnet.BackendNetstack (the default, no privilege) or
	// wgnet.BackendTUN (the kernel's TCP/IP through a TUN interface; needs
	// CAP_NET_ADMIN and /dev/net/tun).
	WireGuardBackend wgnet.Backend
	// WireGuardInterface names the TUN interface of the tun backend; empty
	// means wgnet.DefaultInterface.
	WireGuardInterface string

	// HTTPListen is the plain-HTTP address, such as ":80". Empty: no plain
	// HTTP, unless HTTPListener is set.
	HTTPListen string
	// HTTPSListen is the HTTPS address, such as ":443". Empty: no HTTPS,
	// unless HTTPSListener is set.
	HTTPSListen string
	// HTTPListener and HTTPSListener, when set, are used instead of binding
	// HTTPListen and HTTPSListen (tests pass 127.0.0.1:0 listeners). Run
	// closes them. Nil: bind the address, if any.
	HTTPListener, HTTPSListener net.Listener

	// TCPListenHost is the host tcp routes' public ports are bound on.
	// Empty: every local address. Tests use 127.0.0.1.
	TCPListenHost string

	// CertFile and KeyFile are a PEM certificate and key served for every
	// hostname GetCertificate does not answer. Both empty: a self-signed
	// certificate is generated in memory for each routed hostname (and one
	// for any other name). Setting only one of them is an error.
	CertFile, KeyFile string

	// GetCertificate, when set, is asked first in every TLS handshake; a
	// nil certificate with a nil error falls through to CertFile or the
	// self-signed fallback, an error fails the handshake. The automatic
	// certificate source plugs in here. Nil: not consulted.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)

	// WrapHTTP wraps the handler of the plain-HTTP server: ACME HTTP-01
	// challenges and the redirect to HTTPS go here. Nil: plain HTTP routes
	// requests exactly as HTTPS does.
	WrapHTTP func(routes http.Handler) http.Handler

	// ShutdownGrace is how long Run lets in-flight requests, upgraded
	// connections and tcp relays finish once its context ends, before it
	// closes them. Zero means DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// ReadHeaderTimeout bounds reading a request's headers (and the TLS
	// handshake), which also cuts slowloris clients off. Zero means
	// DefaultReadHeaderTimeout. There is deliberately no read or write
	// timeout on bodies: uploads and streams may last as long as they
	// flow.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a client's keep-alive connection idle this long.
	// Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// DialTimeout bounds opening a WireGuard connection to an agent, so an
	// offline agent is answered "agent offline" quickly instead of
	// hanging. Zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// AnswerTimeout bounds the wait for the agent's answer to a preamble
	// (the agent dials the target first). Zero means DefaultAnswerTimeout.
	AnswerTimeout time.Duration
	// ProbeInterval is how often every agent is probed through the data
	// path. Zero means DefaultProbeInterval.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe. Zero means DefaultProbeTimeout.
	ProbeTimeout time.Duration

	// Logger receives the gateway's messages. Nil discards them.
	Logger *slog.Logger
}

// withDefaults validates c and fills in the defaults of its zero values.
func (c Config) withDefaults() (Config, error) {
	if c.PrivateKey.IsZero() {
		return c, fmt.Errorf("private key is required: %w", api.ErrInvalid)
	}
	if c.WireGuardPort < 0 || c.WireGuardPort > 65535 {
		return c, fmt.Errorf("wireguard port %d out of range 0..65535: %w", c.WireGuardPort, api.ErrInvalid)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return c, fmt.Errorf("certificate and key files go together: %w", api.ErrInvalid)
	}
	b, err := wgnet.ParseBackend(string(c.WireGuardBackend))
	if err != nil {
		return c, err
	}
	c.WireGuardBackend = b
	if len(c.WireGuardInterface) > 15 {
		return c, fmt.Errorf("wireguard interface name %q longer than 15 bytes: %w", c.WireGuardInterface, api.ErrInvalid)
	}
	durations := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"shutdown grace", &c.ShutdownGrace, DefaultShutdownGrace},
		{"read header timeout", &c.ReadHeaderTimeout, DefaultReadHeaderTimeout},
		{"idle timeout", &c.IdleTimeout, DefaultIdleTimeout},
		{"dial timeout", &c.DialTimeout, DefaultDialTimeout},
		{"answer timeout", &c.AnswerTimeout, DefaultAnswerTimeout},
		{"probe interval", &c.ProbeInterval, DefaultProbeInterval},
		{"probe timeout", &c.ProbeTimeout, DefaultProbeTimeout},
	}
	for _, f := range durations {
		if *f.d < 0 {
			return c, fmt.Errorf("%s %v is negative: %w", f.name, *f.d, api.ErrInvalid)
		}
		if *f.d == 0 {
			*f.d = f.def
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Gateway is a public entry node's data plane. Apply and Status may be
// called from any goroutine, before or while Run runs.
//
// Apply creates the WireGuard device and binds tcp routes' ports, and only
// Run's return releases them: whoever calls Apply must also run Run.
type Gateway struct {
	cfg       Config
	log       *slog.Logger
	pub       wgnet.Key
	certs     *certificates
	transport *http.Transport
	proxy     *httputil.ReverseProxy

	// The request path reads these without locks; Apply swaps them whole.
	table   atomic.Pointer[routeTable]
	dev     atomic.Pointer[wgnet.Device]
	targets atomic.Pointer[[]probeTarget]
	names   atomic.Pointer[map[wgnet.Key]string]
	// routes is what Status reports as served.
	routes atomic.Pointer[[]string]

	// draining is set once Run begins to shut down; health answers 503.
	draining atomic.Bool
	// streams counts the open streams to agents.
	streams atomic.Int64
	// dials counts streams opened to agents for requests and tcp
	// connections (not probes), so tests can prove a request reached none.
	dials atomic.Int64
	// health is each agent's liveness as requests and probes found it.
	health liveness

	// baseCtx is the parent of every request, relay and probe; stopBase
	// cancels it when the shutdown grace is over.
	baseCtx  context.Context
	stopBase context.CancelFunc

	// probeNow asks the probe loop for a round at once (peers changed).
	probeNow chan struct{}
	// probeMu guards probes.
	probeMu sync.Mutex
	probes  []bridge.ProbeStatus

	// handlers counts requests being handled, so Run returns only once the
	// last one is done.
	handlers activity
	// upgraded holds the client connections of upgraded requests
	// (WebSocket): http.Server's shutdown does not wait for them.
	upgraded *connSet

	// mu serialises Apply with itself and with Run's start and stop, and
	// guards the fields below.
	mu sync.Mutex
	// tcp holds the bound listener of each tcp route's public port.
	tcp map[int]*tcpListener
	// tcpFailed holds the ports that could not be bound, with the error.
	tcpFailed map[int]string
	// started is set by the first Run; running while it serves; stopped
	// once it has begun to shut down (Apply is refused from then on).
	started, running, stopped bool
	// wg counts the goroutines Run owns: accept loops, relays, probes.
	wg sync.WaitGroup
}

// New returns a Gateway that serves nothing until Apply gives it a slice
// and Run starts it.
func New(cfg Config) (*Gateway, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("creating gateway: %w", err)
	}
	g := &Gateway{
		cfg:       cfg,
		log:       cfg.Logger,
		pub:       cfg.PrivateKey.PublicKey(),
		probeNow:  make(chan struct{}, 1),
		upgraded:  newConnSet(),
		tcp:       map[int]*tcpListener{},
		tcpFailed: map[int]string{},
	}
	g.certs = &certificates{
		hook:       cfg.GetCertificate,
		routed:     g.routedHost,
		selfSigned: map[string]*tls.Certificate{},
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("creating gateway: loading certificate: %w", err)
		}
		g.certs.def = &cert
	}
	g.baseCtx, g.stopBase = context.WithCancel(context.Background())
	g.transport = newTransport(g.dialTunnel)
	g.proxy = g.newProxy()
	g.table.Store(emptyTable())
	g.targets.Store(&[]probeTarget{})
	g.names.Store(&map[wgnet.Key]string{})
	g.routes.Store(&[]string{})
	return g, nil
}

// routedHost reports whether host is an http route's hostname.
func (g *Gateway) routedHost(host string) bool {
	_, ok := g.table.Load().hosts[host]
	return ok
}

// WireGuardPort returns the UDP port the WireGuard device listens on, or 0
// while there is no device.
func (g *Gateway) WireGuardPort() int {
	if dev := g.dev.Load(); dev != nil {
		return dev.ListenPort()
	}
	return 0
}

// Apply converges the gateway to s: the WireGuard device (created by the
// first slice with "self", recreated when self's address changes, closed
// when self is gone), its peers (every "peer/*" item: the agent's public
// key and its overlay address alone as AllowedIPs), the routing table
// (swapped whole) and the public ports of tcp routes. It is level-triggered
// and idempotent: given the same slice again it changes nothing.
//
// Whatever cannot be converged (an invalid item, a public port already in
// use, a device that cannot bind its UDP port) is reported in the error,
// and everything else is applied regardless; a port that could not be
// bound is tried again every probe interval.
func (g *Gateway) Apply(s bridge.Slice) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return fmt.Errorf("applying slice: gateway stopped: %w", net.ErrClosed)
	}
	d, err := parseSlice(s, g.pub)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}

	dev, devChanged, err := g.convergeDeviceLocked(d.self)
	if err != nil {
		errs = append(errs, err)
	}
	peersChanged := false
	if dev != nil {
		changed, err := dev.SetPeers(d.peers)
		if err != nil {
			errs = append(errs, err)
		}
		peersChanged = changed
	}
	g.names.Store(&d.names)
	g.targets.Store(&d.targets)

	old := g.table.Load()
	closeIdle := devChanged
	if !old.equal(d.table) {
		g.table.Store(d.table)
		// A pooled stream to an agent that no longer serves the tunnel at
		// that address would be reused for the next request: drop them.
		closeIdle = closeIdle || movesStreams(old, d.table)
		g.certs.prune()
		g.log.Info("routes updated", "http", len(d.table.hosts), "tcp", len(d.table.ports), "gateway_enabled", !d.table.gatewayDisabled)
	}
	if closeIdle {
		g.transport.CloseIdleConnections()
	}
	if err := g.syncTCPLocked(g.table.Load()); err != nil {
		errs = append(errs, err)
	}
	if devChanged || peersChanged {
		select {
		case g.probeNow <- struct{}{}:
		default:
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("applying slice: %w", err)
	}
	return nil
}

// convergeDeviceLocked makes the WireGuard device match self and returns
// it (nil if there is none) and whether it was replaced.
func (g *Gateway) convergeDeviceLocked(self *bridge.Self) (*wgnet.Device, bool, error) {
	dev := g.dev.Load()
	if self != nil && dev != nil && dev.Address() == self.Address {
		return dev, false, nil
	}
	port := g.cfg.WireGuardPort
	if dev != nil {
		if port == 0 {
			port = dev.ListenPort()
		}
		g.dev.Store(nil)
		dev.Close()
		g.log.Info("wireguard device closed", "address", dev.Address())
	}
	if self == nil {
		return nil, dev != nil, nil
	}
	nd, err := wgnet.New(wgnet.Config{
		PrivateKey: g.cfg.PrivateKey,
		Address:    self.Address,
		ListenPort: port,
		Backend:    g.cfg.WireGuardBackend,
		Interface:  g.cfg.WireGuardInterface,
		Logger:     g.log.With("component", "wireguard"),
	})
	if err != nil {
		return nil, true, err
	}
	g.dev.Store(nd)
	g.log.Info("wireguard device up", "address", self.Address, "listen_port", nd.ListenPort(), "public_key", g.pub.String(), "backend", nd.Backend())
	return nd, true, nil
}

// movesStreams reports whether a tunnel of old is gone from next or served
// by another agent address there.
func movesStreams(old, next *routeTable) bool {
	for name, r := range old.tunnels {
		n, ok := next.tunnels[name]
		if !ok || n.agentAddr != r.agentAddr {
			return true
		}
	}
	return false
}

// publishRoutesLocked updates what Status reports as served. Callers hold
// g.mu.
func (g *Gateway) publishRoutesLocked() {
	bound := make(map[int]bool, len(g.tcp))
	for p := range g.tcp {
		bound[p] = true
	}
	routes := servedRoutes(g.table.Load(), bound)
	g.routes.Store(&routes)
}

// Status reports the gateway's WireGuard peers, the routes it serves (the
// hostname of each enabled http route and "tcp/<port>" of each bound tcp
// route) and the latest probe of each agent. Version and Revision are left
// for the caller, which knows them. It is cheap enough for every
// heartbeat.
func (g *Gateway) Status() bridge.NodeStatus {
	st := bridge.NodeStatus{DataPath: string(g.cfg.WireGuardBackend)}
	names := *g.names.Load()
	if dev := g.dev.Load(); dev != nil {
		if peers, err := dev.Peers(); err == nil {
			for _, p := range peers {
				ps := bridge.PeerStatus{
					Name:          names[p.PublicKey],
					LastHandshake: p.LastHandshake,
					RxBytes:       int64(p.RxBytes),
					TxBytes:       int64(p.TxBytes),
				}
				if ps.Name == "" {
					ps.Name = p.PublicKey.Short()
				}
				if p.Endpoint.IsValid() {
					ps.Endpoint = p.Endpoint.String()
				}
				st.Peers = append(st.Peers, ps)
			}
		}
	}
	st.Routes = slices.Clone(*g.routes.Load())
	current := map[string]bool{}
	for _, t := range *g.targets.Load() {
		current[t.agent] = true
	}
	g.probeMu.Lock()
	defer g.probeMu.Unlock()
	for _, p := range g.probes {
		if current[p.Agent] {
			st.Probes = append(st.Probes, p)
		}
	}
	return st
}

// activity counts work in progress and lets a caller wait until there is
// none.
type activity struct {
	// mu guards n and idle.
	mu sync.Mutex
	n  int
	// idle is closed while n is zero; replaced when n leaves zero.
	idle chan struct{}
}

func (a *activity) add(delta int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.idle == nil {
		a.idle = make(chan struct{})
		close(a.idle)
	}
	if a.n == 0 && delta > 0 {
		a.idle = make(chan struct{})
	}
	a.n += delta
	if a.n == 0 {
		close(a.idle)
	}
}

func (a *activity) done() { a.add(-1) }

// wait returns true once nothing is in progress, false if ctx ends first.
func (a *activity) wait(ctx context.Context) bool {
	a.mu.Lock()
	idle := a.idle
	a.mu.Unlock()
	if idle == nil {
		return true
	}
	select {
	case <-idle:
		return true
	case <-ctx.Done():
		return false
	}
}
