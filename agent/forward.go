package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// preambleTimeout bounds reading a stream's preamble and writing the
// answer: a gateway writes the preamble as soon as it connects, so a
// stream that says nothing for this long is not a gateway's.
const preambleTimeout = 5 * time.Second

// stream is one connection from a gateway, from accept to close.
type stream struct {
	gw net.Conn
	// from is the gateway's overlay address.
	from netip.Addr
	// The fields below are guarded by Agent.mu.
	// attached is set once the target is dialled and the stream is
	// checked against Apply from then on.
	attached bool
	fwd      forward
	target   net.Conn
	closed   bool

	// lastUp is when a write to the target last began, lastDown when one
	// to the gateway last ended (Unix nanoseconds; zero: never), and
	// writingDown counts writes to the gateway under way.
	lastUp, lastDown atomic.Int64
	writingDown      atomic.Int32
}

// idleKeepAlive reports whether st looks like an HTTP keep-alive
// connection between requests: an http(s) tunnel whose last bytes went to
// the gateway (a response, or the answer) at least idleFor ago, with
// nothing asked since. Called with Agent.mu held.
func (st *stream) idleKeepAlive(now time.Time, idleFor time.Duration) bool {
	if !st.attached || st.closed || (st.fwd.scheme != "http" && st.fwd.scheme != "https") {
		return false
	}
	if st.writingDown.Load() != 0 {
		return false
	}
	up, down := st.lastUp.Load(), st.lastDown.Load()
	return down != 0 && down >= up && now.UnixNano()-down >= int64(idleFor)
}

// close closes both ends; the handler notices and finishes. Called with
// Agent.mu held.
func (st *stream) close() {
	if st.closed {
		return
	}
	st.closed = true
	st.gw.Close()
	if st.target != nil {
		st.target.Close()
	}
}

// acceptLoop serves ln until it is closed (at the end of drain, or with
// its device). While the agent drains, a new stream is answered "stopping":
// gateways learn the agent is still there (their checks of a request in
// flight keep it alive) but gets no new work.
func (a *Agent) acceptLoop(ln net.Listener) {
	defer a.loops.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			a.log.Debug("forward listener closed", "addr", ln.Addr(), "err", err)
			return
		}
		st := &stream{gw: c}
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			st.from = ta.AddrPort().Addr().Unmap()
		}
		a.mu.Lock()
		if a.phase != phaseRunning {
			if a.refusalsClosed {
				a.mu.Unlock()
				c.Close()
				continue
			}
			a.refusing[c] = struct{}{}
			// acceptLoop holds a count of loops, so this Add cannot race
			// drain's Wait.
			a.loops.Add(1)
			a.mu.Unlock()
			go a.refuseStopping(c)
			continue
		}
		a.streams[st] = struct{}{}
		a.handlers.Add(1)
		a.mu.Unlock()
		go a.handle(st)
	}
}

// handle runs one stream: preamble, checks, target dial, answer, then
// bytes both ways until both directions end.
func (a *Agent) handle(st *stream) {
	defer a.handlers.Done()
	defer func() {
		a.mu.Lock()
		st.close()
		delete(a.streams, st)
		a.mu.Unlock()
	}()
	gw := st.gw
	log := a.log.With("gateway", gw.RemoteAddr())
	refuse := func(code, msg string) {
		gw.SetWriteDeadline(time.Now().Add(preambleTimeout))
		if bridge.WriteRefusal(gw, code, msg) == nil {
			lingerClose(gw)
		}
	}

	gw.SetReadDeadline(time.Now().Add(preambleTimeout))
	br := bufio.NewReader(gw)
	tunnel, err := bridge.ReadPreamble(br)
	if err != nil {
		log.Debug("stream refused", "code", bridge.RefuseBadPreamble, "err", err)
		refuse(bridge.RefuseBadPreamble, err.Error())
		return
	}
	gw.SetReadDeadline(time.Time{})
	log = log.With("tunnel", tunnel)
	f, code, msg := a.lookup(tunnel)
	if code != "" {
		log.Debug("stream refused", "code", code, "reason", msg)
		refuse(code, msg)
		return
	}

	ctx, cancel := context.WithTimeout(a.hardCtx, a.cfg.DialTimeout)
	target, err := a.dialTarget(ctx, f)
	cancel()
	a.recordTarget(f, err)
	if err != nil {
		log.Debug("stream refused", "code", bridge.RefuseTargetUnreachable, "target", f.address, "err", err)
		refuse(bridge.RefuseTargetUnreachable, err.Error())
		return
	}
	if code, msg := a.attach(st, f, target); code != "" {
		// The tunnel changed while the target was being dialled.
		target.Close()
		log.Debug("stream refused", "code", code, "reason", msg)
		refuse(code, msg)
		return
	}
	gw.SetWriteDeadline(time.Now().Add(preambleTimeout))
	if err := bridge.WriteAccept(gw); err != nil {
		log.Debug("stream lost before it began", "err", err)
		return
	}
	gw.SetWriteDeadline(time.Time{})
	log.Debug("stream open", "target", f.address)
	// The answer is the first thing sent to the gateway: a stream opened
	// and never used is idle from here.
	st.lastDown.Store(time.Now().UnixNano())
	up, down, err := splice(st, br, target)
	log.Debug("stream closed", "bytes_to_target", up, "bytes_from_target", down, "err", err)
}

