package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/client"
	"github.com/kakuremichi/kakuremichi/api/client/clienttest"
)

// next returns the next event or fails after a deadline.
func next(t *testing.T, ch <-chan client.Event) client.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed, want an event")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event within 10s")
	}
	return client.Event{}
}

func describe(ev client.Event) string {
	if ev.Type == api.Error {
		return fmt.Sprintf("ERROR %v", ev.Err)
	}
	return fmt.Sprintf("%s %s@%d", ev.Type, ev.Object.GetMeta().Name, ev.Revision)
}

func TestWatchFromListRevision(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s.URL, editorToken)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	if _, err := c.Create(ctx, tunnel("before", "before.example.com", nil), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, rv, err := c.List(ctx, "tunnels", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Written between list and watch: must be delivered.
	if _, err := c.Create(ctx, tunnel("a", "a.example.com", map[string]string{"w": "yes"}), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	ch, err := c.Watch(ctx, "tunnels", client.WatchOptions{ResourceVersion: rv, LabelSelector: "w=yes"})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	if _, err := c.Create(ctx, tunnel("unlabelled", "u.example.com", nil), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Patch(ctx, "tunnel", "a", []byte(`{"spec":{"target":"http://localhost:1"}}`), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, "tunnel", "a", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	var last int64
	for range 3 {
		ev := next(t, ch)
		if ev.Revision <= last {
			t.Errorf("got revision %d after %d, want increasing revisions", ev.Revision, last)
		}
		last = ev.Revision
		got = append(got, fmt.Sprintf("%s %s", ev.Type, ev.Object.GetMeta().Name))
	}
	want := []string{"ADDED a", "MODIFIED a", "DELETED a"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got events %v, want %v", got, want)
	}
}

// A dropped connection is reopened from the last revision seen: nothing
// is missed or repeated.
func TestWatchResumesAfterDrop(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s.URL, editorToken)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	_, rv, err := c.List(ctx, "tunnels", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.Watch(ctx, "tunnel", client.WatchOptions{ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for i := range 6 {
		name := fmt.Sprintf("t%d", i)
		if _, err := c.Create(ctx, tunnel(name, name+".example.com", nil), client.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			// Let the first three arrive, then cut every connection
			// and write more while the client is reconnecting.
			for range 3 {
				seen[next(t, ch).Object.GetMeta().Name]++
			}
			s.DropWatches()
		}
	}
	for range 3 {
		ev := next(t, ch)
		if ev.Type == api.Error {
			t.Fatalf("got %s, want the watch to resume", describe(ev))
		}
		seen[ev.Object.GetMeta().Name]++
	}
	for i := range 6 {
		if n := seen[fmt.Sprintf("t%d", i)]; n != 1 {
			t.Errorf("t%d: got %d events, want exactly 1", i, n)
		}
	}
	select {
	case ev := <-ch:
		t.Fatalf("got extra event %s, want none", describe(ev))
	case <-time.After(100 * time.Millisecond):
	}
}

func TestWatchGone(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s.URL, editorToken)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	if _, err := c.Create(ctx, tunnel("a", "a.example.com", nil), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, rv, err := c.List(ctx, "tunnels", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, tunnel("b", "b.example.com", nil), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Compact()

	t.Run("at start", func(t *testing.T) {
		ch, err := c.Watch(ctx, "tunnels", client.WatchOptions{ResourceVersion: rv})
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		ev := next(t, ch)
		if ev.Type != api.Error || !errors.Is(ev.Err, api.ErrGone) {
			t.Fatalf("got %s, want an ERROR event wrapping ErrGone", describe(ev))
		}
		if _, ok := <-ch; ok {
			t.Fatal("got another event after ERROR, want the channel closed")
		}
	})

	t.Run("on reconnect", func(t *testing.T) {
		// First connection: one event at revision 5, then EOF. The
		// reconnection from 5 finds the history compacted.
		var conns atomic.Int32
		var resumedFrom atomic.Value
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
			if conns.Add(1) == 1 {
				fmt.Fprintln(w, `{"type":"ADDED","object":{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":"a","resourceVersion":"5"},"spec":{"hostname":"a.example.com","agent":"x","target":"http://l:1"}}}`)
				return
			}
			resumedFrom.Store(r.URL.Query().Get("resourceVersion"))
			fmt.Fprintln(w, `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","code":410,"reason":"Expired","message":"resourceVersion 5 is too old"}}`)
		}))
		defer srv.Close()
		ch, err := newClient(t, srv.URL, "x").Watch(ctx, "tunnels", client.WatchOptions{ResourceVersion: "3"})
		if err != nil {
			t.Fatal(err)
		}
		if ev := next(t, ch); ev.Type != api.Added || ev.Revision != 5 {
			t.Fatalf("got %s, want ADDED a@5", describe(ev))
		}
		ev := next(t, ch)
		if ev.Type != api.Error || !errors.Is(ev.Err, api.ErrGone) {
			t.Fatalf("got %s, want an ERROR wrapping ErrGone", describe(ev))
		}
		if rv := resumedFrom.Load(); rv != "5" {
			t.Fatalf("reconnected from resourceVersion %v, want 5", rv)
		}
		if _, ok := <-ch; ok {
			t.Fatal("got another event after ERROR, want the channel closed")
		}
	})

	// A raw 410 answer, as a server may give before streaming, is an
	// error from Watch itself.
	t.Run("HTTP 410", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st := api.NewStatusError(api.ReasonExpired, "too old").Status
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusGone)
			fmt.Fprintf(w, `{"kind":"Status","code":%d,"reason":%q,"message":%q}`, st.Code, st.Reason, st.Message)
		}))
		defer srv.Close()
		_, err := newClient(t, srv.URL, "x").Watch(ctx, "tunnels", client.WatchOptions{ResourceVersion: "3"})
		if !errors.Is(err, api.ErrGone) {
			t.Fatalf("got %v, want ErrGone", err)
		}
	})
}

