package api

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Tunnel publishes one service of an agent under a hostname on every
// gateway.
type Tunnel struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta   `json:"metadata"`
	Spec     TunnelSpec   `json:"spec"`
	Status   TunnelStatus `json:"status,omitzero"`
}

// TunnelSpec is what a person asks of a tunnel.
type TunnelSpec struct {
	// Hostname is the public DNS name the gateways serve, e.g.
	// fuga.sample.com. Required. Two tunnels may not share one: the older
	// keeps it.
	Hostname string `json:"hostname"`
	// Agent names the Agent that reaches the target. Required.
	Agent string `json:"agent"`
	// Target is where the agent sends traffic: http://host:port,
	// https://host:port or tcp://host:port. Required.
	Target string `json:"target"`
	// Enabled turns the tunnel off without deleting it. Defaults to true.
	Enabled *bool `json:"enabled,omitempty"`
	// PublicPort is, for a tcp:// target, the port every gateway listens
	// on for it (required then, forbidden otherwise; not 80 or 443).
	PublicPort int `json:"publicPort,omitempty"`
	// InsecureSkipVerify makes the agent accept any certificate from an
	// https:// target (self-signed origins). Defaults to false.
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
	// HTTPRedirect makes gateways answer plain http:// requests for the
	// hostname with a 308 to https:// once it has a certificate (ACME
	// challenges are never redirected). Defaults to true; false keeps the
	// hostname answering plain HTTP. Only for http(s) targets.
	HTTPRedirect *bool `json:"httpRedirect,omitempty"`
}

// RedirectsHTTP reports whether gateways redirect the tunnel's plain-HTTP
// requests to HTTPS: spec.httpRedirect, else the older annotation
// kakuremichi.io/http-redirect: "false", else true.
func (t *Tunnel) RedirectsHTTP() bool {
	if t.Spec.HTTPRedirect != nil {
		return *t.Spec.HTTPRedirect
	}
	return t.Metadata.Annotations[AnnotationHTTPRedirect] != "false"
}

// TunnelStatus is what Control observed of a tunnel.
type TunnelStatus struct {
	CommonStatus `json:",inline"`
	// Gateways lists, per gateway, whether it serves the tunnel.
	Gateways []TunnelGatewayStatus `json:"gateways,omitempty"`
}

// TunnelGatewayStatus is one gateway's view of a tunnel.
type TunnelGatewayStatus struct {
	// Name is the gateway's name.
	Name string `json:"name"`
	// Serving is true when the gateway reports the route as installed.
	Serving bool `json:"serving"`
	// Reason says why not, in one CamelCase word (GatewayOffline, ...).
	Reason string `json:"reason,omitempty"`
}

// Condition types and reasons of a Tunnel.
const (
	// TunnelHostnameAvailable is True when this tunnel owns its hostname.
	TunnelHostnameAvailable = "HostnameAvailable"

	// ReasonHostnameConflict: an older tunnel already claims the hostname.
	ReasonHostnameConflict = "HostnameConflict"
	// ReasonHostnameClaimed: the tunnel is the owner of its hostname.
	ReasonHostnameClaimed = "HostnameClaimed"
	// ReasonHostnameReservedForControl: the hostname is Control's own
	// public name (--public-hostname), which no tunnel may take: Control
	// keeps that name's certificate and key to itself.
	ReasonHostnameReservedForControl = "HostnameReservedForControl"
	// ReasonDisabled: spec.enabled is false.
	ReasonDisabled = "Disabled"
	// ReasonReady: every condition the tunnel depends on holds.
	ReasonReady = "Ready"

	// TunnelAgentConnected is True when the tunnel's agent is online.
	TunnelAgentConnected = "AgentConnected"
	// TunnelTargetReachable is True when the agent reaches the target.
	TunnelTargetReachable = "TargetReachable"
	// TunnelRouted is True when at least one gateway serves the route.
	TunnelRouted = "Routed"

	// ReasonAgentOffline: the tunnel's agent is not connected (or unknown).
	ReasonAgentOffline = "AgentOffline"
	// ReasonAgentNotFound: no Agent of that name exists.
	ReasonAgentNotFound = "AgentNotFound"
	// ReasonTargetUnreachable: the agent cannot connect to the target.
	ReasonTargetUnreachable = "TargetUnreachable"
	// ReasonNoGateway: no online gateway serves the route.
	ReasonNoGateway = "NoGatewayServing"
	// ReasonPortConflict: an older tcp tunnel already uses the public port.
	ReasonPortConflict = "PortConflict"
)

