// Package store is kakuremichi's typed access to etcd, where the desired
// state lives: get, list (with the revision it was read at), create,
// update and status update with optimistic concurrency on the etcd
// ModRevision, delete with finalizers, and watch from a revision.
//
// Open starts an embedded etcd inside a data directory (the default: one
// binary, nothing to install) or connects to an external cluster. Objects
// are stored as JSON under <prefix><plural>/<name>; their resourceVersion
// is never stored but set on every read from the key's ModRevision, so it
// is always the revision of the last write.
//
// The intended use is the one of Kubernetes' informers: List, then Watch
// from the list's revision + 1; a watch that ends with an Event wrapping
// api.ErrGone means that revision was compacted and the caller lists
// again. Errors wrap the sentinels of package api (api.ErrNotFound,
// api.ErrConflict, api.ErrAlreadyExists, api.ErrGone, api.ErrNoSpace,
// api.ErrUnavailable, api.ErrBadRequest) so the API server can map them
// to HTTP codes.
//
// store imports package api, etcd's server and client, and the standard
// library. It must not import the API server, controllers or any node
// code; nodes (gateways, agents) never import it.
package store
