package store

import (
	"context"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kakuremichi/kakuremichi/api"
)

// Secrets are opaque values kept beside the resources, under their own
// key prefix, for what must never be served by the REST API (a CA's
// private key, certificate keys). They are names and bytes: whoever
// stores one chooses its encoding. Names are paths such as
// "certificates/app.example.com".

// secretPrefix is where secrets live under the store's prefix; no kind's
// plural can collide with it because it is not a kind.
const secretPrefix = "secrets/"

func (s *Store) secretKey(name string) string { return s.prefix + secretPrefix + name }

func checkSecretName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\x00") {
		return fmt.Errorf("%w: invalid secret name %q", api.ErrBadRequest, name)
	}
	return nil
}

// GetSecret returns a secret's value and the revision it was last written
// at, or an error wrapping api.ErrNotFound.
func (s *Store) GetSecret(ctx context.Context, name string) ([]byte, int64, error) {
	op := fmt.Sprintf("get secret %q", name)
	if err := checkSecretName(name); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	resp, err := s.client.Get(ctx, s.secretKey(name))
	if err != nil {
		return nil, 0, s.mapErr(op, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("%s: %w", op, api.ErrNotFound)
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}

// CreateSecret stores a secret that must not exist yet; it fails with
// api.ErrAlreadyExists otherwise, so two writers racing to create one
// (two Control replicas making a CA) agree on the first.
func (s *Store) CreateSecret(ctx context.Context, name string, value []byte) error {
	op := fmt.Sprintf("create secret %q", name)
	if err := checkSecretName(name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	key := s.secretKey(name)
	resp, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(value))).Commit()
	if err != nil {
		return s.mapErr(op, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: %w", op, api.ErrAlreadyExists)
	}
	return nil
}

// PutSecret stores a secret. A non-zero ifRevision makes the write
// conditional on the secret being unchanged since that revision (else
// api.ErrConflict); zero writes unconditionally.
func (s *Store) PutSecret(ctx context.Context, name string, value []byte, ifRevision int64) error {
	op := fmt.Sprintf("put secret %q", name)
	if err := checkSecretName(name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	key := s.secretKey(name)
	if ifRevision == 0 {
		if _, err := s.client.Put(ctx, key, string(value)); err != nil {
			return s.mapErr(op, err)
		}
		return nil
	}
	resp, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", ifRevision)).
		Then(clientv3.OpPut(key, string(value))).Commit()
	if err != nil {
		return s.mapErr(op, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: %w", op, api.ErrConflict)
	}
	return nil
}

// DeleteSecret removes a secret; a missing one is not an error.
func (s *Store) DeleteSecret(ctx context.Context, name string) error {
	op := fmt.Sprintf("delete secret %q", name)
	if err := checkSecretName(name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if _, err := s.client.Delete(ctx, s.secretKey(name)); err != nil {
		return s.mapErr(op, err)
	}
	return nil
}

// Secret is one stored secret as ListSecrets returns it.
type Secret struct {
	// Name is the secret's name.
	Name string
	// Value is its content.
	Value []byte
	// Revision is the etcd revision it was last written at.
	Revision int64
}

// ListSecrets returns the secrets whose names start with prefix, sorted by
// name, and the revision they were read at: WatchSecrets from that
// revision + 1 misses nothing.
func (s *Store) ListSecrets(ctx context.Context, prefix string) ([]Secret, int64, error) {
	op := fmt.Sprintf("list secrets %q", prefix)
	base := s.prefix + secretPrefix
	resp, err := s.client.Get(ctx, base+prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, s.mapErr(op, err)
	}
	out := make([]Secret, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, Secret{Name: strings.TrimPrefix(string(kv.Key), base), Value: kv.Value, Revision: kv.ModRevision})
	}
	return out, resp.Header.Revision, nil
}

// LockKey is the etcd key prefix for a distributed lock (an etcd
// concurrency.Mutex) of the given name, under the store's prefix so that
// installations sharing one etcd cluster do not share locks.
func (s *Store) LockKey(name string) string { return s.prefix + "locks/" + name }

// SecretEvent is one change seen by WatchSecrets.
type SecretEvent struct {
	// Type is api.Added, api.Modified, api.Deleted or api.Error.
	Type api.WatchEventType
	// Name is the secret's name; Value its new value (nil for Deleted).
	Name  string
	Value []byte
	// Revision is the etcd revision of the change; 0 for Error.
	Revision int64
	// Err says why the watch ended, for Error only; it wraps api.ErrGone
	// when fromRev was compacted (list again).
	Err error
}

// WatchSecrets streams the changes to secrets whose names start with
// prefix from revision fromRev on (0: from now), with Watch's contract:
// the channel closes when ctx ends, the store closes, or after an Error
// event.
func (s *Store) WatchSecrets(ctx context.Context, prefix string, fromRev int64) (<-chan SecretEvent, error) {
	op := fmt.Sprintf("watch secrets %q", prefix)
	if fromRev < 0 {
		return nil, fmt.Errorf("%s: %w: revision %d is negative", op, api.ErrBadRequest, fromRev)
	}
	if fromRev == 0 {
		rev, err := s.Revision(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		fromRev = rev + 1
	}
	base := s.prefix + secretPrefix
	return watchPrefix(ctx, s, op, base+prefix, fromRev, nil,
		func(e *clientv3.Event) (SecretEvent, bool) {
			ev := SecretEvent{Name: strings.TrimPrefix(string(e.Kv.Key), base), Revision: e.Kv.ModRevision}
			switch {
			case e.Type == mvccpb.DELETE:
				ev.Type = api.Deleted
			case e.IsCreate():
				ev.Type, ev.Value = api.Added, e.Kv.Value
			default:
				ev.Type, ev.Value = api.Modified, e.Kv.Value
			}
			return ev, true
		},
		func(err error) SecretEvent { return SecretEvent{Type: api.Error, Err: err} }), nil
}

// DeleteSecretPrefix removes every secret whose name starts with prefix,
// in one request; none is not an error.
func (s *Store) DeleteSecretPrefix(ctx context.Context, prefix string) error {
	op := fmt.Sprintf("delete secrets %q", prefix)
	if err := checkSecretName(prefix); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if _, err := s.client.Delete(ctx, s.secretKey(prefix), clientv3.WithPrefix()); err != nil {
		return s.mapErr(op, err)
	}
	return nil
}
