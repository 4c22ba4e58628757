// Package bridge defines the watch-bridge protocol between Control and its
// nodes (gateways and agents): registration with an API key, and a
// WebSocket on which Control sends each node its slice of the desired state
// (a snapshot, then deltas) and the node sends heartbeats and status back.
//
// Nodes import this package and never the store. It imports only the
// standard library and package api.
package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"time"
)

// Paths served by Control.
const (
	// RegisterPath takes a RegisterRequest with an API key as bearer and
	// answers a RegisterResponse.
	RegisterPath = "/bridge/v1/register"
	// WatchPath is the WebSocket endpoint; the node's credential is the
	// bearer, and the query may carry revision and digest to resume.
	WatchPath = "/bridge/v1/watch"
)

// MaxMessageBytes bounds one WebSocket message in either direction.
const MaxMessageBytes = 16 << 20

// AgentForwardPort is the TCP port an agent listens on at its overlay
// address; gateways open one connection per request stream to it and say
// which tunnel it is for in a preamble.
const AgentForwardPort = 7000

// RegisterRequest is what a node sends to enrol or re-enrol.
type RegisterRequest struct {
	// Kind is "Agent" or "Gateway"; it must match the API key's role.
	Kind string `json:"kind"`
	// Name is the node's name; a restart re-registers under the same one.
	Name string `json:"name"`
	// PublicKey is the node's WireGuard public key, base64.
	PublicKey string `json:"publicKey"`
	// PublicEndpoint is the host:port agents dial (gateways only).
	PublicEndpoint string `json:"publicEndpoint,omitempty"`
	// Version is the node's software version.
	Version string `json:"version,omitempty"`
}

// RegisterResponse carries the node's own credential, shown only here.
type RegisterResponse struct {
	// Name is the registered node name.
	Name string `json:"name"`
	// Credential is the bearer token for WatchPath.
	Credential string `json:"credential"`
}

// MessageType says what a Message carries.
type MessageType string

// Message types. Control sends Snapshot, Delta, UpToDate, Ping and Error;
// a node sends Heartbeat (with Status or Changes) and Pong.
const (
	// Snapshot replaces the node's whole slice.
	Snapshot MessageType = "snapshot"
	// Delta upserts Items and removes Deleted keys.
	Delta MessageType = "delta"
	// UpToDate confirms that the slice the node resumed with is current.
	UpToDate MessageType = "uptodate"
	// Ping asks for a Pong; either side may send one.
	Ping MessageType = "ping"
	// Pong answers a Ping.
	Pong MessageType = "pong"
	// Heartbeat carries the node's status.
	Heartbeat MessageType = "heartbeat"
	// Error ends the connection with a reason.
	Error MessageType = "error"
)

// Message is one WebSocket text message.
type Message struct {
	Type MessageType `json:"type"`
	// Revision is the store revision the slice reflects after applying
	// this message (Snapshot, Delta, UpToDate).
	Revision int64 `json:"revision,omitempty"`
	// Digest is Slice.Digest() after applying this message, so the node
	// can detect a gap and resume with it.
	Digest string `json:"digest,omitempty"`
	// Items are the whole slice (Snapshot) or the changed items (Delta).
	Items []Item `json:"items,omitempty"`
	// Deleted are keys of items removed (Delta).
	Deleted []string `json:"deleted,omitempty"`
	// Status is the node's whole report (Heartbeat).
	Status *NodeStatus `json:"status,omitempty"`
	// Changes is what changed in the node's report since its previous
	// heartbeat on this connection (Heartbeat; see StatusChanges).
	Changes *StatusChanges `json:"changes,omitempty"`
	// AcceptsChanges, on Control's first message on a connection, says
	// that Control takes heartbeats with Changes.
	AcceptsChanges bool `json:"acceptsChanges,omitempty"`
	// Message explains an Error.
	Message string `json:"message,omitempty"`
}

