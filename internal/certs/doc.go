// Package certs is Control's side of certificates: the internal CA kept in
// the store, the controller that holds one certificate per hostname of an
// enabled http tunnel (issuing, renewing in the last third of its life,
// and removing it with its tunnel), and the source through which the watch
// bridge delivers certificates and keys to gateways.
//
// It imports api, reconcile and store (and etcd's concurrency package for
// the lock that keeps Control replicas from issuing twice); never gateway
// or agent code.
package certs
