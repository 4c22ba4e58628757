package reconcile

import (
	"math/rand/v2"
	"time"
)

// Default bounds of a zero Backoff.
const (
	DefaultBackoffMin = 5 * time.Millisecond
	DefaultBackoffMax = 30 * time.Second
)

// Backoff is a capped exponential backoff with jitter. The zero value
// waits from DefaultBackoffMin up to DefaultBackoffMax.
type Backoff struct {
	// Min is the upper bound of the first delay; zero means
	// DefaultBackoffMin.
	Min time.Duration
	// Max caps every delay; zero means DefaultBackoffMax. A Max below Min
	// is raised to Min.
	Max time.Duration
}

// Delay returns how long to wait before retry number attempt (0 for the
// first retry): Min doubled attempt times and capped at Max, of which a
// random half is taken away so that many clients failing together do not
// retry together. The result is in [d/2, d] for that capped d, and never
// above Max.
func (b Backoff) Delay(attempt int) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultBackoffMin
	}
	if hi <= 0 {
		hi = DefaultBackoffMax
	}
	if hi < lo {
		hi = lo
	}
	d := lo
	for i := 0; i < attempt && d < hi; i++ {
		if d > hi/2 {
			d = hi // doubling would pass the cap (or overflow)
			break
		}
		d *= 2
	}
	half := d / 2
	return d - half + rand.N(half+1)
}