// GetTypeMeta implements Object.
func (t *Tunnel) GetTypeMeta() *TypeMeta { return &t.TypeMeta }

// GetMeta implements Object.
func (t *Tunnel) GetMeta() *ObjectMeta { return &t.Metadata }

// GetStatus implements Object.
func (t *Tunnel) GetStatus() *CommonStatus { return &t.Status.CommonStatus }

// IsEnabled reports whether the tunnel is enabled (the default).
func (s *TunnelSpec) IsEnabled() bool { return s.Enabled == nil || *s.Enabled }

// Default implements Object.
func (t *Tunnel) Default() {
	if t.Spec.Enabled == nil {
		t.Spec.Enabled = ptr(true)
	}
	t.Spec.Hostname = strings.ToLower(strings.TrimSuffix(t.Spec.Hostname, "."))
}

// ValidateSpec implements Object.
func (t *Tunnel) ValidateSpec() ErrorList {
	var errs ErrorList
	if t.Spec.Hostname == "" {
		errs = append(errs, required("spec.hostname", "the public DNS name, e.g. app.example.com"))
	} else if msg := checkHostnameOrWildcard(t.Spec.Hostname); msg != "" {
		errs = append(errs, invalid("spec.hostname", "%q %s", t.Spec.Hostname, msg))
	}
	if t.Spec.Agent == "" {
		errs = append(errs, required("spec.agent", "the name of the Agent that reaches the target"))
	} else if msg := checkName(t.Spec.Agent); msg != "" {
		errs = append(errs, invalid("spec.agent", "%q %s", t.Spec.Agent, msg))
	}
	if t.Spec.Target == "" {
		errs = append(errs, required("spec.target", "where the agent sends traffic, e.g. http://localhost:8080"))
	} else if err := ValidateTarget(t.Spec.Target); err != nil {
		errs = append(errs, FieldError{Type: FieldInvalid, Field: "spec.target", Detail: err.Error()})
	} else {
		isTCP := strings.HasPrefix(t.Spec.Target, "tcp://")
		switch p := t.Spec.PublicPort; {
		case isTCP && p == 0:
			errs = append(errs, required("spec.publicPort", "the port every gateway listens on for this tcp tunnel"))
		case !isTCP && p != 0:
			errs = append(errs, FieldError{Type: FieldForbidden, Field: "spec.publicPort", Detail: "only tcp:// targets get a port of their own; http(s) tunnels are served on 80 and 443 by hostname"})
		case p < 0 || p > 65535:
			errs = append(errs, invalid("spec.publicPort", "%d is not between 1 and 65535", p))
		case isTCP && (p == 80 || p == 443):
			errs = append(errs, invalid("spec.publicPort", "%d is used by the gateways for HTTP and HTTPS", p))
		}
		if t.Spec.InsecureSkipVerify && !strings.HasPrefix(t.Spec.Target, "https://") {
			errs = append(errs, FieldError{Type: FieldForbidden, Field: "spec.insecureSkipVerify", Detail: "only meaningful for https:// targets"})
		}
		if t.Spec.HTTPRedirect != nil && isTCP {
			errs = append(errs, FieldError{Type: FieldForbidden, Field: "spec.httpRedirect", Detail: "only meaningful for http(s) targets: a tcp tunnel has no plain-HTTP requests to redirect"})
		}
	}
	return errs
}

// Target schemes.
var targetSchemes = []string{"http", "https", "tcp"}

// ValidateTarget checks a tunnel target URL.
func ValidateTarget(target string) error {
	u, err := url.Parse(target)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("%q is not a URL of the form scheme://host:port", target)
	}
	ok := false
	for _, s := range targetSchemes {
		ok = ok || u.Scheme == s
	}
	if !ok {
		return fmt.Errorf("unsupported scheme %q (use %s)", u.Scheme, strings.Join(targetSchemes, ", "))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("%q: only scheme://host:port is allowed, no path, query or credentials", target)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return fmt.Errorf("%q has no host", target)
	}
	if port == "" && u.Scheme == "tcp" {
		return fmt.Errorf("%q: a tcp target needs a port", target)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: port %q is not between 1 and 65535", target, port)
		}
	}
	return nil
}

