package wgnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/kakuremichi/kakuremichi/api"
)

// DefaultMTU is the overlay MTU when Config.MTU is zero: WireGuard's usual
// 1420, which fits its 80 bytes of overhead (over IPv6) into a 1500-byte
// path.
const DefaultMTU = 1420

// MTU bounds: IPv6's minimum link MTU, and the largest UDP payload minus
// WireGuard's overhead.
const (
	minMTU = 1280
	maxMTU = 65535 - 80
)

// Backend is how a Device's TCP connections reach WireGuard.
type Backend string

const (
	// BackendNetstack runs TCP/IP in the process (gVisor's netstack, with
	// this package's segmentation offload): no privilege, no interface,
	// nothing visible to the host. The default.
	BackendNetstack Backend = "netstack"
	// BackendTUN uses the kernel's TCP/IP through a TUN interface, with
	// the segmentation offload wireguard-go negotiates with the kernel.
	// Linux only; needs CAP_NET_ADMIN and /dev/net/tun. For gateways that
	// may use the kernel.
	BackendTUN Backend = "tun"
)

// DefaultInterface is the TUN interface BackendTUN creates unless told
// another name.
const DefaultInterface = "kakuremichi0"

// ParseBackend checks a backend name as given on a command line.
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(s); b {
	case "", BackendNetstack:
		return BackendNetstack, nil
	case BackendTUN:
		return b, nil
	}
	return "", fmt.Errorf("wireguard backend %q: want %q or %q: %w", s, BackendNetstack, BackendTUN, api.ErrInvalid)
}

// ErrNoRoute means no peer's AllowedIPs contain the address dialled, so the
// packets would have nowhere to go: DialContext says so at once instead of
// timing out.
var ErrNoRoute = errors.New("no peer routes this address")

// Config configures a Device.
type Config struct {
	// PrivateKey is this node's WireGuard identity. Required: the zero key
	// is rejected.
	PrivateKey PrivateKey

	// Address is this node's overlay address, such as 100.64.0.5, and the
	// only address the netstack answers on. Required.
	Address netip.Addr

	// ListenPort is the UDP port WireGuard binds on every local address
	// (IPv4 and IPv6). Zero picks a random free port: right for agents,
	// which only dial out. Gateways pass their --wireguard-listen port.
	// wireguard-go's standard bind cannot be restricted to one local
	// address, so there is no listen-address setting.
	ListenPort int

	// MTU is the overlay MTU. Zero means DefaultMTU; otherwise it must lie
	// within 1280..65455.
	MTU int

	// Logger receives wireguard-go's messages (see DeviceLogger) and a
	// debug line for every peer change. Nil discards them.
	Logger *slog.Logger

	// Backend is the data path: BackendNetstack (the default) or
	// BackendTUN.
	Backend Backend

	// Interface names the TUN interface of BackendTUN; empty means
	// DefaultInterface. At most 15 bytes.
	Interface string

	// stockNetstack runs wireguard-go's own netstack adapter instead of
	// this package's link: the baseline the benchmarks measure against in
	// the same run.
	stockNetstack bool
	// noAckDelay sends every bare acknowledgement at once: the baseline
	// the benchmarks measure held acknowledgements (ack.go) against.
	noAckDelay bool
	// stdBind sends and receives through wireguard-go's standard UDP bind
	// instead of this package's (bind_linux.go): the benchmarks' baseline.
	stdBind bool
}

// Peer is the desired configuration of one WireGuard peer.
type Peer struct {
	// PublicKey names the peer. Required, unique among the peers, and not
	// this device's own key.
	PublicKey Key

	// Endpoint is where to send the peer's packets. Zero for peers this
	// node never dials first (a gateway's agents, behind NAT): their
	// endpoint is learned from their first authenticated packet. Whether
	// set or not, the device follows a peer that roams (its packets arrive
	// from elsewhere), and a resync does not undo that: SetPeers writes an
	// endpoint only when the desired one changes, and then recreates the
	// peer so that a fresh handshake starts at once (the old session most
	// likely belonged to a process that is gone).
	Endpoint netip.AddrPort

	// AllowedIPs are the addresses routed to the peer and the only source
	// addresses accepted from it, exactly as given (host bits are
	// cleared). Nil routes nothing to the peer. No prefix may be given to
	// two peers.
	AllowedIPs []netip.Prefix

	// PersistentKeepalive sends a keepalive at this interval so that a NAT
	// in between keeps its mapping and the peer can always reach us. Zero
	// turns it off; otherwise whole seconds from 1 s to 65535 s. Agents use
	// it towards gateways (15 s is typical); gateways leave it off.
	PersistentKeepalive time.Duration
}

