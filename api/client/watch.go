package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// WatchOptions say what to watch and from where.
type WatchOptions struct {
	// LabelSelector keeps only events of objects whose labels match.
	// Empty keeps everything.
	LabelSelector string
	// ResourceVersion is where the watch starts: events strictly after
	// it are delivered. Use the resourceVersion List returned to miss
	// nothing. Empty starts from now.
	ResourceVersion string
}

// Event is one change seen by Watch.
type Event struct {
	// Type is api.Added, api.Modified, api.Deleted, or api.Error for the
	// last event of a watch that cannot go on.
	Type api.WatchEventType
	// Object is the object after the change; for Deleted, its last state.
	// Nil for Error.
	Object api.Object
	// Revision is the object's resourceVersion as a number: the revision
	// of the change. 0 for Error.
	Revision int64
	// Err says why the watch ended, for Error only. It wraps api.ErrGone
	// when the revision to resume from is no longer available: list
	// again and watch from the list's resourceVersion.
	Err error
}

// Backoff between reconnection attempts of a watch.
const (
	watchRetryMin = 250 * time.Millisecond
	watchRetryMax = 5 * time.Second
)

// Watch streams the changes to objects of a kind. The first connection is
// made before Watch returns, so a bad kind, credential or selector is an
// error here. After that, a dropped or silent connection is reopened from
// the last revision seen (bookmarks included), so no change is missed or
// repeated. When the watch cannot go on, one Error event says why and the
// channel is closed; otherwise the channel is closed when ctx is done.
// The caller must read until the channel closes or cancel ctx.
func (c *Client) Watch(ctx context.Context, kind string, opts WatchOptions) (<-chan Event, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", kind, err)
	}
	w := &watcher{c: c, k: k, selector: opts.LabelSelector, op: "watch " + k.Plural, ch: make(chan Event)}
	if opts.ResourceVersion != "" {
		rev, err := strconv.ParseInt(opts.ResourceVersion, 10, 64)
		if err != nil || rev < 0 {
			return nil, fmt.Errorf("%s: resourceVersion %q is not a revision", w.op, opts.ResourceVersion)
		}
		w.rev = rev
	}
	resp, cancel, err := w.open(ctx)
	if err != nil {
		return nil, wrap(w.op, err)
	}
	go w.run(ctx, resp, cancel)
	return w.ch, nil
}

// watcher is the state of one Watch; it belongs to the goroutine running
// run.
type watcher struct {
	c        *Client
	k        api.KindInfo
	selector string
	op       string
	ch       chan Event
	// rev is the last revision seen; 0 until one is known.
	rev int64
}

// open makes one watch request from w.rev. The returned cancel func ends
// the connection.
func (w *watcher) open(ctx context.Context) (*http.Response, context.CancelFunc, error) {
	q := url.Values{"watch": {"true"}}
	if w.rev > 0 {
		q.Set("resourceVersion", strconv.FormatInt(w.rev, 10))
	}
	if w.selector != "" {
		q.Set("labelSelector", w.selector)
	}
	connCtx, cancel := context.WithCancel(ctx)
	_, resp, err := w.c.do(connCtx, request{method: http.MethodGet, path: w.c.resourcePath(w.k, "", ""), query: q, stream: true})
	if err != nil {
		cancel()
		return nil, nil, err
	}
	// A server (or proxy) that ignored watch=true answers with a list;
	// read as a stream, it would look like a connection to reopen forever.
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/x-ndjson" {
		resp.Body.Close()
		cancel()
		return nil, nil, fmt.Errorf("the server answered with %q, not a watch stream (application/x-ndjson)", resp.Header.Get("Content-Type"))
	}
	return resp, cancel, nil
}