// Gateway is a public entry node.
type Gateway struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta    `json:"metadata"`
	Spec     GatewaySpec   `json:"spec"`
	Status   GatewayStatus `json:"status,omitzero"`
}

// GatewaySpec is what a person (or the gateway's registration) asks of a
// gateway.
type GatewaySpec struct {
	// Enabled takes a gateway out of service without deleting it.
	// Defaults to true.
	Enabled *bool `json:"enabled,omitempty"`
	// PublicEndpoint is the host:port agents dial for WireGuard. Empty
	// until the gateway registers.
	PublicEndpoint string `json:"publicEndpoint,omitempty"`
	// PublicKey is the gateway's WireGuard public key (base64). Empty
	// until the gateway registers.
	PublicKey string `json:"publicKey,omitempty"`
}

// GatewayStatus is what Control observed of a gateway.
type GatewayStatus struct {
	CommonStatus `json:",inline"`
	NodeStatus   `json:",inline"`
	// Agents lists the gateway's WireGuard peers and probes through them.
	Agents []NodePeerStatus `json:"agents,omitempty"`
	// Routes counts the routes the gateway reports serving.
	Routes int `json:"routes,omitempty"`
}

// NodeStatus is the part of status agents and gateways share.
type NodeStatus struct {
	// OverlayAddress is the node's address on the overlay network,
	// assigned by Control and never shared with another node.
	OverlayAddress string `json:"overlayAddress,omitempty"`
	// Version is the software version the node reported.
	Version string `json:"version,omitempty"`
	// DataPath is the WireGuard data path the node reported: "netstack"
	// (in-process TCP/IP, the default) or "tun" (the kernel's, through a
	// TUN interface).
	DataPath string `json:"dataPath,omitempty"`
	// LastHeartbeat is when the node last reported over the bridge.
	LastHeartbeat *time.Time `json:"lastHeartbeat,omitempty"`
	// Revision is the slice revision the node last reported applying.
	Revision int64 `json:"revision,omitempty"`
	// Peers sums up the node's WireGuard peers when it has more than
	// ListedPeers; its list of peers (an agent's status.gateways, a
	// gateway's status.agents) then shows only those in trouble.
	Peers *PeerCounts `json:"peers,omitempty"`
}

// ListedPeers is how many peers a node's status lists one by one. A
// longer list would be rewritten whole whenever one of its peers changed:
// while a fleet of 10,000 agents comes online, every one of 1,000
// gateways' lists would be, each heartbeat, some 50 MB/s into the store.
// Beyond it, PeerCounts sums the peers up and the list names only those
// in trouble.
const ListedPeers = 500

// PeerCounts sums up a node's peers. The list beside it names every peer
// in trouble, sorted by name: not connected or, on a gateway, whose probe
// has not answered (failed, or not yet run). A peer of the node that is
// not listed is connected and answered its probe. The list is as long as
// the trouble is: when a thousand agents are down, it names them all.
type PeerCounts struct {
	// Total counts the node's peers.
	Total int `json:"total"`
	// Connected counts those with a current session.
	Connected int `json:"connected"`
	// Answered counts those whose probe through the tunnel answered
	// (gateways).
	Answered int `json:"answered,omitempty"`
}

// NodePeerStatus is one WireGuard peer as a node reports it.
type NodePeerStatus struct {
	// Name is the peer's resource name.
	Name string `json:"name"`
	// Endpoint is the peer's last seen UDP address.
	Endpoint string `json:"endpoint,omitempty"`
	// LastHandshake is the peer's latest WireGuard handshake, shown when
	// the node has at most TimedPeers peers.
	LastHandshake *time.Time `json:"lastHandshake,omitempty"`
	// Connected: the peer's latest handshake was within SessionFresh when
	// the status was written, so its session was current. Shown for any
	// number of peers, and written whenever it changes.
	Connected bool `json:"connected,omitempty"`
	// Probe says whether a probe through the tunnel answered (gateways).
	Probe string `json:"probe,omitempty"`
}