// Item is one piece of a node's slice, keyed so deltas can address it.
// Exactly one of the pointers is set.
type Item struct {
	// Key is "self", "peer/<name>", "route/<hostname>", "tcp/<port>",
	// "forward/<tunnel>", "cert/<hostname>" or "acme-http/<token>".
	Key string `json:"key"`
	// Self describes the node itself.
	Self *Self `json:"self,omitempty"`
	// Peer is a WireGuard peer: agents for a gateway, gateways for an agent.
	Peer *Peer `json:"peer,omitempty"`
	// Route is an HTTP or TCP route a gateway serves.
	Route *Route `json:"route,omitempty"`
	// Forward is a tunnel an agent forwards to its target.
	Forward *Forward `json:"forward,omitempty"`
	// Certificate is a certificate and key a gateway serves, keyed
	// "cert/<hostname>". Only gateways ever receive it.
	Certificate *Certificate `json:"certificate,omitempty"`
	// Challenge is a pending ACME HTTP-01 challenge, keyed
	// "acme-http/<token>", for gateways only.
	Challenge *Challenge `json:"challenge,omitempty"`
}

// Self is what Control assigned to the node.
type Self struct {
	// Name is the node's name.
	Name string `json:"name"`
	// Address is the node's overlay address.
	Address netip.Addr `json:"address"`
	// Enabled is false when the node is disabled: it keeps its slice but
	// serves nothing.
	Enabled bool `json:"enabled"`
	// KeepaliveSeconds is the WireGuard persistent keepalive agents use.
	KeepaliveSeconds int `json:"keepaliveSeconds,omitempty"`
}

// Peer is a WireGuard peer of the node.
type Peer struct {
	// Name is the peer's resource name.
	Name string `json:"name"`
	// PublicKey is the peer's WireGuard key, base64.
	PublicKey string `json:"publicKey"`
	// Address is the peer's overlay address (its only AllowedIP).
	Address netip.Addr `json:"address"`
	// Endpoint is where to send packets (gateways, for agents); empty for
	// agents behind NAT, whose endpoint the gateway learns from them.
	Endpoint string `json:"endpoint,omitempty"`
}

// Route is one tunnel as a gateway serves it.
type Route struct {
	// Tunnel is the tunnel's name; the agent checks it in the preamble.
	Tunnel string `json:"tunnel"`
	// Hostname is the public name (Host header / SNI).
	Hostname string `json:"hostname"`
	// Protocol is "http" (HTTP routing by Host) or "tcp" (raw, by port).
	Protocol string `json:"protocol"`
	// PublicPort is the gateway port of a tcp route.
	PublicPort int `json:"publicPort,omitempty"`
	// Agent names the agent that serves the tunnel.
	Agent string `json:"agent"`
	// AgentAddress is the agent's overlay address, empty while the agent
	// has none (the route then answers "agent offline").
	AgentAddress netip.Addr `json:"agentAddress,omitzero"`
	// Enabled is false for a disabled tunnel (answered with 503).
	Enabled bool `json:"enabled"`
}

// Forward is one tunnel as its agent forwards it.
type Forward struct {
	// Tunnel is the tunnel's name, as gateways name it in the preamble.
	Tunnel string `json:"tunnel"`
	// Target is http://, https:// or tcp://host:port.
	Target string `json:"target"`
	// InsecureSkipVerify skips certificate checks of an https target.
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
	// Enabled is false for a disabled tunnel: the agent refuses it.
	Enabled bool `json:"enabled"`
}

