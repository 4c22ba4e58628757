package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// Key prefixes of the slice items an agent acts on; others (a gateway's
// routes) are not for it and are ignored.
const (
	selfKey       = "self"
	peerPrefix    = "peer/"
	forwardPrefix = "forward/"
)

// desired is the configuration derived from one slice. build makes it
// whole and nothing modifies it afterwards, so streams and Status read it
// without copying.
type desired struct {
	// hasSelf is false for a slice without "self": no device then.
	hasSelf bool
	self    bridge.Self
	// peers are the gateways to give the device, sorted by slice key.
	peers []wgnet.Peer
	// peerNames maps a peer's key back to its gateway name for Status.
	peerNames map[wgnet.Key]string
	// endpoints are the gateways' endpoints as configured and as
	// resolved, so the next build can keep what it can.
	endpoints map[wgnet.Key]peerEndpoint
	// gateways are the overlay addresses of the peers: streams come only
	// from these.
	gateways map[netip.Addr]bool
	// skipped are the gateways left out of peers, with why.
	skipped []skippedPeer
	// stale are gateways whose endpoint did not resolve this time and
	// that keep the address resolved before, with why.
	stale []skippedPeer
	// forwards are the tunnels by name, as the preamble names them.
	forwards map[string]forward
}

// peerEndpoint is a gateway's endpoint as the slice gives it and the
// address it resolved to.
type peerEndpoint struct {
	configured string
	resolved   netip.AddrPort
}

// skippedPeer is a gateway of the slice that the device does not get.
type skippedPeer struct {
	name     string
	endpoint string
	reason   string
}

// forward is one tunnel as the agent serves it. It is comparable, so a
// stream can tell whether the tunnel it was opened for is still served the
// same way.
type forward struct {
	tunnel string
	// scheme is "http", "https" or "tcp".
	scheme string
	// address is the host:port dialled.
	address string
	// serverName is the name an https target's certificate is checked
	// against (its host).
	serverName string
	insecure   bool
	enabled    bool
	// invalid explains why the target cannot be used; empty when it can.
	invalid string
}

// active reports whether streams for f are accepted: the tunnel and the
// agent are both enabled.
func (d *desired) active(f forward) bool {
	return d.hasSelf && d.self.Enabled && f.enabled
}

// serves reports whether a stream opened for f may go on under d: the
// tunnel is still there, served the same way, and active.
func (d *desired) serves(f forward) bool {
	cur, ok := d.forwards[f.tunnel]
	return ok && cur == f && d.active(cur) && cur.invalid == ""
}

