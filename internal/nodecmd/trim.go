package nodecmd

import (
	"context"
	"runtime/debug"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// trimInterval is how often a node looks at its traffic to decide whether
// to trim; trimMinBytes is what makes an interval busy.
const (
	trimInterval = 30 * time.Second
	trimMinBytes = 16 << 20
)

// trimAfterBursts hands memory back to the system once traffic has
// stopped. A burst through the tunnel takes tens of MiB of WireGuard
// buffers (64 KiB each, pooled) and TCP buffers; Go keeps them for minutes
// after they are free, so a node that moved a few GiB an hour ago still
// looked 80 MiB large. After an interval that moved at least minBytes
// followed by one that moved almost nothing, it runs the garbage collector
// and returns the free pages at once; an idle or a steadily busy node is
// left alone.
// It looks at each tick.
func trimAfterBursts(ctx context.Context, status func() bridge.NodeStatus, ticks <-chan time.Time, minBytes int64, trim func()) {
	total := func() int64 {
		var n int64
		for _, p := range status().Peers {
			n += p.RxBytes + p.TxBytes
		}
		return n
	}
	last, busy := total(), false
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
		now := total()
		moved := now - last
		last = now
		switch {
		case moved >= minBytes:
			busy = true
		case busy && moved < minBytes/64:
			busy = false
			trim()
		}
	}
}

// freeMemory is the trim of a real process.
func freeMemory() { debug.FreeOSMemory() }
