package bridgeserver

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// State is the part of the desired state slices are computed from, read
// from informer caches. Objects are shared with the caches: read only.
type State struct {
	Agents   []api.Object
	Gateways []api.Object
	Tunnels  []api.Object
	// Certificates are *api.CertificateKeyPair, delivered to gateways
	// only.
	Certificates []api.Object
	// Challenges are *api.ACMEChallenge, pending HTTP-01 challenges,
	// delivered to gateways only.
	Challenges []api.Object
	// KeepaliveSeconds is the WireGuard keepalive agents use.
	KeepaliveSeconds int
}

func overlayAddr(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a
}

// older reports whether a was created before b (then by name), the rule
// that decides which tunnel owns a contested hostname or port.
func older(a, b api.Object) bool {
	ma, mb := a.GetMeta(), b.GetMeta()
	if !ma.CreationTimestamp.Equal(mb.CreationTimestamp) {
		return ma.CreationTimestamp.Before(mb.CreationTimestamp)
	}
	return ma.Name < mb.Name
}

// owners returns the tunnels that own their hostname and, for tcp
// tunnels, their public port. The controllers apply the same rule and
// report the losers in status; computing it here too keeps a route from
// flapping before a status is written.
func owners(tunnels []api.Object) []*api.Tunnel {
	sorted := make([]api.Object, len(tunnels))
	copy(sorted, tunnels)
	sort.Slice(sorted, func(i, j int) bool { return older(sorted[i], sorted[j]) })
	hosts := map[string]bool{}
	ports := map[int]bool{}
	var out []*api.Tunnel
	for _, o := range sorted {
		t := o.(*api.Tunnel)
		if hosts[t.Spec.Hostname] {
			continue
		}
		hosts[t.Spec.Hostname] = true
		if t.Spec.PublicPort != 0 {
			if ports[t.Spec.PublicPort] {
				continue
			}
			ports[t.Spec.PublicPort] = true
		}
		// A tunnel being deleted keeps its claim until it is gone (as the
		// tunnel-status controller rules) but is no longer served.
		if t.Metadata.DeletionTimestamp == nil {
			out = append(out, t)
		}
	}
	return out
}

func protocolOf(target string) string {
	if strings.HasPrefix(target, "tcp://") {
		return "tcp"
	}
	return "http"
}

// GatewaySlice computes the slice of the named gateway: every usable
// agent as a peer, every owned tunnel as a route, and the certificate
// with its key of every http route that has one. It returns false when
// the gateway does not exist.
func GatewaySlice(st State, name string) (bridge.Slice, bool) {
	self, ok := gatewaySelf(st.Gateways)[name]
	if !ok {
		return nil, false
	}
	s := gatewayShared(st, owners(st.Tunnels))
	s["self"] = self
	return s, true
}

// gatewaySelf returns the "self" item of every gateway, by name.
func gatewaySelf(gateways []api.Object) map[string]bridge.Item {
	out := make(map[string]bridge.Item, len(gateways))
	for _, o := range gateways {
		g := o.(*api.Gateway)
		out[g.Metadata.Name] = bridge.Item{Key: "self", Self: &bridge.Self{Name: g.Metadata.Name,
			Address: overlayAddr(g.Status.OverlayAddress), Enabled: g.Spec.IsEnabled()}}
	}
	return out
}

