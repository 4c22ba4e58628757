package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Agent liveness on the request path.
//
// A stream pooled to an agent that has since died (killed, frozen, its
// machine gone) gives no sign: the request is written and the answer never
// comes, and WireGuard in a userspace stack has no TCP timeout to give up
// with. So while a request waits, and its response makes no progress, the
// gateway checks the agent by opening a fresh stream (the same probe as the
// probe loop, shared by every request to that agent); when the agent does
// not answer, the request ends at once with "agent offline", every stream
// to that agent is closed, and new requests to it are answered at once
// until a probe succeeds again.

const (
	// stallCheckAfter is how long a request may wait without progress
	// before its agent is checked: short, so an offline agent answers
	// within about a second and a half.
	stallCheckAfter = 750 * time.Millisecond
	// stallCheckEvery is how often a request still without progress has
	// its agent checked again (a long poll whose agent dies later).
	stallCheckEvery = 5 * time.Second
	// livenessCheckTimeout bounds one check of an agent; generous enough
	// for a probe queued behind a bulk transfer on a busy machine.
	livenessCheckTimeout = 1500 * time.Millisecond
	// livenessReuse is how long a check's result answers other requests.
	livenessReuse = time.Second
)

// errAgentDown ends a request whose agent failed a liveness check.
var errAgentDown = errors.New("the agent stopped answering")

// agentHealth is the liveness state of one agent address.
type agentHealth struct {
	// mu serialises checks, so concurrent requests share one; it guards
	// checked, alive and down.
	mu      sync.Mutex
	checked time.Time
	alive   bool
	// down is set when a check failed and cleared when one succeeds:
	// requests to a down agent are answered at once.
	down atomic.Bool
	// streams are the open streams to the agent, closed when it is found
	// down so no request reuses a dead one.
	streams *connSet
}

// liveness holds every agent's health, by overlay address.
type liveness struct {
	// mu guards agents.
	mu     sync.Mutex
	agents map[netip.Addr]*agentHealth
}

func (l *liveness) get(addr netip.Addr) *agentHealth {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.agents == nil {
		l.agents = map[netip.Addr]*agentHealth{}
	}
	h := l.agents[addr]
	if h == nil {
		h = &agentHealth{streams: newConnSet()}
		l.agents[addr] = h
	}
	return h
}

// isDown reports whether the agent at addr failed its last check.
func (l *liveness) isDown(addr netip.Addr) bool {
	l.mu.Lock()
	h := l.agents[addr]
	l.mu.Unlock()
	return h != nil && h.down.Load()
}

// record sets the result of a probe of addr (from the probe loop or a
// request's check) and, when it failed, closes the agent's streams.
func (l *liveness) record(addr netip.Addr, alive bool, at time.Time) {
	h := l.get(addr)
	h.mu.Lock()
	h.checked, h.alive = at, alive
	h.mu.Unlock()
	h.down.Store(!alive)
	if !alive {
		h.streams.closeAll()
	}
}

// checkAgent tells whether the agent at addr answers, probing it unless a
// check finished less than livenessReuse ago.
func (g *Gateway) checkAgent(ctx context.Context, addr netip.Addr) bool {
	alive, _ := g.checkAgentReused(ctx, addr)
	return alive
}

// checkAgentReused is checkAgent that also says, when the answer is an
// earlier check's reused, when that answer expires (zero for a fresh one).
func (g *Gateway) checkAgentReused(ctx context.Context, addr netip.Addr) (alive bool, expires time.Time) {
	h := g.health.get(addr)
	h.mu.Lock()
	if until := h.checked.Add(livenessReuse); time.Now().Before(until) {
		alive := h.alive
		h.mu.Unlock()
		return alive, until
	}
	h.mu.Unlock()
	return g.probeAgent(ctx, addr), time.Time{}
}

