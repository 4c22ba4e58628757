package accounts

import (
	"math"
	"sync"
	"time"
)

// limiter is a set of token buckets, one per key (an account name or a
// client address), kept in memory: a restart forgets them, which costs an
// attacker nothing they could not get by waiting a minute.
type limiter struct {
	rate  float64 // tokens added per second
	burst float64
	max   int // most buckets kept; full buckets are dropped first

	mu      sync.Mutex // guards buckets
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(perMinute, burst, max int) *limiter {
	return &limiter{rate: float64(perMinute) / 60, burst: float64(burst), max: max, buckets: map[string]*bucket{}}
}

// take spends one token of key's bucket. When the bucket is empty it
// returns false and how long until a token is back.
func (l *limiter) take(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.max {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+el*l.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

// prune drops buckets that have refilled, and if that is not enough, every
// bucket: memory stays bounded whatever an attacker sends, at the price of
// forgetting limits under a flood of distinct keys.
func (l *limiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.max {
		clear(l.buckets)
	}
}
