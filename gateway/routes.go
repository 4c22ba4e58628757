package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// Route protocols, as bridge.Route.Protocol spells them.
const (
	protocolHTTP = "http"
	protocolTCP  = "tcp"
)

// route is one tunnel as the gateway serves it. Never modified once it is
// in a table.
type route struct {
	key       string // the slice item's key, for messages
	tunnel    string
	hostname  string // lower-case, for http routes
	protocol  string
	port      int // public port, for tcp routes
	agent     string
	agentAddr netip.Addr // invalid while the agent has no address
	enabled   bool
}

// routeTable is everything the request path needs, built whole from one
// slice and then only read: Apply swaps in a new table instead of changing
// this one.
type routeTable struct {
	// gatewayDisabled is true when the slice's self is disabled: the
	// gateway keeps its device but serves no route.
	gatewayDisabled bool
	// hosts holds the http routes by hostname.
	hosts map[string]*route
	// tunnels holds every route by tunnel name, for the dialer.
	tunnels map[string]*route
	// ports holds the tcp routes by public port.
	ports map[int]*route
}

func emptyTable() *routeTable {
	return &routeTable{hosts: map[string]*route{}, tunnels: map[string]*route{}, ports: map[int]*route{}}
}

// equal reports whether t and o route every request the same way.
func (t *routeTable) equal(o *routeTable) bool {
	if t.gatewayDisabled != o.gatewayDisabled || len(t.tunnels) != len(o.tunnels) ||
		len(t.hosts) != len(o.hosts) || len(t.ports) != len(o.ports) {
		return false
	}
	for name, r := range t.tunnels {
		or, ok := o.tunnels[name]
		if !ok || *r != *or {
			return false
		}
	}
	return true
}

// lookup returns the http route of host: its own, else the wildcard
// route of its parent ("*.example.com" serves a.example.com, not
// a.b.example.com nor example.com).
func (t *routeTable) lookup(host string) (*route, bool) {
	if r, ok := t.hosts[host]; ok {
		return r, true
	}
	if _, parent, ok := strings.Cut(host, "."); ok && strings.Contains(parent, ".") {
		r, ok := t.hosts["*."+parent]
		return r, ok
	}
	return nil, false
}

// desired is what one slice asks of the gateway, validated.
type desired struct {
	self    *bridge.Self
	peers   []wgnet.Peer
	names   map[wgnet.Key]string // peer name by public key
	targets []probeTarget        // every agent peer, for the probes
	table   *routeTable
}

