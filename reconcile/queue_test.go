package reconcile

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

func req(name string) Request { return Request{Key: api.Key{Kind: "Tunnel", Name: name}} }

// getWithin calls Get in a goroutine and fails the test if nothing comes
// within d.
func getWithin(t *testing.T, q *Queue, d time.Duration) (Request, bool) {
	t.Helper()
	type got struct {
		r  Request
		ok bool
	}
	ch := make(chan got, 1)
	go func() {
		r, ok := q.Get()
		ch <- got{r, ok}
	}()
	select {
	case g := <-ch:
		return g.r, g.ok
	case <-time.After(d):
		q.ShutDown() // unblocks the goroutine
		t.Fatalf("Get: got nothing within %v, want a key", d)
		return Request{}, false
	}
}

func TestQueueCoalesces(t *testing.T) {
	q := NewQueue(QueueConfig{})
	defer q.ShutDown()
	for range 5 {
		q.Add(req("a"))
		q.Add(req("b"))
	}
	q.Add(req("a"))
	if got := q.Len(); got != 2 {
		t.Fatalf("Len after adding a and b many times: got %d, want 2", got)
	}
	for _, want := range []Request{req("a"), req("b")} {
		r, ok := q.Get()
		if !ok || r != want {
			t.Fatalf("Get: got %v %v, want %v true", r, ok, want)
		}
		q.Done(r)
	}
	if got := q.Len(); got != 0 {
		t.Fatalf("Len after draining: got %d, want 0", got)
	}
}

func TestQueueKeyAddedWhileProcessingWaitsForDone(t *testing.T) {
	q := NewQueue(QueueConfig{})
	defer q.ShutDown()
	q.Add(req("a"))
	r, _ := q.Get()
	q.Add(req("a"))
	q.Add(req("a"))
	if got := q.Len(); got != 0 {
		t.Fatalf("Len while a is processed and re-added: got %d, want 0", got)
	}
	q.Done(r)
	if got := q.Len(); got != 1 {
		t.Fatalf("Len after Done: got %d, want 1", got)
	}
	if r2, ok := getWithin(t, q, time.Second); !ok || r2 != r {
		t.Fatalf("Get after Done: got %v %v, want %v true", r2, ok, r)
	}
}

// TestQueueNeverHandsOneKeyToTwoWorkers hammers a few keys from many
// producers and workers and detects overlapping processing of a key.
func TestQueueNeverHandsOneKeyToTwoWorkers(t *testing.T) {
	q := NewQueue(QueueConfig{})
	const keys, workers, adds = 4, 8, 4000
	var busy [keys]atomic.Int32
	var overlaps, processed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				r, ok := q.Get()
				if !ok {
					return
				}
				var i int
				fmt.Sscanf(r.Key.Name, "k%d", &i)
				if busy[i].Add(1) != 1 {
					overlaps.Add(1)
				}
				for range 3 { // hold the key and let others run, so collisions would show
					runtime.Gosched()
				}
				busy[i].Add(-1)
				processed.Add(1)
				q.Done(r)
			}
		})
	}
	var producers sync.WaitGroup
	for p := range 4 {
		producers.Go(func() {
			for n := range adds / 4 {
				q.Add(req(fmt.Sprintf("k%d", (n+p)%keys)))
			}
		})
	}
	producers.Wait()
	q.ShutDown()
	wg.Wait()
	if got := overlaps.Load(); got != 0 {
		t.Fatalf("overlapping reconciles of one key: got %d, want 0", got)
	}
	if got := processed.Load(); got < keys || got > adds {
		t.Fatalf("processed: got %d, want between %d and %d", got, keys, adds)
	}
}

func TestQueueAddAfter(t *testing.T) {
	q := NewQueue(QueueConfig{})
	defer q.ShutDown()
	start := time.Now()
	q.AddAfter(req("late"), time.Hour)
	q.AddAfter(req("a"), 30*time.Millisecond)
	q.AddAfter(req("a"), time.Hour) // a later delay does not postpone the earlier one
	r, ok := getWithin(t, q, 5*time.Second)
	if !ok || r != req("a") {
		t.Fatalf("Get: got %v %v, want %v true", r, ok, req("a"))
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("a came after %v, want at least 30ms", d)
	}
	q.Done(r)
	q.AddAfter(req("b"), 0) // zero is Add
	if got := q.Len(); got != 1 {
		t.Fatalf("Len after AddAfter(0): got %d, want 1", got)
	}
}