// ProbeOK is the value of NodePeerStatus.Probe, in a gateway's
// status.agents, for a probe through the tunnel that answered. The
// bridge writes it from the gateway's heartbeat; an empty Probe means
// "not probed yet" and any other value describes the failure.
const ProbeOK = "ok"

// TimedPeers is how many peers a node's status lists with their handshake
// times. Those change every two minutes for every peer, so a status showing
// them is rewritten for them alone (once a minute); an agent lists every
// gateway, and at 10,000 agents of 1,000 gateways that would be some
// 16 MB/s into the store. Beyond TimedPeers a peer shows only Connected,
// which changes when a session starts or runs out.
const TimedPeers = 100

// SessionFresh is how old a peer's latest handshake may be for its session
// to count as current (NodePeerStatus.Connected): WireGuard rejects an
// older one (Reject-After-Time), and renews it every two minutes while
// packets flow.
const SessionFresh = 3 * time.Minute

// Condition types and reasons of Agents and Gateways.
const (
	// NodeConnected is True while the node holds a bridge connection
	// with fresh heartbeats.
	NodeConnected = "Connected"
	// NodeDataPath is True when a probe through the WireGuard data path
	// answers (quality.md 7): "online" means traffic flows.
	NodeDataPath = "DataPathReady"

	// ReasonHeartbeat: heartbeats arrive within the lease.
	ReasonHeartbeat = "HeartbeatReceived"
	// ReasonHeartbeatExpired: no heartbeat within the lease.
	ReasonHeartbeatExpired = "HeartbeatExpired"
	// ReasonNeverConnected: the node has not connected yet.
	ReasonNeverConnected = "NeverConnected"
	// ReasonProbeSucceeded: a probe through the tunnel answered.
	ReasonProbeSucceeded = "ProbeSucceeded"
	// ReasonProbeFailed: no gateway could reach the agent through WireGuard.
	ReasonProbeFailed = "ProbeFailed"
)

// GetTypeMeta implements Object.
func (g *Gateway) GetTypeMeta() *TypeMeta { return &g.TypeMeta }

// GetMeta implements Object.
func (g *Gateway) GetMeta() *ObjectMeta { return &g.Metadata }

// GetStatus implements Object.
func (g *Gateway) GetStatus() *CommonStatus { return &g.Status.CommonStatus }

// IsEnabled reports whether the gateway is enabled (the default).
func (s *GatewaySpec) IsEnabled() bool { return s.Enabled == nil || *s.Enabled }

// Default implements Object.
func (g *Gateway) Default() {
	if g.Spec.Enabled == nil {
		g.Spec.Enabled = ptr(true)
	}
}

// ValidateSpec implements Object.
func (g *Gateway) ValidateSpec() ErrorList {
	var errs ErrorList
	if e := g.Spec.PublicEndpoint; e != "" {
		host, port, err := net.SplitHostPort(e)
		n, perr := strconv.Atoi(port)
		switch {
		case err != nil:
			errs = append(errs, invalid("spec.publicEndpoint", "%q is not host:port", e))
		case host == "":
			errs = append(errs, invalid("spec.publicEndpoint", "%q has no host", e))
		case perr != nil || n < 1 || n > 65535:
			errs = append(errs, invalid("spec.publicEndpoint", "%q: port %q is not between 1 and 65535", e, port))
		}
	}
	if msg := checkWireGuardKey(g.Spec.PublicKey); msg != "" {
		errs = append(errs, invalid("spec.publicKey", "%s", msg))
	}
	return errs
}

// Agent runs beside applications and dials out to every gateway.
type Agent struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     AgentSpec   `json:"spec"`
	Status   AgentStatus `json:"status,omitzero"`
}

// AgentSpec is what a person (or the agent's registration) asks of an
// agent.
type AgentSpec struct {
	// Enabled cuts an agent off without deleting it. Defaults to true.
	Enabled *bool `json:"enabled,omitempty"`
	// PublicKey is the agent's WireGuard public key (base64). Empty until
	// the agent registers.
	PublicKey string `json:"publicKey,omitempty"`
}

// AgentStatus is what Control observed of an agent.
type AgentStatus struct {
	CommonStatus `json:",inline"`
	NodeStatus   `json:",inline"`
	// Gateways lists the agent's WireGuard peers.
	Gateways []NodePeerStatus `json:"gateways,omitempty"`
	// Targets reports whether each of the agent's tunnel targets answers.
	Targets []TargetStatus `json:"targets,omitempty"`
}

