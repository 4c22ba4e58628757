// Package controllers holds Control's reconcile loops, each a
// reconcile.Reconciler run by a reconcile.Controller over informer caches:
//
//   - tunnel status: which tunnel owns each hostname (the oldest) and each
//     tcp public port, whether its agent is connected and reaches the
//     target, which gateways serve it, and the Ready condition computed
//     from the tunnel's other conditions;
//   - overlay addresses: every agent and gateway gets a unique address
//     on the overlay, kept for as long as the node exists;
//   - node liveness: Connected from heartbeats under a lease,
//     DataPathReady from probes through WireGuard, and Ready;
//   - garbage collection: objects whose every owner is gone are deleted.
//
// Deleting objects that carry no finalizers is the store's job, not a
// loop's. New(Config) builds an informer per kind and every controller;
// Manager.Run runs them together, which is what `kakuremichi control`
// calls.
//
// controllers reaches the store only through the small Store interface
// defined here, so it can be tested against any implementation (see
// reconcile/reconciletest). It imports package api, package reconcile and
// the standard library; never etcd, echo, the store or the API server.
package controllers