// refuseStopping answers a stream opened while the agent drains: its
// preamble read, the refusal "stopping" written, then closed.
func (a *Agent) refuseStopping(c net.Conn) {
	defer a.loops.Done()
	defer func() {
		c.Close()
		a.mu.Lock()
		delete(a.refusing, c)
		a.mu.Unlock()
	}()
	c.SetDeadline(time.Now().Add(preambleTimeout))
	if _, err := bridge.ReadPreamble(bufio.NewReader(c)); err != nil {
		return
	}
	if bridge.WriteRefusal(c, bridge.RefuseStopping, "the agent is shutting down") == nil {
		lingerClose(c)
	}
}

// lingerClose ends a refused stream without losing the answer: a gateway
// may have sent bytes after its preamble, and closing with them unread
// would reset the connection, which can discard the answer before the
// gateway reads it. So the write side is closed first and what arrives is
// read away until the gateway closes too, or briefly at most.
func lingerClose(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.Copy(io.Discard, io.LimitReader(c, lingerMaxBytes))
}

// How long and how much lingerClose reads from a refused stream.
const (
	lingerTimeout  = time.Second
	lingerMaxBytes = 256 << 10
)

// lookup checks a tunnel named by a preamble against the current
// configuration. A refusal comes back as a code and a message.
func (a *Agent) lookup(tunnel string) (f forward, code, msg string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return refusal(a.cur, tunnel)
}

// refusal decides whether d serves a stream for tunnel.
func refusal(d *desired, tunnel string) (f forward, code, msg string) {
	if d == nil {
		return f, bridge.RefuseUnknownTunnel, fmt.Sprintf("this agent serves no tunnel %q", tunnel)
	}
	f, ok := d.forwards[tunnel]
	switch {
	case !ok:
		return f, bridge.RefuseUnknownTunnel, fmt.Sprintf("agent %q serves no tunnel %q", d.self.Name, tunnel)
	case !d.self.Enabled:
		return f, bridge.RefuseDisabled, fmt.Sprintf("agent %q is disabled", d.self.Name)
	case !f.enabled:
		return f, bridge.RefuseDisabled, fmt.Sprintf("tunnel %q is disabled", tunnel)
	case f.invalid != "":
		return f, bridge.RefuseTargetUnreachable, f.invalid
	}
	return f, "", ""
}

// attach records the dialled target on st, provided the tunnel is still
// served as it was when the stream looked it up: an Apply in between would
// otherwise leave a stream it never saw.
func (a *Agent) attach(st *stream, f forward, target net.Conn) (code, msg string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st.closed {
		return bridge.RefuseDisabled, "the agent is stopping"
	}
	if !a.cur.serves(f) {
		_, code, msg = refusal(a.cur, f.tunnel)
		if code == "" {
			code, msg = bridge.RefuseUnknownTunnel, fmt.Sprintf("tunnel %q changed while connecting", f.tunnel)
		}
		return code, msg
	}
	st.attached, st.fwd, st.target = true, f, target
	return "", ""
}

// dialTarget connects to f's target: TCP, and for an https target a TLS
// client handshake on top (the gateway speaks plain HTTP to the agent; the
// agent is the origin's TLS client). Nothing but a forward's target is
// ever dialled.
func (a *Agent) dialTarget(ctx context.Context, f forward) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", f.address)
	if err != nil {
		return nil, err
	}
	if f.scheme != "https" {
		return c, nil
	}
	tc := tls.Client(c, &tls.Config{
		ServerName:         f.serverName,
		InsecureSkipVerify: f.insecure,
		// No ALPN: the gateway's bytes are HTTP/1.1, so the origin must
		// not pick h2.
		MinVersion: tls.VersionTLS12,
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", f.address, err)
	}
	return &tlsTarget{Conn: tc, raw: c}, nil
}

// tlsTarget is an https target: closing its write side sends close_notify
// and then a FIN, so origins that wait for either see the end.
type tlsTarget struct {
	*tls.Conn
	raw net.Conn
}

// Close closes the TCP connection without a close_notify: either the
// stream ended cleanly and CloseWrite sent one, or it is being aborted, and
// then a close_notify could block on a full send buffer.
func (t *tlsTarget) Close() error { return t.raw.Close() }