// probeAgent probes the agent at addr now and records the result.
func (g *Gateway) probeAgent(ctx context.Context, addr netip.Addr) bool {
	cctx, cancel := context.WithTimeout(ctx, livenessCheckTimeout)
	err := g.probeOnce(cctx, addr)
	cancel()
	if ctx.Err() != nil || !aboutAgent(err) {
		return true // the request ended for its own reasons, or the fault is ours
	}
	g.health.record(addr, err == nil, time.Now())
	return err == nil
}

// aboutAgent reports whether a probe's outcome says something about the
// agent: a gateway without its WireGuard device yet has learnt nothing.
func aboutAgent(err error) bool {
	var de *dialError
	return !errors.As(err, &de) || de.page != pageGatewayNotReady
}

// writeStallTimeout is the write timeout of a proxied response, renewed
// as it progresses: a client that stops reading is cut off, while a
// download or an event stream may last as long as it flows.
const writeStallTimeout = 60 * time.Second

// progressWriter counts what the response has written, so a stalled
// request can be told from one that streams, and keeps the connection's
// write deadline a stall timeout ahead of the last write.
type progressWriter struct {
	http.ResponseWriter
	progress atomic.Int64
	// deadlineSet is when the write deadline was last moved; only the
	// handler's goroutine writes, so it needs no lock.
	deadlineSet time.Time
}

func (w *progressWriter) renewDeadline() {
	if now := time.Now(); now.Sub(w.deadlineSet) > time.Second {
		w.deadlineSet = now
		_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(now.Add(writeStallTimeout))
	}
}

func (w *progressWriter) WriteHeader(code int) {
	w.progress.Add(1)
	w.renewDeadline()
	w.ResponseWriter.WriteHeader(code)
}

func (w *progressWriter) Write(p []byte) (int, error) {
	w.progress.Add(int64(len(p)) + 1)
	w.renewDeadline()
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (w *progressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// watchStall checks the agent each time the request has made no progress
// for a while, and cancels it with errAgentDown when the agent is down.
// It runs on a timer, not a goroutine of its own: most requests end
// before the first check, and then cost no goroutine and no wakeup. The
// returned stop ends it; a check already under way ends with ctx.
func (g *Gateway) watchStall(ctx context.Context, w *progressWriter, addr netip.Addr, cancel context.CancelCauseFunc) (stop func() bool) {
	s := &stallWatch{g: g, ctx: ctx, w: w, addr: addr, cancel: cancel}
	s.last.Store(w.progress.Load())
	t := time.AfterFunc(stallCheckAfter, s.check)
	s.t.Store(t)
	return t.Stop
}

// stallWatch is one request's watchStall.
type stallWatch struct {
	g      *Gateway
	ctx    context.Context
	w      *progressWriter
	addr   netip.Addr
	cancel context.CancelCauseFunc
	t      atomic.Pointer[time.Timer] // set once, right after it starts
	// last is the progress at the previous check. Checks run one after
	// the other, each on the timer's goroutine of its turn.
	last atomic.Int64
}

func (s *stallWatch) check() {
	if s.ctx.Err() != nil {
		return
	}
	now := s.w.progress.Load()
	next := stallCheckEvery
	if now == s.last.Load() {
		alive, expires := s.g.checkAgentReused(s.ctx, s.addr)
		if !alive {
			s.cancel(errAgentDown)
			return
		}
		if !expires.IsZero() {
			// The agent answered a check made for another request or by
			// the probe loop, perhaps just before it died: this request
			// checks again for itself as soon as that answer expires,
			// not a whole interval later.
			next = max(time.Until(expires), 10*time.Millisecond)
		}
	}
	s.last.Store(now)
	if t := s.t.Load(); t != nil && s.ctx.Err() == nil {
		t.Reset(next)
	}
}

// countingBody counts the request body as it is read: an upload that
// flows is progress, though the response has not begun.
type countingBody struct {
	io.ReadCloser
	progress *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.progress.Add(int64(n))
	}
	return n, err
}

// trackedConn removes itself from its agent's stream set when closed.
type trackedConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.set.remove(c) })
	return c.Conn.Close()
}

// CloseWrite passes a half-close on to the stream.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
