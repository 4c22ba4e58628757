package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/kakuremichi/kakuremichi/api"
)

func TestPersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := testContext(t)
	s, err := Open(ctx, Config{DataDir: dir, Logger: newTestLogger(t)})
	if err != nil {
		t.Fatalf("Open: got error %v, want nil", err)
	}
	created := mustCreate(t, s, newTunnel("web", "web.example.com"))
	st := tunnelOf(t, api.Clone(created))
	st.Status.ObservedGeneration = 1
	withStatus, err := s.UpdateStatus(ctx, st, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rev := currentRevision(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: got error %v, want nil", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: got error %v, want nil", err)
	}
	if err := s.Ready(ctx); !errors.Is(err, api.ErrUnavailable) {
		t.Errorf("Ready after Close: got %v, want api.ErrUnavailable", err)
	}

	s2 := openTestStore(t, Config{DataDir: dir})
	got, err := s2.Get(ctx, "tunnels", "web")
	if err != nil {
		t.Fatalf("Get after reopening: got error %v, want nil", err)
	}
	if jsonOf(t, got) != jsonOf(t, withStatus) {
		t.Errorf("after reopening: got %s, want %s", jsonOf(t, got), jsonOf(t, withStatus))
	}
	if got := currentRevision(t, s2); got != rev {
		t.Errorf("revision after reopening: got %d, want %d", got, rev)
	}
	if err := s2.Ready(ctx); err != nil {
		t.Errorf("Ready: got error %v, want nil", err)
	}
}

func TestDataDirIsExclusive(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, Config{DataDir: dir})
	if _, err := Open(testContext(t), Config{DataDir: dir}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open of %s: got %v, want an error saying it is in use", dir, err)
	}
	// The first store was not disturbed (its socket is still there).
	if err := s.Ready(testContext(t)); err != nil {
		t.Errorf("Ready of the first store: got %v, want nil", err)
	}
	if _, err := Open(testContext(t), Config{}); err == nil {
		t.Errorf("Open without DataDir or Endpoints: got nil error, want one")
	}
}

func TestSeveralStoresInOneProcess(t *testing.T) {
	ctx := testContext(t)
	var stores []*Store
	for i := range 3 {
		s := openTestStore(t, Config{Prefix: fmt.Sprintf("/p%d", i)})
		mustCreate(t, s, newTunnel(fmt.Sprintf("t%d", i), "x.example.com"))
		stores = append(stores, s)
	}
	for i, s := range stores {
		objs, _, err := s.List(ctx, "tunnels", api.Selector{})
		if err != nil || len(objs) != 1 || objs[0].GetMeta().Name != fmt.Sprintf("t%d", i) {
			t.Errorf("store %d: got %s (%v), want only its own tunnel", i, jsonOf(t, objs), err)
		}
		raw, err := s.Client().Get(ctx, fmt.Sprintf("/p%d/tunnels/t%d", i, i))
		if err != nil || len(raw.Kvs) != 1 {
			t.Errorf("store %d: key under prefix /p%d/: got %v (%v), want it", i, i, raw, err)
		}
	}
}

func TestLongDataDirFallsBackToLoopback(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	s := openTestStore(t, Config{DataDir: dir})
	mustCreate(t, s, newTunnel("web", "web.example.com"))
	if ep := s.etcd.Clients[0].Addr().String(); !strings.HasPrefix(ep, "127.0.0.1:") {
		t.Errorf("etcd listens on %q, want a loopback address", ep)
	}
	if _, err := os.Stat(filepath.Join(dir, "etcd.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file: got %v, want none", err)
	}
}

func TestNoSpace(t *testing.T) {
	dir := t.TempDir()
	const quota = 1 << 20
	s := openTestStore(t, Config{DataDir: dir, QuotaBackendBytes: quota})
	ctx := testContext(t)

	// Objects near the annotation limit fill a 1 MiB quota in a few
	// writes.
	big := strings.Repeat("x", 200<<10)
	var err error
	written := 0
	for i := range 50 {
		tun := newTunnel(fmt.Sprintf("t%d", i), "x.example.com")
		tun.Metadata.Annotations = map[string]string{"filler": big}
		if _, err = s.Create(ctx, tun, WriteOptions{}); err != nil {
			break
		}
		written++
	}
	if !errors.Is(err, api.ErrNoSpace) {
		t.Fatalf("after %d writes: got %v, want api.ErrNoSpace", written, err)
	}
	for _, part := range []string{"quota of 1048576 bytes", "--etcd-quota-bytes"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("message: got %q, want it to mention %q", err.Error(), part)
		}
	}
	if st := api.StatusFromError(err); st.Code != 507 {
		t.Errorf("HTTP code: got %d, want 507", st.Code)
	}

	// Reads still work, and so does every other write path's answer.
	if _, err := s.Get(ctx, "tunnels", "t0"); err != nil {
		t.Errorf("Get when full: got %v, want nil", err)
	}
	// Every acknowledged write is there. The write that failed may be
	// there too: etcd's client retries a request whose first attempt
	// failed on the way (a busy machine), and when that attempt had in
	// fact been applied, the retry meets the alarm it raised. An error is
	// no proof that nothing was written, with any remote store.
	objs, _, err := s.List(ctx, "tunnels", api.Selector{})
	switch {
	case err != nil:
		t.Errorf("List when full: %v", err)
	case len(objs) == written+1 && slices.ContainsFunc(objs, func(o api.Object) bool { return o.GetMeta().Name == fmt.Sprintf("t%d", written) }):
		t.Logf("the write refused with NOSPACE (t%d) had been applied by an earlier attempt", written)
	case len(objs) != written:
		t.Errorf("List when full: got %d objects, want the %d acknowledged ones (and perhaps the refused t%d)", len(objs), written, written)
	}
	if err := s.Ready(ctx); err != nil {
		t.Errorf("Ready when full: got %v, want nil", err)
	}
	if _, err := s.Create(ctx, newTunnel("small", "small.example.com"), WriteOptions{}); !errors.Is(err, api.ErrNoSpace) {
		t.Errorf("small Create when full: got %v, want api.ErrNoSpace", err)
	}

	// Restarting with a larger quota lifts the alarm.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTestStore(t, Config{DataDir: dir, QuotaBackendBytes: 64 << 20})
	if _, err := s2.Create(ctx, newTunnel("small", "small.example.com"), WriteOptions{}); err != nil {
		t.Errorf("Create after raising the quota: got %v, want nil", err)
	}
}

func TestGoroutinesBackToBaselineAfterClose(t *testing.T) {
	base := runtime.NumGoroutine()
	s, err := Open(testContext(t), Config{DataDir: t.TempDir(), Logger: newTestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mustCreate(t, s, newTunnel("web", "web.example.com"))
	// Watches nobody cancels, one of them with an event nobody reads:
	// Close must end them all.
	for range 3 {
		if _, err := s.Watch(ctx, "tunnels", 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.List(ctx, "tunnels", api.Selector{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: got error %v, want nil", err)
	}
	waitGoroutines(t, base)
}
