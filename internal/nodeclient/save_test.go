package nodeclient

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// TestSaveCoalescesABurst checks that the slice file is written at once
// after a quiet spell, that a burst of changes after it is written once,
// with the newest slice, saveInterval later, and that a write still due
// when the client stops is done then.
func TestSaveCoalescesABurst(t *testing.T) {
	dir := t.TempDir()
	c := &Client{cfg: Config{StateDir: dir, SaveInterval: saveInterval}, log: slog.New(slog.DiscardHandler)}
	path := filepath.Join(dir, sliceFile)
	set := func(rev int64) {
		sl := bridge.Slice{"self": {Key: "self", Self: &bridge.Self{Name: "n"}}}
		c.mu.Lock()
		c.slice, c.enc, c.revision = sl, encode(sl), rev
		c.mu.Unlock()
		c.saveSoon()
	}
	savedRev := func() int64 {
		data, err := os.ReadFile(path)
		if err != nil {
			return -1
		}
		var s savedSlice
		if err := json.Unmarshal(data, &s); err != nil {
			t.Fatalf("slice file: %v", err)
		}
		return s.Revision
	}
	// The write is never the caller's: "at once" is soon after.
	start := time.Now()
	set(1)
	for savedRev() != 1 {
		if d := time.Since(start); d > saveInterval/2 {
			t.Fatalf("after a quiet spell: saved revision %d after %v, want 1 at once", savedRev(), d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for rev := int64(2); rev <= 5; rev++ {
		set(rev)
	}
	if got := savedRev(); got != 1 && time.Since(start) < saveInterval {
		t.Fatalf("during a burst: saved revision %d, want still 1", got)
	}
	for deadline := time.Now().Add(5 * saveInterval); savedRev() != 5; {
		if time.Now().After(deadline) {
			t.Fatalf("saved revision %d after the burst, want 5", savedRev())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(start); d < saveInterval {
		t.Fatalf("the burst was saved after %v, before saveInterval", d)
	}
	set(6) // within saveInterval of the last write: due later
	c.flushSave()
	if got := savedRev(); got != 6 {
		t.Fatalf("after flushSave: saved revision %d, want 6", got)
	}
}

// TestSaveIsNeverTheCallers: the write of the slice file runs beside the
// client's reading of Control, not in it; here the write is held up (by
// the lock it takes on the encoding) and saveSoon must return anyway.
func TestSaveIsNeverTheCallers(t *testing.T) {
	dir := t.TempDir()
	c := &Client{cfg: Config{StateDir: dir, SaveInterval: saveInterval}, log: slog.New(slog.DiscardHandler)}
	sl := bridge.Slice{"self": {Key: "self", Self: &bridge.Self{Name: "n"}}}
	c.slice, c.enc, c.revision = sl, encode(sl), 1
	c.encMu.Lock()
	returned := make(chan struct{})
	go func() { c.saveSoon(); close(returned) }()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		c.encMu.Unlock()
		t.Fatal("saveSoon waited for the write")
	}
	c.encMu.Unlock()
	c.flushSave()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := os.Stat(filepath.Join(dir, sliceFile)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slice file was not written")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