// CloseWrite sends close_notify, then a FIN.
func (t *tlsTarget) CloseWrite() error {
	err := t.Conn.CloseWrite()
	if cw, ok := t.raw.(interface{ CloseWrite() error }); ok {
		err = errors.Join(err, cw.CloseWrite())
	}
	return err
}

// splice copies gateway→target and target→gateway until both directions
// end. A direction that ends cleanly half-closes its destination, so the
// other side sees EOF and can still answer; one that fails closes both
// connections, so the other direction ends too. src is the gateway's
// reader, which may already hold bytes sent right after the preamble.
// Writes are stamped in st, which drain reads to find idle keep-alive
// streams.
func splice(st *stream, src io.Reader, target net.Conn) (up, down int64, err error) {
	gw := st.gw
	var once sync.Once
	abort := func() {
		once.Do(func() {
			gw.Close()
			target.Close()
		})
	}
	upErr := make(chan error, 1)
	go func() {
		var err error
		up, err = copyHalf(requestWriter{target, st}, target, src, &upBufs, abort)
		upErr <- err
	}()
	down, errDown := copyHalf(responseWriter{gw, st}, gw, target, &downBufs, abort)
	errUp := <-upErr
	return up, down, errors.Join(errUp, errDown)
}

// The relay's buffers, pooled. A stream holds one per direction for as
// long as it is open, idle in the gateway's pool included, so they are
// sized for that: requests are mostly small (32 KiB, as io.Copy's); a
// response gets 64 KiB, twice the reads per system call of io.Copy's.
var (
	upBufs   = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	downBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}
)

// copyHalf copies src to dst through a buffer of pool and half-closes
// conn, dst's connection, at EOF.
func copyHalf(dst io.Writer, conn net.Conn, src io.Reader, pool *sync.Pool, abort func()) (int64, error) {
	buf := pool.Get().(*[]byte)
	defer pool.Put(buf)
	// Neither end's ReadFrom or WriteTo would do better: the writers here
	// wrap the connections, and a socket's WriteTo to them copies through
	// 32 KiB.
	n, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *buf)
	if err == nil {
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			err = cw.CloseWrite()
		} else {
			err = errors.New("cannot half-close the connection")
		}
	}
	if err != nil {
		abort()
	}
	return n, err
}

// requestWriter stamps each write to the target before it starts: the
// target cannot answer before then, so a response is always stamped later
// than the request it answers, however the two copies are scheduled.
type requestWriter struct {
	w  io.Writer
	st *stream
}

func (r requestWriter) Write(p []byte) (int, error) {
	r.st.lastUp.Store(time.Now().UnixNano())
	return r.w.Write(p)
}

// responseWriter marks each write to the gateway as in progress while it
// lasts, and stamps it when it ends: a response that the gateway reads
// slowly is never idle.
type responseWriter struct {
	w  io.Writer
	st *stream
}

func (r responseWriter) Write(p []byte) (int, error) {
	r.st.writingDown.Add(1)
	n, err := r.w.Write(p)
	r.st.lastDown.Store(time.Now().UnixNano())
	r.st.writingDown.Add(-1)
	return n, err
}

// recordTarget keeps the result of a dial of f's target, from a probe or
// a stream, provided f is still current. A change of reachability is
// logged once, not every failed stream.
func (a *Agent) recordTarget(f forward, err error) {
	ts := bridge.TargetStatus{Tunnel: f.tunnel, Reachable: err == nil, CheckedAt: time.Now()}
	if err != nil {
		ts.Message = err.Error()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cur == nil || !a.cur.serves(f) {
		return
	}
	prev, seen := a.targets[f.tunnel]
	a.targets[f.tunnel] = ts
	switch {
	case err != nil && (!seen || prev.Reachable):
		a.log.Warn("target unreachable", "tunnel", f.tunnel, "target", f.address, "err", err)
	case err == nil && seen && !prev.Reachable:
		a.log.Info("target reachable again", "tunnel", f.tunnel, "target", f.address)
	}
}

// probeRound dials every active tunnel's target at once, each within
// DialTimeout, and records the results; it pokes every gateway meanwhile.
func (a *Agent) probeRound() {
	a.mu.Lock()
	var fs []forward
	if a.cur != nil {
		for _, f := range a.cur.forwards {
			if a.cur.serves(f) {
				fs = append(fs, f)
			}
		}
	}
	a.mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(a.pokeGateways)
	for _, f := range fs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(a.hardCtx, a.cfg.DialTimeout)
			defer cancel()
			c, err := a.dialTarget(ctx, f)
			if err == nil {
				c.Close()
			}
			a.recordTarget(f, err)
		})
	}
	wg.Wait()
}