// build derives the configuration of s. Gateway endpoints given as host
// names are resolved once per build; a gateway whose endpoint keeps the
// address it had in prev keeps that address even if the name now resolves
// to several, so a round-robin answer does not reset its session. Only a
// self item that cannot be used fails the build; single bad peers and
// forwards are left out or marked invalid.
func (a *Agent) build(ctx context.Context, s bridge.Slice, prev *desired) (*desired, error) {
	d := &desired{
		peerNames: make(map[wgnet.Key]string),
		endpoints: make(map[wgnet.Key]peerEndpoint),
		gateways:  make(map[netip.Addr]bool),
		forwards:  make(map[string]forward),
	}
	if it, ok := s[selfKey]; ok {
		if it.Self == nil {
			return nil, fmt.Errorf("item %q carries no self: %w", selfKey, api.ErrInvalid)
		}
		if !it.Self.Address.IsValid() {
			return nil, fmt.Errorf("self %q has no overlay address: %w", it.Self.Name, api.ErrInvalid)
		}
		d.hasSelf = true
		d.self = *it.Self
		d.self.Address = d.self.Address.Unmap()
	}

	keepalive := DefaultKeepalive
	if ks := d.self.KeepaliveSeconds; ks > 0 {
		keepalive = time.Duration(min(ks, 65535)) * time.Second
	}
	var prevEndpoint map[wgnet.Key]peerEndpoint
	if prev != nil {
		prevEndpoint = prev.endpoints
	}
	own := a.PublicKey()
	lookups := make(map[string]lookup)
	addrOwner := make(map[netip.Addr]string)

	for _, it := range s.Items() {
		switch {
		case strings.HasPrefix(it.Key, peerPrefix):
			name := strings.TrimPrefix(it.Key, peerPrefix)
			if it.Peer == nil {
				d.skipped = append(d.skipped, skippedPeer{name: name, reason: "the item carries no peer"})
				continue
			}
			p := *it.Peer
			if p.Name != "" {
				name = p.Name
			}
			skip := func(reason string) {
				d.skipped = append(d.skipped, skippedPeer{name: name, endpoint: p.Endpoint, reason: reason})
			}
			key, err := wgnet.ParseKey(p.PublicKey)
			switch {
			case err != nil:
				skip(err.Error())
				continue
			case key == own:
				skip("its public key is this agent's own")
				continue
			case !p.Address.IsValid():
				skip("it has no overlay address")
				continue
			case d.hasSelf && p.Address.Unmap() == d.self.Address:
				skip("its overlay address is this agent's own")
				continue
			case p.Endpoint == "":
				skip("it has no public endpoint yet")
				continue
			}
			if _, dup := d.peerNames[key]; dup {
				skip("its public key is also gateway " + d.peerNames[key] + "'s")
				continue
			}
			addr := p.Address.Unmap()
			if other, dup := addrOwner[addr]; dup {
				skip("its overlay address is also gateway " + other + "'s")
				continue
			}
			last := prevEndpoint[key]
			ep, err := a.resolveEndpoint(ctx, p.Endpoint, last.resolved, lookups)
			if err != nil {
				if last.configured != p.Endpoint || !last.resolved.IsValid() {
					skip(err.Error())
					continue
				}
				// A lookup that fails once (a DNS hiccup) must not take a
				// working gateway away: keep the address it had.
				d.stale = append(d.stale, skippedPeer{name: name, endpoint: p.Endpoint, reason: err.Error()})
				ep = last.resolved
			}
			addrOwner[addr] = name
			d.peerNames[key] = name
			d.endpoints[key] = peerEndpoint{configured: p.Endpoint, resolved: ep}
			d.gateways[addr] = true
			d.peers = append(d.peers, wgnet.Peer{
				PublicKey:           key,
				Endpoint:            ep,
				AllowedIPs:          []netip.Prefix{netip.PrefixFrom(addr, addr.BitLen())},
				PersistentKeepalive: keepalive,
			})

		case strings.HasPrefix(it.Key, forwardPrefix):
			if it.Forward == nil {
				a.log.Warn("slice item carries no forward; ignored", "key", it.Key)
				continue
			}
			f := parseForward(*it.Forward)
			if f.tunnel == "" {
				f.tunnel = strings.TrimPrefix(it.Key, forwardPrefix)
			}
			d.forwards[f.tunnel] = f
		}
	}
	return d, nil
}

// lookup is one host name's resolution, kept for the rest of a build.
type lookup struct {
	addrs []netip.Addr
	err   error
}

// resolveEndpoint turns a gateway's "host:port" into an address. A host
// name is resolved at most once per build (lookups); if the answer still
// contains the address sticky had, that address is kept; otherwise the
// first IPv4 address is preferred, since many home networks route no IPv6.
func (a *Agent) resolveEndpoint(ctx context.Context, endpoint string, sticky netip.AddrPort, lookups map[string]lookup) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(endpoint)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q is not host:port", endpoint)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: port %q is not between 1 and 65535", endpoint, portStr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("endpoint %q: zoned addresses are not supported", endpoint)
		}
		return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
	}
	l, ok := lookups[host]
	if !ok {
		l.addrs, l.err = a.cfg.Resolver.LookupNetIP(ctx, "ip", host)
		for i := range l.addrs {
			l.addrs[i] = l.addrs[i].Unmap()
		}
		if l.err == nil && len(l.addrs) == 0 {
			l.err = fmt.Errorf("no address for %s", host)
		}
		lookups[host] = l
	}
	if l.err != nil {
		return netip.AddrPort{}, fmt.Errorf("resolving endpoint %q: %w", endpoint, l.err)
	}
	if sticky.IsValid() && sticky.Port() == uint16(port) {
		for _, ip := range l.addrs {
			if ip == sticky.Addr() {
				return sticky, nil
			}
		}
	}
	pick := l.addrs[0]
	for _, ip := range l.addrs {
		if ip.Is4() {
			pick = ip
			break
		}
	}
	return netip.AddrPortFrom(pick, uint16(port)), nil
}

// parseForward reads a tunnel's target. A target that does not parse is
// kept, marked invalid, so its streams are refused with the reason and
// Status shows it.
func parseForward(bf bridge.Forward) forward {
	f := forward{tunnel: bf.Tunnel, insecure: bf.InsecureSkipVerify, enabled: bf.Enabled}
	if err := api.ValidateTarget(bf.Target); err != nil {
		f.invalid = "invalid target: " + err.Error()
		return f
	}
	u, err := url.Parse(bf.Target)
	if err != nil {
		f.invalid = "invalid target: " + err.Error()
		return f
	}
	f.scheme = u.Scheme
	host, port := u.Hostname(), u.Port()
	if port == "" {
		switch u.Scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	f.address = net.JoinHostPort(host, port)
	f.serverName = host
	return f
}
