package controllers

import (
	"strconv"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
)

// Names of the informer indexes the node and tunnel loops query, besides
// hostnameIndex and ownerIndex.
const (
	// agentIndex indexes tunnels by spec.agent: a change to an agent
	// reaches its tunnels.
	agentIndex = "agent"
	// publicPortIndex indexes tcp tunnels by spec.publicPort: tunnels on
	// one port contest it, as tunnels on one hostname do.
	publicPortIndex = "publicPort"
	// pendingGatewayIndex indexes tunnels by the gateways their
	// status.gateways lists as not serving: when such a gateway reports a
	// newer revision, those tunnels may be served now.
	pendingGatewayIndex = "pendingGateway"
	// overlayAddressIndex indexes agents and gateways by their overlay
	// address, so that a duplicate is found without a scan.
	overlayAddressIndex = "overlayAddress"
)

// addIndexes adds to inf every index that Control's loops query on its
// kind. New calls it for each informer; so do the tests.
func addIndexes(inf *reconcile.Informer) {
	inf.AddIndex(ownerIndex, indexByOwner)
	switch inf.Kind() {
	case "Tunnel":
		inf.AddIndex(hostnameIndex, indexByHostname)
		inf.AddIndex(agentIndex, indexByAgent)
		inf.AddIndex(publicPortIndex, indexByPublicPort)
		inf.AddIndex(pendingGatewayIndex, indexByPendingGateway)
	case "Agent", "Gateway":
		inf.AddIndex(overlayAddressIndex, indexByOverlayAddress)
	}
}

func indexByAgent(obj api.Object) []string {
	t, ok := obj.(*api.Tunnel)
	if !ok || t.Spec.Agent == "" {
		return nil
	}
	return []string{t.Spec.Agent}
}

func indexByPublicPort(obj api.Object) []string {
	t, ok := obj.(*api.Tunnel)
	if !ok || t.Spec.PublicPort == 0 {
		return nil
	}
	return []string{strconv.Itoa(t.Spec.PublicPort)}
}

func indexByPendingGateway(obj api.Object) []string {
	t, ok := obj.(*api.Tunnel)
	if !ok {
		return nil
	}
	var out []string
	for _, g := range t.Status.Gateways {
		if !g.Serving {
			out = append(out, g.Name)
		}
	}
	return out
}

// indexByOverlayAddress indexes a node under the canonical form of its
// address, so that two spellings of one address collide; an address that
// does not parse is not indexed (it is no address, and gets replaced).
func indexByOverlayAddress(obj api.Object) []string {
	_, st, _, ok := nodeParts(obj)
	if !ok {
		return nil
	}
	a, ok := parseOverlayAddress(st.OverlayAddress)
	if !ok {
		return nil
	}
	return []string{a.String()}
}

// sharesClaim maps a tunnel to itself and every tunnel that shares its
// hostname or, for tcp tunnels, its public port, and the tcp tunnels
// that share a port with those hostname rivals: a change to one can
// change which of them owns the name, and through it the port.
func sharesClaim(tunnels *reconcile.Informer, obj api.Object) []reconcile.Request {
	reqs := sameHostname(tunnels, obj)
	seen := map[string]bool{}
	for _, r := range reqs {
		seen[r.Key.Name] = true
	}
	for _, r := range reqs {
		o, ok := tunnels.Get(r.Key.Name)
		if r.Key.Name == obj.GetMeta().Name {
			o, ok = obj, true // the object as it was or is, whatever the cache holds now
		}
		t, isTunnel := o.(*api.Tunnel)
		if !ok || !isTunnel || t.Spec.PublicPort == 0 {
			continue
		}
		for _, other := range tunnels.ByIndex(publicPortIndex, strconv.Itoa(t.Spec.PublicPort)) {
			if !seen[other.GetMeta().Name] {
				seen[other.GetMeta().Name] = true
				reqs = append(reqs, reconcile.RequestFor(other))
			}
		}
	}
	return reqs
}
