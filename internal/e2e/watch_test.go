package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// TestWatchResumesAcrossControlRestarts holds quality.md 3 for watchers:
// a client that resumes from the last resourceVersion it saw gets every
// change exactly once, in order, although Control is killed twice while
// changes are being made.
func TestWatchResumesAcrossControlRestarts(t *testing.T) {
	c := newControl(t)
	token := c.adminToken()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	code, out, err := request(ctx, "GET", c.url()+prefix+"/tunnels", token, "")
	if err != nil || code != 200 {
		t.Fatalf("list: %d %v", code, err)
	}
	var list api.List
	decodeJSON(t, out, &list)
	startRV, _ := strconv.ParseInt(list.Metadata.ResourceVersion, 10, 64)

	type seen struct {
		typ  api.WatchEventType
		name string
		rv   int64
	}
	var (
		mu     sync.Mutex // guards events
		events []seen
	)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		last := startRV
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s%s/tunnels?watch=true&resourceVersion=%d", c.url(), prefix, last), nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			br := bufio.NewReader(resp.Body)
			for {
				// A line without its newline is one Control was killed
				// in the middle of writing: the connection is gone.
				line, err := br.ReadBytes('\n')
				if err != nil {
					break
				}
				var ev api.WatchEvent
				decodeJSON(t, line, &ev)
				if ev.Type == api.Bookmark {
					continue
				}
				if ev.Type == api.Error {
					t.Errorf("got an ERROR event %s", ev.Object)
					break
				}
				obj, err := api.DecodeObject(ev.Object)
				if err != nil {
					t.Error(err)
					break
				}
				rv, _ := strconv.ParseInt(obj.GetMeta().ResourceVersion, 10, 64)
				mu.Lock()
				events = append(events, seen{ev.Type, obj.GetMeta().Name, rv})
				mu.Unlock()
				last = rv
			}
			resp.Body.Close()
		}
	}()

	// Make changes, killing Control twice along the way. Every change
	// that was acknowledged is recorded with the revision it produced.
	wantRV := map[int64]string{}
	var deleted []string
	do := func(method, path, body string) []byte {
		for attempt := 0; ; attempt++ {
			code, out, err := request(ctx, method, c.url()+prefix+path, token, body)
			if err == nil && code < 300 {
				return out
			}
			if err == nil && code < 500 && !(attempt > 0 && (code == 409 || code == 404)) {
				t.Fatalf("%s %s: got %d %s", method, path, code, out)
			}
			if attempt > 0 && err == nil {
				return nil // the earlier attempt landed although its answer was lost
			}
			if ctx.Err() != nil {
				t.Fatal(ctx.Err())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i := 0; i < 60; i++ {
		name := fmt.Sprintf("w-%02d", i)
		body := fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":%q},"spec":{"hostname":"%s.example.com","agent":"a","target":"http://localhost:8080"}}`, name, name)
		if out := do("POST", "/tunnels", body); out != nil {
			var obj api.Tunnel
			decodeJSON(t, out, &obj)
			rv, _ := strconv.ParseInt(obj.Metadata.ResourceVersion, 10, 64)
			wantRV[rv] = name
		}
		if i%3 == 0 {
			if out := do("PATCH", "/tunnels/"+name, `{"spec":{"enabled":false}}`); out != nil {
				var obj api.Tunnel
				decodeJSON(t, out, &obj)
				rv, _ := strconv.ParseInt(obj.Metadata.ResourceVersion, 10, 64)
				wantRV[rv] = name
			}
		}
		if i%5 == 0 {
			do("DELETE", "/tunnels/"+name, "")
			deleted = append(deleted, name)
		}
		if i == 20 || i == 40 {
			c.kill()
			c.start()
		}
	}
	// Wait for the watcher to catch up with every acknowledged change: the
	// last revision acknowledged, and every deletion. (Not with the store's
	// revision: a write to another kind, a certificate or an audit record,
	// may come after the last tunnel event, and a tunnel watch never sees
	// it.)
	var lastWant int64
	for rv := range wantRV {
		lastWant = max(lastWant, rv)
	}
	for {
		mu.Lock()
		caught := len(events) > 0 && events[len(events)-1].rv >= lastWant
		gone := map[string]bool{}
		for _, e := range events {
			if e.typ == api.Deleted {
				gone[e.name] = true
			}
		}
		mu.Unlock()
		for _, name := range deleted {
			caught = caught && gone[name]
		}
		if caught {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("watcher did not reach revision %d and every deletion", lastWant)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-watchDone

	byRV := map[int64]seen{}
	var prev int64
	for _, e := range events {
		if _, dup := byRV[e.rv]; dup {
			t.Errorf("revision %d (%s %s) delivered twice", e.rv, e.typ, e.name)
		}
		if e.rv <= prev {
			t.Errorf("revision %d delivered after %d: out of order", e.rv, prev)
		}
		prev = e.rv
		byRV[e.rv] = e
	}
	for rv, name := range wantRV {
		if e, ok := byRV[rv]; !ok || e.name != name {
			t.Errorf("acknowledged change of %s at revision %d: got %+v, want it delivered", name, rv, e)
		}
	}
	deletes := map[string]int{}
	for _, e := range events {
		if e.typ == api.Deleted {
			deletes[e.name]++
		}
	}
	for _, name := range deleted {
		if deletes[name] != 1 {
			t.Errorf("deletion of %s: delivered %d times, want once", name, deletes[name])
		}
	}
	t.Logf("%d events delivered across 2 SIGKILLs, %d acknowledged changes checked, %d deletes", len(events), len(wantRV), len(deleted))
}