// gatewayShared computes what every gateway's slice holds besides its
// self: it depends on no gateway, so it is computed once for all of them.
// owned is owners(st.Tunnels).
func gatewayShared(st State, owned []*api.Tunnel) bridge.Slice {
	s := bridge.Slice{}
	agents := map[string]*api.Agent{}
	for _, o := range st.Agents {
		a := o.(*api.Agent)
		addr := overlayAddr(a.Status.OverlayAddress)
		if !a.Spec.IsEnabled() || a.Spec.PublicKey == "" || !addr.IsValid() || a.Metadata.DeletionTimestamp != nil {
			continue
		}
		agents[a.Metadata.Name] = a
		key := "peer/" + a.Metadata.Name
		s[key] = bridge.Item{Key: key, Peer: &bridge.Peer{Name: a.Metadata.Name, PublicKey: a.Spec.PublicKey, Address: addr}}
	}
	for _, t := range owned {
		r := &bridge.Route{Tunnel: t.Metadata.Name, Hostname: t.Spec.Hostname, Protocol: protocolOf(t.Spec.Target),
			PublicPort: t.Spec.PublicPort, Agent: t.Spec.Agent, Enabled: t.Spec.IsEnabled()}
		if a, ok := agents[t.Spec.Agent]; ok {
			r.AgentAddress = overlayAddr(a.Status.OverlayAddress)
		}
		key := "route/" + t.Spec.Hostname
		if r.Protocol == "tcp" {
			key = "tcp/" + strconv.Itoa(t.Spec.PublicPort)
		}
		s[key] = bridge.Item{Key: key, Route: r}
	}
	// A certificate goes only with a route the gateway serves: a key
	// left behind by a deleted tunnel never reaches a gateway, even
	// before Control removes it from the store.
	redirect := map[string]bool{}
	for _, t := range owned {
		redirect[t.Spec.Hostname] = t.RedirectsHTTP()
	}
	for _, o := range st.Certificates {
		kp := o.(*api.CertificateKeyPair)
		if r, ok := s["route/"+kp.Hostname]; !ok || r.Route == nil || r.Route.Protocol != "http" {
			continue
		}
		key := bridge.CertificateKey(kp.Hostname)
		s[key] = bridge.Item{Key: key, Certificate: &bridge.Certificate{Hostname: kp.Hostname, ChainPEM: kp.ChainPEM,
			KeyPEM: kp.KeyPEM, Serial: kp.Serial, NotAfter: kp.NotAfter, RedirectHTTP: redirect[kp.Hostname]}}
	}
	for _, o := range st.Challenges {
		ch := o.(*api.ACMEChallenge)
		if r, ok := s["route/"+ch.Hostname]; !ok || r.Route == nil || r.Route.Protocol != "http" {
			continue
		}
		key := bridge.ChallengeKey(ch.Token)
		if ch.Type == "tls-alpn-01" {
			key = bridge.TLSALPNChallengeKey(ch.Hostname)
		}
		s[key] = bridge.Item{Key: key, Challenge: &bridge.Challenge{Type: ch.Type, Hostname: ch.Hostname, Token: ch.Token,
			KeyAuthorization: ch.KeyAuthorization, CertPEM: ch.CertPEM, KeyPEM: ch.KeyPEM}}
	}
	return s
}

// AgentSlice computes the slice of the named agent: every usable gateway
// as a peer and the agent's own owned tunnels as forwards.
func AgentSlice(st State, name string) (bridge.Slice, bool) {
	var self *api.Agent
	for _, o := range st.Agents {
		if o.GetMeta().Name == name {
			self = o.(*api.Agent)
		}
	}
	if self == nil {
		return nil, false
	}
	s := bridge.Slice{}
	s["self"] = agentSelf(self, st.KeepaliveSeconds)
	if !self.Spec.IsEnabled() {
		return s, true
	}
	for k, it := range agentPeers(st.Gateways) {
		s[k] = it
	}
	for _, it := range agentForwards(owners(st.Tunnels))[name] {
		s[it.Key] = it
	}
	return s, true
}

// agentSelf is an agent's "self" item.
func agentSelf(a *api.Agent, keepalive int) bridge.Item {
	return bridge.Item{Key: "self", Self: &bridge.Self{Name: a.Metadata.Name,
		Address: overlayAddr(a.Status.OverlayAddress), Enabled: a.Spec.IsEnabled(),
		KeepaliveSeconds: keepalive}}
}

// agentPeers computes the peers every enabled agent's slice holds: the
// usable gateways.
func agentPeers(gateways []api.Object) bridge.Slice {
	s := bridge.Slice{}
	for _, o := range gateways {
		g := o.(*api.Gateway)
		addr := overlayAddr(g.Status.OverlayAddress)
		if !g.Spec.IsEnabled() || g.Spec.PublicKey == "" || g.Spec.PublicEndpoint == "" || !addr.IsValid() || g.Metadata.DeletionTimestamp != nil {
			continue
		}
		key := "peer/" + g.Metadata.Name
		s[key] = bridge.Item{Key: key, Peer: &bridge.Peer{Name: g.Metadata.Name, PublicKey: g.Spec.PublicKey,
			Address: addr, Endpoint: g.Spec.PublicEndpoint}}
	}
	return s
}

// agentForwards returns the forward items of every agent that serves an
// owned tunnel, by agent name. owned is owners(tunnels).
func agentForwards(owned []*api.Tunnel) map[string][]bridge.Item {
	out := map[string][]bridge.Item{}
	for _, t := range owned {
		key := "forward/" + t.Metadata.Name
		out[t.Spec.Agent] = append(out[t.Spec.Agent], bridge.Item{Key: key, Forward: &bridge.Forward{Tunnel: t.Metadata.Name,
			Target: t.Spec.Target, InsecureSkipVerify: t.Spec.InsecureSkipVerify, Enabled: t.Spec.IsEnabled()}})
	}
	return out
}
