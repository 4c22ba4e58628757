package leakcheck

import (
	"testing"
)

// fakeT records whether Errorf was called; Cleanup runs the functions
// when finish is called, as testing does at the end of a test.
type fakeT struct {
	testing.TB
	cleanups []func()
	failed   bool
}

func (f *fakeT) Helper()               {}
func (f *fakeT) Cleanup(fn func())     { f.cleanups = append(f.cleanups, fn) }
func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) finish() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func TestGoroutines(t *testing.T) {
	clean := &fakeT{TB: t}
	Goroutines(clean)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { <-stop; close(done) }()
	clean.Cleanup(func() { close(stop); <-done })
	clean.finish()
	if clean.failed {
		t.Fatal("got a failure for a goroutine stopped by a cleanup, want none")
	}
	if testing.Short() {
		return
	}
	leaky := &fakeT{TB: t}
	Goroutines(leaky)
	block := make(chan struct{})
	defer close(block)
	go func() { <-block }()
	leaky.finish()
	if !leaky.failed {
		t.Fatal("got no failure for a goroutine left running, want one")
	}
}
