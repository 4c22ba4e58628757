package reconcile

import (
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		lo, hi  time.Duration
	}{
		{"first retry", Backoff{}, 0, DefaultBackoffMin / 2, DefaultBackoffMin},
		{"doubles", Backoff{}, 3, 20 * time.Millisecond, 40 * time.Millisecond},
		{"capped", Backoff{}, 30, DefaultBackoffMax / 2, DefaultBackoffMax},
		{"no overflow", Backoff{Min: time.Second, Max: 1<<63 - 1}, 200, (1<<63 - 1) / 2, 1<<63 - 1},
		{"custom", Backoff{Min: 100 * time.Millisecond, Max: time.Second}, 2, 200 * time.Millisecond, 400 * time.Millisecond},
		{"custom capped", Backoff{Min: 100 * time.Millisecond, Max: time.Second}, 10, 500 * time.Millisecond, time.Second},
		{"max below min", Backoff{Min: time.Second, Max: time.Millisecond}, 5, 500 * time.Millisecond, time.Second},
		{"negative attempt", Backoff{Min: time.Second}, -1, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 200 {
				if got := tt.b.Delay(tt.attempt); got < tt.lo || got > tt.hi {
					t.Fatalf("Delay(%d): got %v, want within [%v, %v]", tt.attempt, got, tt.lo, tt.hi)
				}
			}
		})
	}
}

// TestBackoffJitters checks that clients failing together spread out.
func TestBackoffJitters(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 100 {
		seen[Backoff{}.Delay(20)] = true
	}
	if len(seen) < 10 {
		t.Fatalf("100 capped delays: got %d distinct values, want at least 10", len(seen))
	}
}
