package reconcile

import (
	"sync"
	"time"
)

// QueueConfig configures NewQueue.
type QueueConfig struct {
	// Backoff paces AddRateLimited per key; the zero value doubles from
	// 5 ms up to 30 s.
	Backoff Backoff
}

// Queue is a work queue of Requests with the guarantees controllers rely
// on, as client-go's workqueue gives them:
//
//   - a key waiting in the queue is there once, however often it is added;
//   - a key is handed to one worker at a time: added while being processed,
//     it waits and is queued again when that worker calls Done;
//   - AddRateLimited delays a key by a per-key exponential backoff that
//     Forget resets;
//   - memory is bounded by the number of distinct keys, not the number of
//     adds.
//
// A Queue owns no goroutine: delayed keys use timers that ShutDown stops.
type Queue struct {
	backoff Backoff

	mu sync.Mutex // guards every field below
	// cond is signalled when a key is queued or the queue shuts down.
	cond *sync.Cond
	// queue holds the keys ready for a worker, in order; each is also in
	// dirty.
	queue []Request
	// dirty holds every key that needs processing: those in queue and
	// those added while being processed.
	dirty map[Request]struct{}
	// processing holds the keys a worker has taken and not yet Done.
	processing map[Request]struct{}
	// waiting holds the one pending timer of each delayed key.
	waiting map[Request]*delayed
	// failures counts AddRateLimited calls since the key's last Forget.
	failures     map[Request]int
	shuttingDown bool
}

// delayed is a key's pending AddAfter.
type delayed struct {
	at    time.Time
	timer *time.Timer
}

// NewQueue returns an empty queue.
func NewQueue(cfg QueueConfig) *Queue {
	q := &Queue{
		backoff:    cfg.Backoff,
		dirty:      map[Request]struct{}{},
		processing: map[Request]struct{}{},
		waiting:    map[Request]*delayed{},
		failures:   map[Request]int{},
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add queues r unless it is already waiting for a worker. After ShutDown
// it does nothing.
func (q *Queue) Add(r Request) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(r)
}

func (q *Queue) addLocked(r Request) {
	if q.shuttingDown {
		return
	}
	if _, ok := q.dirty[r]; ok {
		return
	}
	q.dirty[r] = struct{}{}
	if _, ok := q.processing[r]; ok {
		return // Done queues it, so that no two workers hold r
	}
	q.queue = append(q.queue, r)
	q.cond.Signal()
}

// AddAfter queues r once d has passed; d <= 0 is Add. A key has at most
// one pending delay: an earlier one wins over a later one, which is
// enough because the reconcile it triggers can ask for more time.
func (q *Queue) AddAfter(r Request, d time.Duration) {
	if d <= 0 {
		q.Add(r)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shuttingDown {
		return
	}
	at := time.Now().Add(d)
	if w, ok := q.waiting[r]; ok {
		if !at.Before(w.at) {
			return
		}
		w.timer.Stop()
	}
	w := &delayed{at: at}
	w.timer = time.AfterFunc(d, func() { q.fire(r, w) })
	q.waiting[r] = w
}

// fire moves a delayed key into the queue, unless a later AddAfter
// replaced its delay in the meantime.
func (q *Queue) fire(r Request, w *delayed) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.waiting[r] != w {
		return
	}
	delete(q.waiting, r)
	q.addLocked(r)
}

// AddRateLimited queues r after its backoff delay, which doubles with
// each call until Forget.
func (q *Queue) AddRateLimited(r Request) {
	q.mu.Lock()
	n := q.failures[r]
	if !q.shuttingDown {
		q.failures[r] = n + 1
	}
	q.mu.Unlock()
	q.AddAfter(r, q.backoff.Delay(n))
}

// Forget resets r's backoff, after a success or a failure that will not
// be retried.
func (q *Queue) Forget(r Request) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.failures, r)
}

// NumRequeues returns how many times r was AddRateLimited since its last
// Forget.
func (q *Queue) NumRequeues(r Request) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[r]
}

// Get blocks until a key is ready and hands it to the caller, who must
// call Done with it. It returns false once the queue is shut down and
// drained.
func (q *Queue) Get() (Request, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queue) == 0 && !q.shuttingDown {
		q.cond.Wait()
	}
	if len(q.queue) == 0 {
		return Request{}, false
	}
	r := q.queue[0]
	q.queue[0] = Request{}
	q.queue = q.queue[1:]
	q.processing[r] = struct{}{}
	delete(q.dirty, r)
	return r, true
}

// Done tells the queue that processing r finished. If r was added in the
// meantime it is queued again now.
func (q *Queue) Done(r Request) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, r)
	if _, ok := q.dirty[r]; ok {
		q.queue = append(q.queue, r)
		q.cond.Signal()
	}
}

// Len returns how many keys wait for a worker (delayed keys not
// counted).
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// ShutDown stops the queue taking keys: Add, AddAfter and AddRateLimited
// do nothing from now on, pending delays are dropped, and Get hands out
// the keys already queued (so that workers drain them) and then returns
// false. Keys being processed finish normally. ShutDown is idempotent.
func (q *Queue) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shuttingDown = true
	for r, w := range q.waiting {
		w.timer.Stop()
		delete(q.waiting, r)
	}
	clear(q.failures)
	q.cond.Broadcast()
}

// ShuttingDown reports whether ShutDown was called.
func (q *Queue) ShuttingDown() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shuttingDown
}
