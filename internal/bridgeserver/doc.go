// Package bridgeserver is Control's end of the watch bridge: it enrols
// nodes that present an API key, and serves each authenticated node its
// slice of the desired state over a WebSocket (a snapshot, then deltas,
// coalesced so a slow node never queues without bound), taking heartbeats
// and status back on the same connection.
//
// It may import api, api/bridge, store, reconcile, internal/credential and
// echo. Nodes never import it.
package bridgeserver