// run owns the watch until ctx is done or the watch cannot go on.
func (w *watcher) run(ctx context.Context, resp *http.Response, cancel context.CancelFunc) {
	defer close(w.ch)
	for {
		err := w.stream(ctx, resp, cancel)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.emit(ctx, Event{Type: api.Error, Err: fmt.Errorf("%s: %w", w.op, err)})
			return
		}
		if w.rev == 0 {
			w.emit(ctx, Event{Type: api.Error, Err: fmt.Errorf(
				"%s: the connection dropped before any resourceVersion was seen, so changes may have been missed: %w",
				w.op, api.ErrGone)})
			return
		}
		resp, cancel, err = w.reopen(ctx)
		if err != nil {
			if ctx.Err() == nil {
				w.emit(ctx, Event{Type: api.Error, Err: fmt.Errorf("%s: %w", w.op, err)})
			}
			return
		}
	}
}

// reopen retries open with backoff until it succeeds, ctx is done, or the
// server answers with an error that retrying cannot fix.
func (w *watcher) reopen(ctx context.Context) (*http.Response, context.CancelFunc, error) {
	delay := watchRetryMin
	for {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, ctx.Err()
		case <-t.C:
		}
		resp, cancel, err := w.open(ctx)
		if err == nil {
			return resp, cancel, nil
		}
		if !retryable(err) {
			return nil, nil, err
		}
		delay = min(2*delay, watchRetryMax)
	}
}

// retryable reports whether a failed watch request may succeed later:
// network errors and an unavailable server may, a refused credential or
// a compacted revision may not.
func retryable(err error) bool {
	var se *api.StatusError
	if !errors.As(err, &se) {
		return true
	}
	switch se.Status.Reason {
	case api.ReasonUnavailable, api.ReasonInternalError:
		return true
	}
	return false
}

// stream delivers the events of one connection. It returns nil when the
// connection ended in a way a reconnection can fix, or the error that
// ends the watch.
func (w *watcher) stream(ctx context.Context, resp *http.Response, cancel context.CancelFunc) error {
	defer cancel()
	defer resp.Body.Close()
	var idle *time.Timer
	if w.c.idle > 0 {
		// A connection that stays silent past several bookmarks is dead
		// (a half-open TCP connection never errors): cut it to reconnect.
		idle = time.AfterFunc(w.c.idle, cancel)
		defer idle.Stop()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 2*api.MaxObjectBytes)
	for sc.Scan() {
		if idle != nil {
			idle.Reset(w.c.idle)
		}
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var ev api.WatchEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		switch ev.Type {
		case api.Added, api.Modified, api.Deleted:
			obj, err := decodeAs(w.k, ev.Object)
			if err != nil {
				return fmt.Errorf("decode %s event: %w", ev.Type, err)
			}
			rev, _ := strconv.ParseInt(obj.GetMeta().ResourceVersion, 10, 64)
			if rev > w.rev {
				w.rev = rev
			}
			if !w.emit(ctx, Event{Type: ev.Type, Object: obj, Revision: rev}) {
				return nil
			}
		case api.Bookmark:
			var bm struct {
				Metadata struct {
					ResourceVersion string `json:"resourceVersion"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(ev.Object, &bm); err != nil {
				return fmt.Errorf("decode bookmark: %w", err)
			}
			if rev, err := strconv.ParseInt(bm.Metadata.ResourceVersion, 10, 64); err == nil && rev > w.rev {
				w.rev = rev
			}
		case api.Error:
			var st api.Status
			if err := json.Unmarshal(ev.Object, &st); err != nil || st.Reason == "" {
				return fmt.Errorf("the server ended the watch with an undecodable error: %s", ev.Object)
			}
			se := &api.StatusError{Status: st}
			if retryable(se) {
				return nil
			}
			return se
		default:
			// A newer server may send event types this client does not
			// know; they carry nothing it could use.
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return fmt.Errorf("an event is larger than %d bytes", 2*api.MaxObjectBytes)
	}
	// EOF, a network error, or the idle timer: all fixed by reconnecting.
	return nil
}

// emit sends ev unless ctx ends first, and reports whether it was sent.
func (w *watcher) emit(ctx context.Context, ev Event) bool {
	select {
	case w.ch <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}
