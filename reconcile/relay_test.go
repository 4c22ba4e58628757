package reconcile

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// TestRelay checks that Relay converts and drops as conv says and closes
// when its source does, and that once ctx ends it drains the source
// rather than leave it blocked.
func TestRelay(t *testing.T) {
	in := make(chan int)
	conv := func(i int) (Event, bool) { return Event{Type: api.Modified, Revision: int64(i)}, i%2 == 0 }
	out := Relay(context.Background(), in, conv)
	go func() {
		for i := range 6 {
			in <- i
		}
		close(in)
	}()
	var got []int64
	for ev := range out {
		got = append(got, ev.Revision)
	}
	if !slices.Equal(got, []int64{0, 2, 4}) {
		t.Fatalf("relayed revisions %v, want [0 2 4]", got)
	}

	// Nobody reads the relay after ctx ends: the source still gets rid
	// of everything it sends.
	ctx, cancel := context.WithCancel(context.Background())
	in = make(chan int)
	out = Relay(ctx, in, conv)
	in <- 0 // taken by the relay, which now waits to hand it on
	cancel()
	sent := make(chan struct{})
	go func() {
		for i := range 100 {
			in <- i
		}
		close(in)
		close(sent)
	}()
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("the source is blocked 10 s after the relay's context ended")
	}
	for range out {
	}
}
