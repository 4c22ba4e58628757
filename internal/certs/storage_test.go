package certs

import (
	"context"
	"errors"
	"io/fs"
	"reflect"
	"testing"
	"time"
)

func TestStorageKeysAndDirectories(t *testing.T) {
	s := NewStorage(openStore(t))
	ctx := testCtx(t)
	for _, k := range []string{"certificates/ca/a.example.com/a.crt", "certificates/ca/a.example.com/a.key", "certificates/ca/b.example.com/b.crt", "users/x.json"} {
		if err := s.Store(ctx, k, []byte("v:"+k)); err != nil {
			t.Fatalf("Store %s: got %v, want nil", k, err)
		}
	}
	got, err := s.Load(ctx, "certificates/ca/a.example.com/a.key")
	if err != nil || string(got) != "v:certificates/ca/a.example.com/a.key" {
		t.Fatalf("Load: got %q %v, want the stored value", got, err)
	}
	if _, err := s.Load(ctx, "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load missing: got %v, want fs.ErrNotExist", err)
	}
	lists := []struct {
		path      string
		recursive bool
		want      []string
	}{
		{"certificates/ca", false, []string{"certificates/ca/a.example.com", "certificates/ca/b.example.com"}},
		{"certificates/ca", true, []string{"certificates/ca/a.example.com/a.crt", "certificates/ca/a.example.com/a.key", "certificates/ca/b.example.com/b.crt"}},
		{"", false, []string{"certificates", "users"}},
	}
	for _, l := range lists {
		if got, err := s.List(ctx, l.path, l.recursive); err != nil || !reflect.DeepEqual(got, l.want) {
			t.Errorf("List(%q, %v): got %v %v, want %v", l.path, l.recursive, got, err, l.want)
		}
	}
	stats := []struct {
		key      string
		terminal bool
		exists   bool
	}{
		{"certificates/ca/a.example.com/a.crt", true, true},
		{"certificates/ca/a.example.com", false, true},
		{"certificates/ca/a.example", false, false}, // a prefix of a name is not a directory
		{"nothing", false, false},
	}
	for _, st := range stats {
		info, err := s.Stat(ctx, st.key)
		if exists := err == nil; exists != st.exists || (exists && info.IsTerminal != st.terminal) {
			t.Errorf("Stat(%q): got %+v %v, want exists %v terminal %v", st.key, info, err, st.exists, st.terminal)
		}
		if s.Exists(ctx, st.key) != st.exists {
			t.Errorf("Exists(%q): got %v, want %v", st.key, !st.exists, st.exists)
		}
	}
	if err := s.Delete(ctx, "certificates/ca/a.example.com"); err != nil {
		t.Fatalf("Delete directory: got %v, want nil", err)
	}
	if got, err := s.List(ctx, "certificates/ca", true); err != nil || !reflect.DeepEqual(got, []string{"certificates/ca/b.example.com/b.crt"}) {
		t.Fatalf("List after Delete: got %v %v, want only b.crt", got, err)
	}
	if err := s.Delete(ctx, "never-there"); err != nil {
		t.Fatalf("Delete missing: got %v, want nil", err)
	}
}

// TestStorageLockExcludesReplicas uses two Storages on one store, as two
// Control replicas, and two goroutines of one of them.
func TestStorageLockExcludesReplicas(t *testing.T) {
	st := openStore(t)
	a, b := NewStorage(st), NewStorage(st)
	defer a.Close()
	defer b.Close()
	ctx := testCtx(t)
	if err := a.Lock(ctx, "issue_cert_x.example.com"); err != nil {
		t.Fatalf("a.Lock: got %v, want nil", err)
	}
	if ok, err := b.TryLock(ctx, "issue_cert_x.example.com"); ok || err != nil {
		t.Fatalf("b.TryLock while a holds it: got %v %v, want false nil", ok, err)
	}
	// Another name is independent.
	if ok, err := b.TryLock(ctx, "issue_cert_y.example.com"); !ok || err != nil {
		t.Fatalf("b.TryLock of another name: got %v %v, want true nil", ok, err)
	}
	if err := b.Unlock(ctx, "issue_cert_y.example.com"); err != nil {
		t.Fatalf("b.Unlock: got %v, want nil", err)
	}
	for _, waiter := range []*Storage{b, a} { // another replica, then the same one
		got := make(chan error, 1)
		go func() { got <- waiter.Lock(ctx, "issue_cert_x.example.com") }()
		select {
		case err := <-got:
			t.Fatalf("Lock while held: got %v at once, want it to wait", err)
		case <-time.After(300 * time.Millisecond):
		}
		if err := a.Unlock(ctx, "issue_cert_x.example.com"); err != nil {
			t.Fatalf("a.Unlock: got %v, want nil", err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("Lock after release: got %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Lock after release: still waiting after 10s, want the lock")
		}
		if waiter == b {
			// Hand it back to a for the next round.
			if err := b.Unlock(ctx, "issue_cert_x.example.com"); err != nil {
				t.Fatalf("b.Unlock: got %v, want nil", err)
			}
			if err := a.Lock(ctx, "issue_cert_x.example.com"); err != nil {
				t.Fatalf("a.Lock: got %v, want nil", err)
			}
		}
	}
	// A replica that goes away releases what it held.
	if err := a.Close(); err != nil {
		t.Fatalf("a.Close: got %v, want nil", err)
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.Lock(lctx, "issue_cert_x.example.com"); err != nil {
		t.Fatalf("b.Lock after a closed: got %v, want nil", err)
	}
}