func TestQueueEarlierDelayReplacesLater(t *testing.T) {
	q := NewQueue(QueueConfig{})
	defer q.ShutDown()
	q.AddAfter(req("a"), time.Hour)
	q.AddAfter(req("a"), 10*time.Millisecond)
	if r, ok := getWithin(t, q, 5*time.Second); !ok || r != req("a") {
		t.Fatalf("Get: got %v %v, want %v true", r, ok, req("a"))
	}
	q.mu.Lock()
	waiting := len(q.waiting)
	q.mu.Unlock()
	if waiting != 0 {
		t.Fatalf("pending delays after the earlier one fired: got %d, want 0 (the later one was replaced)", waiting)
	}
}

func TestQueueRateLimitedBacksOffAndForgets(t *testing.T) {
	q := NewQueue(QueueConfig{Backoff: Backoff{Min: 20 * time.Millisecond, Max: 80 * time.Millisecond}})
	defer q.ShutDown()
	r := req("a")
	var gaps []time.Duration
	for range 4 {
		start := time.Now()
		q.AddRateLimited(r)
		got, ok := getWithin(t, q, 5*time.Second)
		if !ok || got != r {
			t.Fatalf("Get: got %v %v, want %v true", got, ok, r)
		}
		gaps = append(gaps, time.Since(start))
		q.Done(r)
	}
	// Delay(n) is in [d/2, d] for d = 20ms·2^n capped at 80ms.
	wantMin := []time.Duration{10, 20, 40, 40}
	for i, g := range gaps {
		if g < wantMin[i]*time.Millisecond {
			t.Fatalf("retry %d came after %v, want at least %v", i, g, wantMin[i]*time.Millisecond)
		}
	}
	if got := q.NumRequeues(r); got != 4 {
		t.Fatalf("NumRequeues: got %d, want 4", got)
	}
	q.Forget(r)
	if got := q.NumRequeues(r); got != 0 {
		t.Fatalf("NumRequeues after Forget: got %d, want 0", got)
	}
}

func TestQueueShutDownDrains(t *testing.T) {
	q := NewQueue(QueueConfig{})
	q.Add(req("a"))
	q.Add(req("b"))
	q.AddAfter(req("c"), time.Hour)
	q.ShutDown()
	q.Add(req("d"))
	var got []string
	for {
		r, ok := q.Get()
		if !ok {
			break
		}
		got = append(got, r.Key.Name)
		q.Done(r)
	}
	if fmt.Sprint(got) != "[a b]" {
		t.Fatalf("keys handed out after ShutDown: got %v, want [a b]", got)
	}
	q.mu.Lock()
	waiting := len(q.waiting)
	q.mu.Unlock()
	if waiting != 0 {
		t.Fatalf("pending delays after ShutDown: got %d, want 0", waiting)
	}
	q.ShutDown() // idempotent
	if !q.ShuttingDown() {
		t.Fatalf("ShuttingDown: got false, want true")
	}
}

func TestQueueShutDownWakesBlockedGet(t *testing.T) {
	q := NewQueue(QueueConfig{})
	done := make(chan bool)
	go func() {
		_, ok := q.Get()
		done <- ok
	}()
	q.ShutDown()
	select {
	case ok := <-done:
		if ok {
			t.Fatalf("Get on an empty queue after ShutDown: got true, want false")
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Get still blocked 5s after ShutDown, want it to return false")
	}
}

// TestQueueStaysBounded checks that memory follows distinct keys, not adds.
func TestQueueStaysBounded(t *testing.T) {
	q := NewQueue(QueueConfig{Backoff: Backoff{Min: time.Hour, Max: time.Hour}})
	defer q.ShutDown()
	for n := range 10000 {
		k := req(fmt.Sprintf("k%d", n%10))
		q.Add(k)
		q.AddAfter(k, time.Duration(n%7+1)*time.Minute)
		q.AddRateLimited(k)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) != 10 || len(q.dirty) != 10 || len(q.waiting) != 10 || len(q.failures) != 10 {
		t.Fatalf("sizes after 10000 adds of 10 keys: got queue %d, dirty %d, waiting %d, failures %d, want 10 each",
			len(q.queue), len(q.dirty), len(q.waiting), len(q.failures))
	}
}
