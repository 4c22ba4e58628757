package certs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/store"
)

// storagePrefix is where ACME state (account keys, certificates, order
// bookkeeping) lives among the store's secrets.
const storagePrefix = "acme/"

// lockTTL is how long a lock outlives a Control replica that died holding
// it: etcd revokes the lease and the next replica proceeds.
const lockTTL = 30 // seconds

// Storage is certmagic's Storage (and TryLocker) on the store: values are
// secrets, never served by the REST API, and locks are etcd mutexes (the
// concurrency package), so several Control replicas sharing one etcd
// cluster never run one ACME order twice.
type Storage struct {
	st *store.Store

	// mu guards held.
	mu sync.Mutex
	// held maps a lock name to the session and mutex holding it. Each
	// lock has a session (an etcd lease) of its own: two goroutines of
	// one process must exclude each other too, and etcd's mutex is
	// re-entrant within one session.
	held map[string]heldLock
}

type heldLock struct {
	session *concurrency.Session
	mutex   *concurrency.Mutex
}

var (
	_ certmagic.Storage   = (*Storage)(nil)
	_ certmagic.TryLocker = (*Storage)(nil)
)

// NewStorage returns a Storage on st.
func NewStorage(st *store.Store) *Storage {
	return &Storage{st: st, held: map[string]heldLock{}}
}

// envelope is the stored form of a value: certmagic wants a modification
// time, which an etcd revision is not.
type envelope struct {
	Modified time.Time `json:"modified"`
	Value    []byte    `json:"value"`
}

func secretName(key string) string { return storagePrefix + strings.Trim(key, "/") }

// Store implements certmagic.Storage.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	data, err := json.Marshal(envelope{Modified: time.Now().UTC(), Value: value})
	if err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return s.st.PutSecret(ctx, secretName(key), data, 0)
}

func (s *Storage) load(ctx context.Context, key string) (envelope, error) {
	data, _, err := s.st.GetSecret(ctx, secretName(key))
	if errors.Is(err, api.ErrNotFound) {
		return envelope{}, fmt.Errorf("load %s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return envelope{}, err
	}
	var e envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return envelope{}, fmt.Errorf("load %s: %w", key, err)
	}
	return e, nil
}

// Load implements certmagic.Storage; a missing key wraps fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	e, err := s.load(ctx, key)
	return e.Value, err
}

// Delete implements certmagic.Storage: the key and, as a directory,
// everything under it.
func (s *Storage) Delete(ctx context.Context, key string) error {
	if err := s.st.DeleteSecret(ctx, secretName(key)); err != nil {
		return err
	}
	return s.st.DeleteSecretPrefix(ctx, secretName(key)+"/")
}

// Exists implements certmagic.Storage.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// List implements certmagic.Storage.
func (s *Storage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	dir := strings.Trim(path, "/")
	prefix := storagePrefix
	if dir != "" {
		prefix += dir + "/"
	}
	secrets, _, err := s.st.ListSecrets(ctx, prefix)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, sec := range secrets {
		rel := strings.TrimPrefix(sec.Name, prefix)
		if !recursive {
			rel, _, _ = strings.Cut(rel, "/")
		}
		key := rel
		if dir != "" {
			key = dir + "/" + rel
		}
		if !seen[key] {
			seen[key] = true
			out = append(out, key)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("list %s: %w", path, fs.ErrNotExist)
	}
	sort.Strings(out)
	return out, nil
}

// Stat implements certmagic.Storage; a key with keys under it is a
// directory.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	e, err := s.load(ctx, key)
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: e.Modified, Size: int64(len(e.Value)), IsTerminal: true}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return certmagic.KeyInfo{}, err
	}
	children, _, lerr := s.st.ListSecrets(ctx, secretName(key)+"/")
	if lerr != nil {
		return certmagic.KeyInfo{}, lerr
	}
	if len(children) == 0 {
		return certmagic.KeyInfo{}, err
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

func (s *Storage) newMutex(ctx context.Context, name string) (*concurrency.Session, *concurrency.Mutex, error) {
	sess, err := concurrency.NewSession(s.st.Client(), concurrency.WithTTL(lockTTL), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, nil, fmt.Errorf("lock %s: open a session: %w", name, err)
	}
	return sess, concurrency.NewMutex(sess, s.st.LockKey(storagePrefix+name)), nil
}

// Lock implements certmagic.Locker: it blocks until no other holder, in
// this process or another replica, has the lock, or ctx ends.
func (s *Storage) Lock(ctx context.Context, name string) error {
	sess, m, err := s.newMutex(ctx, name)
	if err != nil {
		return err
	}
	if err := m.Lock(ctx); err != nil {
		sess.Close()
		return fmt.Errorf("lock %s: %w", name, err)
	}
	s.mu.Lock()
	s.held[name] = heldLock{session: sess, mutex: m}
	s.mu.Unlock()
	return nil
}

// TryLock implements certmagic.TryLocker: false, without waiting, when
// someone else holds the lock.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	sess, m, err := s.newMutex(ctx, name)
	if err != nil {
		return false, err
	}
	if err := m.TryLock(ctx); err != nil {
		sess.Close()
		if errors.Is(err, concurrency.ErrLocked) {
			return false, nil
		}
		return false, fmt.Errorf("lock %s: %w", name, err)
	}
	s.mu.Lock()
	s.held[name] = heldLock{session: sess, mutex: m}
	s.mu.Unlock()
	return true, nil
}

// Unlock implements certmagic.Locker.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h, ok := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("unlock %s: not held", name)
	}
	err := h.mutex.Unlock(ctx)
	// Closing the session revokes its lease, which releases the lock
	// even if the unlock request itself failed.
	if cerr := h.session.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("unlock %s: %w", name, err)
	}
	return nil
}

// Close releases every lock still held, as a replica shutting down.
func (s *Storage) Close() error {
	s.mu.Lock()
	held := s.held
	s.held = map[string]heldLock{}
	s.mu.Unlock()
	var errs []error
	for _, h := range held {
		errs = append(errs, h.session.Close())
	}
	return errors.Join(errs...)
}
