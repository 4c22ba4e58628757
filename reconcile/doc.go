// Package reconcile is the small runtime every kakuremichi loop is built
// on, in Control as in gateways and agents: an Informer that lists and
// watches one kind into a read-only cache, a Queue that coalesces keys and
// retries failures with capped exponential backoff, and a Controller that
// feeds the keys to a Reconciler with a fixed number of workers.
//
// Reconciles are level-based: a Request carries an object's key, never
// the event that caused it, and a Reconciler re-reads the state it needs
// on every call, so it can run again at any time and still do the right
// thing. An error means "retry with backoff"; Terminal marks an error that
// retrying cannot fix; Result.RequeueAfter asks to be called again after a
// while (to wait on time, not on a failure).
//
// reconcile knows nothing of where objects come from: anything that
// implements ListerWatcher will do (the store in Control, the REST watch
// client in nodes). It imports only the standard library and package api;
// never etcd, echo, the store or the API server.
package reconcile
