// Package leakcheck is for tests: it fails a test that leaves goroutines
// running after everything it started has been cleaned up (style.md 12:
// each goroutine has an owner that stops it). It imports only the
// standard library.
package leakcheck

import (
	"runtime"
	"testing"
	"time"
)

// Goroutines fails t if, once every cleanup t registered after this call
// has run, more goroutines run than when it was called. Call it first in a
// test, so that its own cleanup runs last. Goroutines that are on their way
// out get ten seconds to finish.
func Goroutines(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines after the test's cleanup: got %d, want <= %d\n%s", n, before, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