// parseSlice turns a slice into what the gateway installs. An item that
// cannot be installed (a bad key, a duplicate hostname or port, an invalid
// tunnel name) is left out and reported in the error; everything else is
// still returned, so one bad item never takes the other routes down.
func parseSlice(s bridge.Slice, own wgnet.Key) (desired, error) {
	var errs []error
	d := desired{table: emptyTable(), names: map[wgnet.Key]string{}}
	// Items in key order, so that of two items claiming one hostname, port
	// or address the same one wins every time.
	items := s.Items()

	for _, it := range items {
		if it.Key == "self" && it.Self != nil {
			self := *it.Self
			self.Address = self.Address.Unmap()
			if !self.Address.IsValid() {
				errs = append(errs, fmt.Errorf("self: no overlay address: %w", api.ErrInvalid))
				continue
			}
			d.self = &self
			d.table.gatewayDisabled = !self.Enabled
		}
	}

	owners := map[netip.Addr]string{}
	for _, it := range items {
		p := it.Peer
		if p == nil || !strings.HasPrefix(it.Key, "peer/") {
			continue
		}
		key, err := wgnet.ParseKey(p.PublicKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", it.Key, err))
			continue
		}
		addr := p.Address.Unmap()
		switch {
		case !addr.IsValid():
			errs = append(errs, fmt.Errorf("%s: no overlay address: %w", it.Key, api.ErrInvalid))
			continue
		case d.self != nil && addr == d.self.Address:
			errs = append(errs, fmt.Errorf("%s: address %s is the gateway's own: %w", it.Key, addr, api.ErrInvalid))
			continue
		case key.IsZero():
			errs = append(errs, fmt.Errorf("%s: zero public key: %w", it.Key, api.ErrInvalid))
			continue
		case key == own:
			errs = append(errs, fmt.Errorf("%s: public key is the gateway's own: %w", it.Key, api.ErrInvalid))
			continue
		}
		if other, dup := d.names[key]; dup {
			errs = append(errs, fmt.Errorf("%s: public key already used by peer %s: %w", it.Key, other, api.ErrInvalid))
			continue
		}
		if other, dup := owners[addr]; dup {
			errs = append(errs, fmt.Errorf("%s: address %s already used by peer %s: %w", it.Key, addr, other, api.ErrInvalid))
			continue
		}
		owners[addr] = p.Name
		d.names[key] = p.Name
		// An agent is behind NAT: no endpoint (WireGuard learns it from the
		// agent's first packet) and no keepalive (the agent sends them).
		d.peers = append(d.peers, wgnet.Peer{
			PublicKey:  key,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(addr, addr.BitLen())},
		})
		d.targets = append(d.targets, probeTarget{agent: p.Name, addr: addr})
	}

	for _, it := range items {
		if it.Route == nil {
			continue
		}
		r, err := newRoute(it.Key, *it.Route)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if other, dup := d.table.tunnels[r.tunnel]; dup {
			errs = append(errs, fmt.Errorf("%s: tunnel %s is already routed by %s: %w", it.Key, r.tunnel, other.key, api.ErrConflict))
			continue
		}
		switch r.protocol {
		case protocolHTTP:
			if other, dup := d.table.hosts[r.hostname]; dup {
				errs = append(errs, fmt.Errorf("%s: hostname %s is already routed by %s: %w", it.Key, r.hostname, other.key, api.ErrConflict))
				continue
			}
			d.table.hosts[r.hostname] = r
		case protocolTCP:
			if other, dup := d.table.ports[r.port]; dup {
				errs = append(errs, fmt.Errorf("%s: public port %d is already routed by %s: %w", it.Key, r.port, other.key, api.ErrConflict))
				continue
			}
			d.table.ports[r.port] = r
		}
		d.table.tunnels[r.tunnel] = r
	}
	return d, errors.Join(errs...)
}

func newRoute(key string, br bridge.Route) (*route, error) {
	if err := api.ValidateName(br.Tunnel); err != nil {
		return nil, fmt.Errorf("%s: tunnel name: %w", key, err)
	}
	r := &route{
		key:       key,
		tunnel:    br.Tunnel,
		hostname:  normalizeHost(br.Hostname),
		protocol:  br.Protocol,
		agent:     br.Agent,
		agentAddr: br.AgentAddress.Unmap(),
		enabled:   br.Enabled,
	}
	switch br.Protocol {
	case protocolHTTP, "":
		r.protocol = protocolHTTP
		if r.hostname == "" {
			return nil, fmt.Errorf("%s: http route without a hostname: %w", key, api.ErrInvalid)
		}
	case protocolTCP:
		if br.PublicPort < 1 || br.PublicPort > 65535 {
			return nil, fmt.Errorf("%s: tcp route public port %d out of range 1..65535: %w", key, br.PublicPort, api.ErrInvalid)
		}
		r.port = br.PublicPort
	default:
		return nil, fmt.Errorf("%s: protocol %q not supported: %w", key, br.Protocol, api.ErrInvalid)
	}
	return r, nil
}

// normalizeHost turns a Host header, an SNI name or a route's hostname into
// the form routes are looked up by: no port, no brackets, no trailing dot,
// lower case. A port that is not a number stays, so such a Host matches no
// route.
func normalizeHost(h string) string {
	if host, port, err := net.SplitHostPort(h); err == nil && strings.Trim(port, "0123456789") == "" {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// servedRoutes lists what the gateway serves, as Status reports it: the
// hostname of every enabled http route, and "tcp/<port>" for every tcp
// route whose port is bound.
func servedRoutes(t *routeTable, bound map[int]bool) []string {
	if t.gatewayDisabled {
		return nil
	}
	var out []string
	for h, r := range t.hosts {
		if r.enabled {
			out = append(out, h)
		}
	}
	for p, r := range t.ports {
		if r.enabled && bound[p] {
			out = append(out, "tcp/"+strconv.Itoa(p))
		}
	}
	sort.Strings(out)
	return slices.Clip(out)
}