// PeerStatus is one peer as the running device reports it.
type PeerStatus struct {
	// PublicKey names the peer.
	PublicKey Key
	// Endpoint is where the device currently sends the peer's packets:
	// configured or learned from the peer. Zero if neither yet.
	Endpoint netip.AddrPort
	// AllowedIPs are the peer's prefixes, sorted.
	AllowedIPs []netip.Prefix
	// PersistentKeepalive is the keepalive interval; zero is off.
	PersistentKeepalive time.Duration
	// LastHandshake is when the last handshake completed; zero if never.
	LastHandshake time.Time
	// RxBytes and TxBytes count the bytes received from and sent to the
	// peer (WireGuard messages, so they include handshakes and overhead).
	RxBytes, TxBytes uint64
}

// Device is a userspace WireGuard device on a netstack. Its methods are safe
// for concurrent use. Close releases it.
type Device struct {
	log  *slog.Logger
	addr netip.Addr
	pub  Key
	port uint16
	wg   *device.Device
	net  overlayStack
	// kernel is the TUN interface of BackendTUN; nil for netstack.
	kernel  *kernelStack
	backend Backend

	// mu makes SetPeers' read of the live state, its diff and its write one
	// step, and guards written.
	mu sync.Mutex
	// written is the endpoint SetPeers last wrote for each peer (zero if it
	// wrote none); see peerDelta for why it is kept.
	written map[Key]netip.AddrPort

	// routes holds every peer's AllowedIPs as of the last SetPeers, for
	// DialContext's no-route answer. Swapped whole, never mutated.
	routes atomic.Pointer[[]netip.Prefix]

	closeOnce sync.Once
	closed    atomic.Bool
}