// TargetStatus is whether an agent reaches one tunnel's target.
type TargetStatus struct {
	// Tunnel is the tunnel's name.
	Tunnel string `json:"tunnel"`
	// Reachable is true when a TCP connection to the target succeeded.
	Reachable bool `json:"reachable"`
	// Message says what failed.
	Message string `json:"message,omitempty"`
}

// GetTypeMeta implements Object.
func (a *Agent) GetTypeMeta() *TypeMeta { return &a.TypeMeta }

// GetMeta implements Object.
func (a *Agent) GetMeta() *ObjectMeta { return &a.Metadata }

// GetStatus implements Object.
func (a *Agent) GetStatus() *CommonStatus { return &a.Status.CommonStatus }

// IsEnabled reports whether the agent is enabled (the default).
func (s *AgentSpec) IsEnabled() bool { return s.Enabled == nil || *s.Enabled }

// Default implements Object.
func (a *Agent) Default() {
	if a.Spec.Enabled == nil {
		a.Spec.Enabled = ptr(true)
	}
}

// ValidateSpec implements Object.
func (a *Agent) ValidateSpec() ErrorList {
	if msg := checkWireGuardKey(a.Spec.PublicKey); msg != "" {
		return ErrorList{invalid("spec.publicKey", "%s", msg)}
	}
	return nil
}

func checkWireGuardKey(k string) string {
	if k == "" {
		return ""
	}
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil || len(b) != 32 {
		return fmt.Sprintf("%q is not a base64 WireGuard key of 32 bytes", k)
	}
	return ""
}

func ptr[T any](v T) *T { return &v }

// NodeLease is when Control last heard from an agent or a gateway. The
// bridge renews it on a node's heartbeats, apart from the node's status,
// which is then written only when what the node reports changes: a status
// lists every peer, and rewriting it every few seconds to say "still
// here" was most of what a large fleet wrote into the store. Like
// ACMEChallenge it is not a served kind: reads of agents and gateways
// report it as status.lastHeartbeat. Its name is the node's kind, plural,
// a slash and its name ("agents/home").
type NodeLease struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	// RenewTime is the latest heartbeat the lease records.
	RenewTime time.Time `json:"renewTime"`

	// status is never set; it exists so GetStatus can return something.
	status CommonStatus
}

// NodeLeaseKind is the Kind of a NodeLease.
const NodeLeaseKind = "NodeLease"

// NodeLeaseName returns the name of the lease of the node of kind
// ("Agent" or "Gateway") and name, and false for any other kind.
func NodeLeaseName(kind, name string) (string, bool) {
	switch kind {
	case "Agent":
		return "agents/" + name, true
	case "Gateway":
		return "gateways/" + name, true
	}
	return "", false
}

// NodeOfLease returns the kind and name of the node a lease named lease
// belongs to, the inverse of NodeLeaseName.
func NodeOfLease(lease string) (kind, name string, ok bool) {
	plural, name, _ := strings.Cut(lease, "/")
	switch {
	case name == "":
		return "", "", false
	case plural == "agents":
		return "Agent", name, true
	case plural == "gateways":
		return "Gateway", name, true
	}
	return "", "", false
}

// LastHeard returns when Control last heard from a node created at
// created: the later of beat, the lastHeartbeat its status was last
// written with, and renewed, its lease's time. A lease older than the
// node is a deleted namesake's, and is not its. nil if neither says.
func LastHeard(beat, renewed *time.Time, created time.Time) *time.Time {
	if renewed == nil || renewed.Before(created) || (beat != nil && !renewed.After(*beat)) {
		return beat
	}
	return renewed
}

// GetTypeMeta implements Object.
func (l *NodeLease) GetTypeMeta() *TypeMeta { return &l.TypeMeta }

// GetMeta implements Object.
func (l *NodeLease) GetMeta() *ObjectMeta { return &l.Metadata }

// GetStatus implements Object; a lease has no status.
func (l *NodeLease) GetStatus() *CommonStatus { return &l.status }

// Default implements Object.
func (l *NodeLease) Default() {}

// ValidateSpec implements Object.
func (l *NodeLease) ValidateSpec() ErrorList { return nil }
