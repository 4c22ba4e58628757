package nodecmd

import (
	"context"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// TestTrimAfterBursts: memory is returned once, after a busy interval is
// followed by a quiet one; never while traffic flows, never on a node that
// was idle all along.
func TestTrimAfterBursts(t *testing.T) {
	// Bytes moved in each interval.
	moved := []int64{0, 0, 10 << 20, 20 << 20, 0, 0, 5 << 20, 100, 0, 0}
	totals := make(chan int64) // what status reports, one value per call
	calls := 0                 // status calls so far (the first at start); the loop's own
	var trims []int
	status := func() bridge.NodeStatus {
		calls++
		return bridge.NodeStatus{Peers: []bridge.PeerStatus{{RxBytes: <-totals}}}
	}
	ticks := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		trimAfterBursts(ctx, status, ticks, 1<<20, func() { trims = append(trims, calls-2) })
	}()
	var total int64
	totals <- total // at start
	for _, m := range moved {
		total += m
		ticks <- time.Time{}
		totals <- total
	}
	cancel()
	<-done
	// Busy in intervals 2-3, quiet in 4: one trim. Busy in 6, quiet in 7
	// (100 bytes is quiet): one more.
	if len(trims) != 2 || trims[0] != 4 || trims[1] != 7 {
		t.Fatalf("trims after intervals %v, want [4 7]", trims)
	}
}