// New creates the device, binds its UDP port and brings it up with no
// peers.
func New(cfg Config) (*Device, error) {
	if cfg.PrivateKey.IsZero() {
		return nil, fmt.Errorf("creating wireguard device: private key is required: %w", api.ErrInvalid)
	}
	addr := cfg.Address.Unmap()
	if !addr.IsValid() {
		return nil, fmt.Errorf("creating wireguard device: overlay address is required: %w", api.ErrInvalid)
	}
	if cfg.ListenPort < 0 || cfg.ListenPort > 65535 {
		return nil, fmt.Errorf("creating wireguard device: listen port %d out of range 0..65535: %w", cfg.ListenPort, api.ErrInvalid)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < minMTU || mtu > maxMTU {
		return nil, fmt.Errorf("creating wireguard device: MTU %d out of range %d..%d: %w", mtu, minMTU, maxMTU, api.ErrInvalid)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	backend, err := ParseBackend(string(cfg.Backend))
	if err != nil {
		return nil, fmt.Errorf("creating wireguard device: %w", err)
	}
	if len(cfg.Interface) > 15 {
		return nil, fmt.Errorf("creating wireguard device: interface name %q longer than 15 bytes: %w", cfg.Interface, api.ErrInvalid)
	}
	var tnet overlayStack
	var tun tun.Device
	var kernel *kernelStack
	switch {
	case cfg.stockNetstack:
		tnet, tun, err = newStockStack(addr, mtu)
	case backend == BackendTUN:
		kernel, tun, err = newKernelStack(cfg.Interface, addr, mtu)
		tnet = kernel
	default:
		delay := ackDelay
		if cfg.noAckDelay {
			delay = 0
		}
		tnet, tun, err = newNetStack(addr, mtu, delay)
	}
	if err != nil {
		return nil, fmt.Errorf("creating wireguard device: %w", err)
	}
	bind := newBind(log)
	if cfg.stdBind {
		bind = conn.NewDefaultBind()
	}
	// Where this package's link feeds this package's bind, what is inside
	// wireguard-go between them is bounded (flight.go).
	if ns, ok := tnet.(*netStack); ok {
		if ub, ok := bind.(*udpBind); ok {
			out, in := newFlight(flightMax, ns.link.stopped), newFlight(flightMax, ns.link.stopped)
			ns.link.outFlight, ub.outFlight = out, out
			ns.link.inFlight, ub.inFlight = in, in
		}
	}
	wg := device.NewDevice(tun, bind, DeviceLogger(log))
	d := &Device{
		log:     log,
		addr:    addr,
		pub:     cfg.PrivateKey.PublicKey(),
		wg:      wg,
		net:     tnet,
		kernel:  kernel,
		backend: backend,
		written: make(map[Key]netip.AddrPort),
	}
	d.routes.Store(&[]netip.Prefix{})

	if err := wg.IpcSet("private_key=" + cfg.PrivateKey.hex() + "\n"); err != nil {
		wg.Close()
		return nil, fmt.Errorf("creating wireguard device: %w", redactedError{err})
	}
	// The device may already be up (its TUN reports so at once), and then
	// setting the port binds it: either step fails the same way.
	err = wg.IpcSet("listen_port=" + strconv.Itoa(cfg.ListenPort) + "\n")
	if err == nil {
		err = wg.Up()
	}
	if err != nil {
		wg.Close()
		return nil, fmt.Errorf("creating wireguard device: binding UDP port %d: %w", cfg.ListenPort, redactedError{err})
	}
	st, err := d.state()
	if err != nil {
		wg.Close()
		return nil, fmt.Errorf("creating wireguard device: %w", err)
	}
	d.port = st.listenPort
	log.Debug("wireguard device up", "address", addr, "public_key", d.pub.Short(), "listen_port", d.port, "mtu", mtu, "backend", backend)
	return d, nil
}

// Address returns this node's overlay address.
func (d *Device) Address() netip.Addr { return d.addr }

// Backend returns the data path the device runs on.
func (d *Device) Backend() Backend { return d.backend }

// PublicKey returns this node's public key.
func (d *Device) PublicKey() Key { return d.pub }

// ListenPort returns the UDP port the device is bound to.
func (d *Device) ListenPort() int { return int(d.port) }

func (d *Device) state() (deviceState, error) {
	s, err := d.wg.IpcGet()
	if err != nil {
		return deviceState{}, fmt.Errorf("reading device state: %w", redactedError{err})
	}
	return parseUAPI(s)
}

// SetPeers makes the device's peers exactly peers: it reads the live
// configuration, diffs it against peers and writes only the difference,
// adding, updating and removing peers. Nothing else (the key, the port) is
// touched, and a peer that did not change keeps its session and traffic.
// It reports whether anything changed; "no change" is the normal outcome of
// a periodic resync. Invalid peers are rejected as a whole (errors.Is
// api.ErrInvalid) before anything is written. If the write itself fails,
// changed is true because part of it may have been applied; calling again
// converges.
func (d *Device) SetPeers(peers []Peer) (changed bool, err error) {
	if d.closed.Load() {
		return false, fmt.Errorf("setting wireguard peers: %w", net.ErrClosed)
	}
	desired, err := normalisePeers(peers, d.pub)
	if err != nil {
		return false, fmt.Errorf("setting wireguard peers: %w", err)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.state()
	if err != nil {
		return false, fmt.Errorf("setting wireguard peers: %w", err)
	}
	text, summary := peerDelta(st.peers, desired, d.written)
	if text == "" {
		return false, nil
	}
	setErr := d.wg.IpcSet(text)
	// Whatever part was applied, routes must describe the device as it is.
	routes := d.refreshRoutes()
	if d.kernel != nil {
		if err := d.kernel.syncRoutes(routes); err != nil {
			setErr = errors.Join(setErr, err)
		}
	}
	if setErr != nil {
		// written is left as it was, so the next call rewrites endpoints.
		return true, fmt.Errorf("setting wireguard peers: %w", redactedError{setErr})
	}
	clear(d.written)
	for _, p := range desired {
		d.written[p.PublicKey] = p.Endpoint
	}
	for _, s := range summary {
		d.log.Debug("wireguard peer changed", "change", s)
	}
	return true, nil
}

// refreshRoutes records every peer's AllowedIPs as the device runs them,
// and returns them.
func (d *Device) refreshRoutes() []netip.Prefix {
	st, err := d.state()
	if err != nil {
		d.log.Warn("wireguard: refreshing routes", "err", err)
		return *d.routes.Load()
	}
	var routes []netip.Prefix
	for _, p := range st.peers {
		routes = append(routes, p.AllowedIPs...)
	}
	d.routes.Store(&routes)
	return routes
}

// normalisePeers validates peers and returns a copy sorted by key, with
// prefixes masked, sorted and deduplicated and endpoints unmapped.
func normalisePeers(peers []Peer, self Key) ([]Peer, error) {
	out := make([]Peer, 0, len(peers))
	seenKey := make(map[Key]int, len(peers))
	owner := make(map[netip.Prefix]int)
	for i, p := range peers {
		field := fmt.Sprintf("peers[%d]", i)
		switch {
		case p.PublicKey.IsZero():
			return nil, fmt.Errorf("%s.publicKey: required: %w", field, api.ErrInvalid)
		case p.PublicKey == self:
			return nil, fmt.Errorf("%s.publicKey: is this device's own key: %w", field, api.ErrInvalid)
		}
		if j, dup := seenKey[p.PublicKey]; dup {
			return nil, fmt.Errorf("%s.publicKey: same as peers[%d]: %w", field, j, api.ErrInvalid)
		}
		seenKey[p.PublicKey] = i
		if p.Endpoint.IsValid() {
			p.Endpoint = netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port())
			if p.Endpoint.Port() == 0 {
				return nil, fmt.Errorf("%s.endpoint: port 0: %w", field, api.ErrInvalid)
			}
		}
		ka := p.PersistentKeepalive
		if ka < 0 || ka > 65535*time.Second || ka%time.Second != 0 {
			return nil, fmt.Errorf("%s.persistentKeepalive: %v is not whole seconds within 0..65535s: %w", field, ka, api.ErrInvalid)
		}
		ips := make([]netip.Prefix, 0, len(p.AllowedIPs))
		for k, pfx := range p.AllowedIPs {
			if !pfx.IsValid() {
				return nil, fmt.Errorf("%s.allowedIPs[%d]: invalid prefix: %w", field, k, api.ErrInvalid)
			}
			pfx = pfx.Masked()
			if j, taken := owner[pfx]; taken && j != i {
				return nil, fmt.Errorf("%s.allowedIPs[%d]: %s is already given to peers[%d]: %w", field, k, pfx, j, api.ErrInvalid)
			}
			owner[pfx] = i
			ips = append(ips, pfx)
		}
		sortPrefixes(ips)
		p.AllowedIPs = slices.Compact(ips)
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Peer) int { return cmpKey(a.PublicKey, b.PublicKey) })
	return out, nil
}

// Peers reports the device's peers as it runs them, sorted by key.
func (d *Device) Peers() ([]PeerStatus, error) {
	if d.closed.Load() {
		return nil, fmt.Errorf("listing wireguard peers: %w", net.ErrClosed)
	}
	st, err := d.state()
	if err != nil {
		return nil, fmt.Errorf("listing wireguard peers: %w", err)
	}
	return st.peers, nil
}

// DialContext opens a TCP connection through the tunnel. network is "tcp",
// "tcp4" or "tcp6"; addr is a literal "ip:port" (the overlay has no DNS).
// An address no peer routes fails at once with ErrNoRoute; one whose peer
// does not answer fails when ctx ends.
func (d *Device) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.closed.Load() {
		return nil, fmt.Errorf("dialing %s through the tunnel: %w", addr, net.ErrClosed)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %q through the tunnel: want a literal ip:port: %w", addr, api.ErrInvalid)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if err := checkNetwork(network, ap.Addr()); err != nil {
		return nil, fmt.Errorf("dialing %s through the tunnel: %w", ap, err)
	}
	if !d.routed(ap.Addr()) {
		return nil, fmt.Errorf("dialing %s through the tunnel: %w", ap, ErrNoRoute)
	}
	c, err := d.net.dialTCP(ctx, ap)
	if err != nil {
		return nil, fmt.Errorf("dialing %s through the tunnel: %w", ap, err)
	}
	return c, nil
}

