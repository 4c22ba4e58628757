package audit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestRecordListAndRetention(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l, err := New(Config{Client: st.Client(), Retention: 48 * time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := l.Record(ctx, Entry{Time: now.Add(time.Duration(i) * time.Second), User: fmt.Sprintf("u%d", i), Method: "POST", Path: "/x", Status: 201}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := l.List(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].User != "u4" || got[2].User != "u2" {
		t.Fatalf("got %+v, want the newest three, newest first", got)
	}
	// Every entry is bound to one lease that ends after the retention.
	resp, err := st.Client().Get(ctx, "/kakuremichi/audit/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	leases := map[int64]bool{}
	for _, kv := range resp.Kvs {
		leases[kv.Lease] = true
	}
	if len(leases) != 1 || leases[0] {
		t.Fatalf("got leases %v, want one shared lease", leases)
	}
	for id := range leases {
		ttl, err := st.Client().TimeToLive(ctx, clientv3.LeaseID(id))
		if err != nil {
			t.Fatal(err)
		}
		if want := int64((49 * time.Hour).Seconds()); ttl.GrantedTTL != want {
			t.Errorf("got lease TTL %d s, want %d s (retention + 1 h)", ttl.GrantedTTL, want)
		}
	}
	// An hour later a new lease is taken, so no entry outlives its term
	// by more than an hour.
	now = now.Add(61 * time.Minute)
	if err := l.Record(ctx, Entry{Method: "DELETE", Path: "/y", Status: 200}); err != nil {
		t.Fatal(err)
	}
	resp, _ = st.Client().Get(ctx, "/kakuremichi/audit/", clientv3.WithPrefix())
	for _, kv := range resp.Kvs {
		leases[kv.Lease] = true
	}
	if len(leases) != 2 {
		t.Errorf("got %d leases after an hour, want 2", len(leases))
	}
}