// A watch from now that drops before any revision is known cannot resume
// without a gap, and says so.
func TestWatchFromNowDropBeforeRevision(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	ch, err := newClient(t, srv.URL, "x").Watch(context.Background(), "tunnels", client.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ev := next(t, ch)
	if ev.Type != api.Error || !errors.Is(ev.Err, api.ErrGone) {
		t.Fatalf("got %s, want an ERROR wrapping ErrGone", describe(ev))
	}
}

// A connection that goes silent (half-open) is cut after the idle timeout
// and reopened from the last revision.
func TestWatchIdleTimeoutReconnects(t *testing.T) {
	var conns atomic.Int32
	var lastRV atomic.Value
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := conns.Add(1)
		lastRV.Store(r.URL.Query().Get("resourceVersion"))
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		if n == 1 {
			fmt.Fprintln(w, `{"type":"BOOKMARK","object":{"kind":"Tunnel","apiVersion":"kakuremichi.io/v1alpha1","metadata":{"name":"","resourceVersion":"42"}}}`)
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}))
	defer srv.Close()
	defer close(done)
	c, err := client.New(client.Config{Server: srv.URL, Token: "x", WatchIdleTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := c.Watch(ctx, "tunnels", client.WatchOptions{ResourceVersion: "7"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for conns.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := conns.Load(); n < 2 {
		t.Fatalf("got %d connections, want a reconnection after the idle timeout", n)
	}
	if rv := lastRV.Load(); rv != "42" {
		t.Fatalf("reconnected from resourceVersion %v, want 42 (the bookmark)", rv)
	}
}

func TestWatchStopsWithContext(t *testing.T) {
	s := clienttest.New(clienttest.Config{Tokens: map[string]api.Role{viewerToken: api.RoleViewer}, BookmarkInterval: 20 * time.Millisecond})
	defer s.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c, err := client.New(client.Config{Server: s.URL, Token: viewerToken, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Version(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	var chans []<-chan client.Event
	for range 5 {
		ch, err := c.Watch(ctx, "tunnels", client.WatchOptions{ResourceVersion: "1"})
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	cancel()
	for _, ch := range chans {
		select {
		case _, ok := <-ch:
			for ok {
				_, ok = <-ch
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch channel not closed 10s after cancel")
		}
	}
	tr.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("got %d goroutines after the watches ended, want at most %d", n, before)
	}
}

// A server that ignores watch=true answers with a list: that is an error,
// not a stream to reopen forever.
func TestWatchRefusesNonStream(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"kind":"TunnelList","metadata":{"resourceVersion":"3"},"items":[]}`)
	}))
	defer srv.Close()
	_, err := newClient(t, srv.URL, "x").Watch(context.Background(), "tunnels", client.WatchOptions{ResourceVersion: "3"})
	if err == nil || !strings.Contains(err.Error(), "not a watch stream") {
		t.Fatalf("got %v, want an error saying the answer is not a watch stream", err)
	}
}
