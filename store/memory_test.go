package store

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// TestLargeWritesAreNotKeptInMemory: the embedded etcd keeps its latest
// raft entries in memory, whole; a single member needs only a few. After
// 300 status writes of 128 KB (37.5 MB in all) the heap holds far less
// than the writes did: with etcd's default of 5,000 entries kept, all of
// them stayed.
func TestLargeWritesAreNotKeptInMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 37.5 MB")
	}
	s := openTestStore(t, Config{})
	// Hundreds of large writes take a while under the race detector.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	gw := &api.Gateway{Metadata: api.ObjectMeta{Name: "gw"}}
	mustCreate(t, s, gw)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	const writes, size = 300, 128 << 10
	reason := strings.Repeat("x", 200)
	for i := range writes {
		cur, err := s.Get(ctx, "gateways", "gw")
		if err != nil {
			t.Fatal(err)
		}
		g := cur.(*api.Gateway)
		g.Status.Agents = nil
		// Each write differs from the last, as heartbeats do.
		for j := 0; j < size/256; j++ {
			g.Status.Agents = append(g.Status.Agents, api.NodePeerStatus{Name: fmt.Sprintf("agent-%05d-%03d", j, i%1000), Probe: reason[:200]})
		}
		if _, err := s.UpdateStatus(ctx, g, WriteOptions{}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	grown := int64(heap()) - int64(before)
	t.Logf("heap grew by %d MiB over %d writes of %d KiB", grown>>20, writes, size>>10)
	if limit := int64(writes * size * 2 / 3); grown > limit {
		t.Fatalf("heap grew by %d MiB after %d writes of %d KiB; want under %d MiB: the writes are kept in memory",
			grown>>20, writes, size>>10, limit>>20)
	}
}