func (d *Device) routed(a netip.Addr) bool {
	for _, p := range *d.routes.Load() {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Listen accepts TCP connections on the overlay address. network is "tcp",
// "tcp4" or "tcp6"; addr is ":port" or "overlay-address:port" (port 0 picks
// one). Only peers whose AllowedIPs cover their source can connect.
func (d *Device) Listen(network, addr string) (net.Listener, error) {
	if d.closed.Load() {
		return nil, fmt.Errorf("listening on %s in the tunnel: %w", addr, net.ErrClosed)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %q in the tunnel: %w: %w", addr, err, api.ErrInvalid)
	}
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil || a.Unmap() != d.addr {
			return nil, fmt.Errorf("listening on %q in the tunnel: host must be empty or %s: %w", addr, d.addr, api.ErrInvalid)
		}
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("listening on %q in the tunnel: bad port: %w", addr, api.ErrInvalid)
	}
	if err := checkNetwork(network, d.addr); err != nil {
		return nil, fmt.Errorf("listening on %q in the tunnel: %w", addr, err)
	}
	l, err := d.net.listenTCP(netip.AddrPortFrom(d.addr, uint16(pn)))
	if err != nil {
		return nil, fmt.Errorf("listening on %q in the tunnel: %w", addr, err)
	}
	return l, nil
}

func checkNetwork(network string, a netip.Addr) error {
	switch {
	case network == "tcp", network == "tcp4" && a.Is4(), network == "tcp6" && a.Is6():
		return nil
	case strings.HasPrefix(network, "tcp"):
		return fmt.Errorf("address %s is not %s: %w", a, network, api.ErrInvalid)
	default:
		return fmt.Errorf("network %q not supported, only tcp: %w", network, api.ErrInvalid)
	}
}

// Close shuts the device down: its UDP socket, its peers and the netstack
// with every connection and listener on it; blocked Accepts and Reads
// return errors. wireguard-go's goroutines end with it. It is safe to call
// more than once.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		d.wg.Close()
		d.log.Debug("wireguard device closed", "address", d.addr)
	})
	return nil
}
