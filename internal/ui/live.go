package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/apiserver"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

// Live pages. A page element with data-live="URL" opens an EventSource
// on URL; the server watches the store and sends, rendered by the same
// templates as the page itself (so nothing is drawn twice, in Go and in
// JavaScript):
//
//   - "row" events, {"name", "html", "deleted", "row"}, for tables whose
//     rows are one object each: app.js replaces, adds or removes the row
//     <tr data-name=NAME>;
//   - "replace" events, {"html"}, for a summary (the dashboard) whose
//     whole content app.js swaps.
//
// On connecting (and on every reconnect) the stream first sends the
// current state, so nothing that changed between the page's render and
// the stream's start is missed.

// liveRow is the data of a "row" event.
type liveRow struct {
	Name    string `json:"name"`
	Deleted bool   `json:"deleted,omitempty"`
	HTML    string `json:"html,omitempty"`
	// Row is the row's data, for programs and tests.
	Row any `json:"row,omitempty"`
}

// sse writes server-sent events.
type sse struct {
	w   *echo.Response
	mu  sync.Mutex // one event at a time
	err error
}

func (s *sse) send(event string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if _, s.err = fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, data); s.err == nil {
		s.w.Flush()
	}
	return s.err
}

// liveSource says what a stream watches and how it renders a change.
type liveSource struct {
	// Kinds are watched.
	Kinds []string
	// Snapshot sends the current state; it runs at the start and, when
	// Coalesce is set, after each burst of changes.
	Snapshot func(ctx context.Context, out *sse) error
	// Event sends one change; nil means every change re-sends Snapshot.
	Event func(ev store.Event, out *sse) error
	// Coalesce gathers the changes of this long into one Snapshot (a
	// summary recomputed per heartbeat of every node would be waste).
	Coalesce time.Duration
}

// stream serves src as server-sent events until the browser leaves, the
// UI stops, or a watch ends (the browser's EventSource then reconnects
// and gets a fresh snapshot).
func (u *UI) stream(c echo.Context, src liveSource) error {
	ctx, cancel := context.WithCancel(c.Request().Context())
	// Watches start before the snapshot is read, so a change between
	// the two is sent (twice at worst, which changes nothing) rather
	// than lost.
	events := make(chan store.Event)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, kind := range src.Kinds {
		ch, err := u.st.Watch(ctx, kind, 0)
		if err != nil {
			return u.fail(c, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range ch {
				select {
				case events <- ev:
				case <-ctx.Done():
				}
			}
		}()
	}
	// The server's write timeout is for ordinary requests; a stream lives
	// until the page closes.
	rc := http.NewResponseController(c.Response().Writer)
	_ = rc.SetWriteDeadline(time.Time{})
	h := c.Response().Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	c.Response().WriteHeader(http.StatusOK)
	out := &sse{w: c.Response()}
	fmt.Fprint(out.w, "retry: 2000\n\n")
	out.w.Flush()
	if err := src.Snapshot(ctx, out); err != nil {
		u.log.Debug("live snapshot", "path", c.Request().URL.Path, "err", err)
		return nil
	}
	tick := time.NewTicker(u.heartbeat)
	defer tick.Stop()
	var flush <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-u.stopping:
			return nil
		case <-tick.C:
			// A session ended meanwhile (logout, a disabled user, a new
			// password) ends its streams too.
			if !u.sessionAlive(c) {
				return nil
			}
			out.mu.Lock()
			_, err := fmt.Fprint(out.w, ": keep-alive\n\n")
			if err == nil {
				out.w.Flush()
			}
			out.mu.Unlock()
			if err != nil {
				return nil
			}
		case <-flush:
			flush = nil
			if err := src.Snapshot(ctx, out); err != nil {
				return nil
			}
		case ev := <-events:
			if ev.Type == api.Error {
				return nil
			}
			if src.Event == nil {
				if flush == nil {
					flush = time.After(src.Coalesce)
				}
				continue
			}
			if err := src.Event(ev, out); err != nil {
				return nil
			}
		}
	}
}

// rowSource is the stream of a table of one kind: every object's row at
// the start, then each change's.
func (u *UI) rowSource(c echo.Context, kind, pageName string, rowOf func(api.Object) (name string, row any)) liveSource {
	p := u.fill(c, page{})
	render := func(obj api.Object, deleted bool) (liveRow, error) {
		name, row := rowOf(obj)
		lr := liveRow{Name: name, Deleted: deleted, Row: row}
		if !deleted {
			html, err := u.fragment(pageName, "row", rowData{P: p, Row: row})
			if err != nil {
				return lr, err
			}
			lr.HTML = html
		}
		return lr, nil
	}
	return liveSource{
		Kinds: []string{kind},
		Snapshot: func(ctx context.Context, out *sse) error {
			objs, _, err := u.st.List(ctx, kind, api.Selector{})
			if err != nil {
				return err
			}
			for _, o := range objs {
				lr, err := render(o, false)
				if err != nil {
					return err
				}
				if err := out.send("row", lr); err != nil {
					return err
				}
			}
			return nil
		},
		Event: func(ev store.Event, out *sse) error {
			lr, err := render(ev.Object, ev.Type == api.Deleted)
			if err != nil {
				return err
			}
			return out.send("row", lr)
		},
	}
}

// rowData is what a page's "row" template gets: the page (for the role
// and the CSRF token) and the row.
type rowData struct {
	P   page
	Row any
}

// fragment renders one named template of a page, for a live update.
func (u *UI) fragment(pageName, name string, data any) (string, error) {
	t, ok := u.pages[pageName]
	if !ok {
		return "", fmt.Errorf("no template %q", pageName)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, name, data); err != nil {
		return "", fmt.Errorf("render %s of %s: %w", name, pageName, err)
	}
	return buf.String(), nil
}

// sessionAlive reports whether the request's session still works.
func (u *UI) sessionAlive(c echo.Context) bool {
	ck, err := c.Request().Cookie(apiserver.SessionCookie)
	if err != nil {
		return false
	}
	_, err = u.acc.Authenticate(c.Request().Context(), ck.Value)
	return err == nil
}
