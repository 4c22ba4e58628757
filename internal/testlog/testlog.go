// Package testlog is for tests: a debug logger whose records are kept and
// printed only when the test fails (or always, with
// KAKUREMICHI_TEST_LOGS=1, to study a passing run). It imports only the
// standard library.
package testlog

import (
	"bytes"
	"log/slog"
	"os"
	"sync"
	"testing"
)

// Buffer keeps every record written to it.
type Buffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// New returns a debug logger tagged node=name whose records t prints under
// "logs of name" when it fails.
func New(t testing.TB, name string) *slog.Logger {
	b := &Buffer{}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("KAKUREMICHI_TEST_LOGS") != "" {
			t.Logf("logs of %s:\n%s", name, b)
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
}