// NodeStatus is what a node reports in each heartbeat.
type NodeStatus struct {
	// Version is the node's software version.
	Version string `json:"version,omitempty"`
	// DataPath is the node's WireGuard data path: "netstack" or "tun".
	DataPath string `json:"dataPath,omitempty"`
	// Revision is the slice revision the node has applied.
	Revision int64 `json:"revision"`
	// Peers reports each WireGuard peer's latest handshake.
	Peers []PeerStatus `json:"peers,omitempty"`
	// Targets reports, on agents, whether each tunnel's target answers.
	Targets []TargetStatus `json:"targets,omitempty"`
	// Routes reports, on gateways, the hostnames being served.
	Routes []string `json:"routes,omitempty"`
	// Probes reports, on gateways, whether each agent answered a probe
	// through the tunnel (quality.md 7).
	Probes []ProbeStatus `json:"probes,omitempty"`
	// ReportedForm marks a status in reported form (NodeStatus.Reported):
	// each peer's Connected is the node's word, not to be judged again
	// from its handshake time.
	ReportedForm bool `json:"reportedForm,omitempty"`
}

// PeerStatus is one WireGuard peer as the node sees it.
type PeerStatus struct {
	Name          string    `json:"name"`
	Endpoint      string    `json:"endpoint,omitempty"`
	LastHandshake time.Time `json:"lastHandshake,omitzero"`
	// Connected: the latest handshake was within api.SessionFresh when
	// the node reported it (set in the reported form, see
	// NodeStatus.Reported).
	Connected bool  `json:"connected,omitempty"`
	RxBytes   int64 `json:"rxBytes,omitempty"`
	TxBytes   int64 `json:"txBytes,omitempty"`
}

// TargetStatus is the reachability of one tunnel's target from its agent.
type TargetStatus struct {
	Tunnel    string    `json:"tunnel"`
	Reachable bool      `json:"reachable"`
	Message   string    `json:"message,omitempty"`
	CheckedAt time.Time `json:"checkedAt"`
}

// ProbeStatus is the result of a gateway's probe of one agent through the
// data path.
type ProbeStatus struct {
	Agent     string    `json:"agent"`
	OK        bool      `json:"ok"`
	Message   string    `json:"message,omitempty"`
	LatencyMS float64   `json:"latencyMs,omitempty"`
	CheckedAt time.Time `json:"checkedAt"`
}

// Slice is a node's view of the desired state, keyed by Item.Key.
type Slice map[string]Item

// Apply applies a Snapshot or Delta to s and returns the result; s is
// not modified.
func (s Slice) Apply(m Message) (Slice, error) {
	out := Slice{}
	switch m.Type {
	case Snapshot:
	case Delta:
		for k, v := range s {
			out[k] = v
		}
		for _, k := range m.Deleted {
			delete(out, k)
		}
	default:
		return nil, fmt.Errorf("apply %s: not a slice message", m.Type)
	}
	if err := m.CheckItems(); err != nil {
		return nil, err
	}
	for _, it := range m.Items {
		out[it.Key] = it
	}
	return out, nil
}

// CheckItems reports an item of a Snapshot or Delta that cannot be
// applied: one without a key.
func (m Message) CheckItems() error {
	for _, it := range m.Items {
		if it.Key == "" {
			return fmt.Errorf("apply %s: an item has no key", m.Type)
		}
	}
	return nil
}

// Digest is a hash of the slice's content, independent of map order.
func (s Slice) Digest() string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		data, _ := json.Marshal(s[k])
		h.Write(data)
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Diff returns the items of next that are new or changed relative to s,
// and the keys of s that next lacks, in key order.
func (s Slice) Diff(next Slice) (upserts []Item, deleted []string) {
	for k, it := range next {
		old, ok := s[k]
		if !ok || !sameItem(old, it) {
			upserts = append(upserts, it)
		}
	}
	for k := range s {
		if _, ok := next[k]; !ok {
			deleted = append(deleted, k)
		}
	}
	sort.Slice(upserts, func(i, j int) bool { return upserts[i].Key < upserts[j].Key })
	sort.Strings(deleted)
	return upserts, deleted
}

func sameItem(a, b Item) bool {
	da, _ := json.Marshal(a)
	db, _ := json.Marshal(b)
	return string(da) == string(db)
}

// Items returns the slice's items in key order.
func (s Slice) Items() []Item {
	out := make([]Item, 0, len(s))
	for _, it := range s {
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}
