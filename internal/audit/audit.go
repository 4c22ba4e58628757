// Package audit keeps the audit log: who changed what, when and from
// where, for every change made through the API or the web UI. Entries
// live in etcd under their own prefix, each bound to a lease so etcd
// forgets them after the retention period without a sweeper. It imports
// the etcd client and the standard library.
package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Entry is one change.
type Entry struct {
	// Time is when the request finished.
	Time time.Time `json:"time"`
	// User is the user or token name; empty for a failed login.
	User string `json:"user,omitempty"`
	// Role is the caller's role, when authenticated.
	Role string `json:"role,omitempty"`
	// Method and Path are the request's; the query is left out, so no
	// secret in one is kept.
	Method string `json:"method"`
	Path   string `json:"path"`
	// Detail says what the change was when the path alone does not (a
	// setting's new value, the role of a token made); never a secret.
	Detail string `json:"detail,omitempty"`
	// Status is the HTTP status of the answer.
	Status int `json:"status"`
	// Addr is the client's address (the TCP peer).
	Addr string `json:"addr"`
}

// Config configures a Log.
type Config struct {
	// Client is Control's etcd client. Required.
	Client *clientv3.Client
	// Prefix starts every key; "" means "/kakuremichi/audit/".
	Prefix string
	// Retention is how long entries are kept; zero means 30 days.
	Retention time.Duration
	// Now returns the current time; nil uses time.Now.
	Now func() time.Time
}

// Log writes and reads audit entries.
type Log struct {
	kv        *clientv3.Client
	prefix    string
	retention time.Duration
	now       func() time.Time

	mu      sync.Mutex // guards lease and leaseAt
	lease   clientv3.LeaseID
	leaseAt time.Time
}

// New builds a Log.
func New(cfg Config) (*Log, error) {
	if cfg.Client == nil {
		return nil, errors.New("audit: an etcd client is required")
	}
	l := &Log{kv: cfg.Client, prefix: cfg.Prefix, retention: cfg.Retention, now: cfg.Now}
	if l.prefix == "" {
		l.prefix = "/kakuremichi/audit/"
	}
	if l.retention == 0 {
		l.retention = 30 * 24 * time.Hour
	}
	if l.now == nil {
		l.now = time.Now
	}
	return l, nil
}

// leaseFor returns a lease that outlives an entry written now by the
// retention period. One lease serves every entry of an hour, so a busy
// log does not make a lease per write; entries live up to an hour longer.
func (l *Log) leaseFor(ctx context.Context) (clientv3.LeaseID, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.lease != 0 && now.Sub(l.leaseAt) < time.Hour {
		return l.lease, nil
	}
	resp, err := l.kv.Grant(ctx, int64((l.retention + time.Hour).Seconds()))
	if err != nil {
		return 0, err
	}
	l.lease, l.leaseAt = resp.ID, now
	return l.lease, nil
}

// Record writes one entry.
func (l *Log) Record(ctx context.Context, e Entry) error {
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.UTC()
	lease, err := l.leaseFor(ctx)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	// Zero-padded nanoseconds sort keys by time; the random suffix keeps
	// two entries of the same instant apart.
	key := fmt.Sprintf("%s%020d-%s", l.prefix, e.Time.UnixNano(), hex.EncodeToString(b))
	data, _ := json.Marshal(e)
	if _, err := l.kv.Put(ctx, key, string(data), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("audit: record %s %s: %w", e.Method, e.Path, err)
	}
	return nil
}

// List returns up to limit entries, newest first; limit 0 means 100.
func (l *Log) List(ctx context.Context, limit int) ([]Entry, error) {
	if limit <= 0 {
		limit = 100
	}
	resp, err := l.kv.Get(ctx, l.prefix, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	out := make([]Entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e Entry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("audit: decode %s: %w", kv.Key, err)
		}
		out = append(out, e)
	}
	return out, nil
}
