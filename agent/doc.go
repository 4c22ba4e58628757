// Package agent is the core of `kakuremichi agent`, the node that sits
// beside applications behind NAT and publishes them without opening a
// port. It holds one userspace WireGuard device (internal/wgnet) whose
// peers are the gateways of its slice, listens on its overlay address at
// bridge.AgentForwardPort, and for each stream a gateway opens there reads
// the preamble naming a tunnel, dials that tunnel's target (http, https or
// tcp) and splices the two connections. It dials nothing but the targets
// of its own enabled tunnels, so it is never an open proxy; inside the
// tunnel it also knocks on each gateway's overlay address every probe
// round, so that WireGuard notices a gateway that lost its session.
//
// The agent is driven by its slice of the desired state: [Agent.Apply]
// converges the device, the peers and the forwards to each slice it is
// given (level-triggered and idempotent), [Agent.Status] reports what runs,
// and [Agent.Run] serves streams and probes targets until its context ends,
// then drains. Fetching the slice from Control and sending the status back
// is the node client's job, not this package's.
//
// It imports the standard library, package api (sentinel errors),
// api/bridge (the slice, the status and the stream preamble) and
// internal/wgnet; never the store, reconcile or Control's packages.
package agent
