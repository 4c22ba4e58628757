package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// Health endpoints; see the package documentation.
const (
	// HealthPath answers the gateway's health on every Host.
	HealthPath = "/.well-known/kakuremichi/healthz"
	// plainHealthPath answers it only when the Host is not routed.
	plainHealthPath = "/healthz"
)

// poolSuffix ends the outbound URL host of every proxied request:
// http://<tunnel>.tunnel is a connection-pool key, resolved by dialTunnel.
const poolSuffix = ".tunnel"

// probeTunnel is the tunnel name a probe puts in its preamble. No tunnel
// can have it (names start with a letter or digit), so an agent answers
// "unknown tunnel": any answer proves the data path works.
const probeTunnel = ".probe"

// Transport tuning for the streams to agents.
const (
	// maxIdlePerTunnel keeps enough idle connections per tunnel for a busy
	// site; net/http's default of 2 would close and redial constantly.
	maxIdlePerTunnel = 256
	// agentIdleTimeout closes a pooled connection to an agent unused this
	// long.
	agentIdleTimeout = 90 * time.Second
	// agentBufferSize is the transport's read and write buffer per
	// connection; net/http's 4 KiB costs throughput on large bodies.
	agentBufferSize = 64 << 10
)

// routeContextKey carries the route a request matched from the handler to
// the proxy's Rewrite.
type routeContextKey struct{}

// newTransport is the http.Transport to agents: HTTP/1.1 only, over
// streams opened by dial.
func newTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	return &http.Transport{
		Proxy:       nil, // never an environment proxy: the stream is the route
		DialContext: dial,
		// HTTP/1.1 to agents: one request at a time per stream keeps the
		// agent a byte relay, and WebSocket upgrades work.
		ForceAttemptHTTP2:   false,
		MaxIdleConns:        0, // no total cap; bounded per tunnel
		MaxIdleConnsPerHost: maxIdlePerTunnel,
		IdleConnTimeout:     agentIdleTimeout,
		// No ResponseHeaderTimeout: a long poll or a slow report may take
		// minutes before its headers; the client decides how long to wait.
		ResponseHeaderTimeout: 0,
		ExpectContinueTimeout: time.Second,
		// Pass the client's Accept-Encoding through instead of asking for
		// gzip and decompressing on the way.
		DisableCompression:     true,
		MaxResponseHeaderBytes: 1 << 20,
		ReadBufferSize:         agentBufferSize,
		WriteBufferSize:        agentBufferSize,
	}
}

// newProxy is the reverse proxy every routed request goes through.
func (g *Gateway) newProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:   rewrite,
		Transport: g.transport,
		// Zero: the proxy flushes at once whatever streams (server-sent
		// events, and every body of unknown length, which is how a
		// streamed response comes), and lets a body of known length fill
		// the server's buffer: flushing it at every read from the tunnel
		// made one TLS record and one write per few KiB.
		FlushInterval: 0,
		// Without a pool the proxy allocates a 32 KiB copy buffer for
		// every request: most of what a small request allocates.
		BufferPool:   copyBufferPool{},
		ErrorLog:     slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
		ErrorHandler: g.proxyError,
	}
}

// proxyBufferSize is the proxy's copy buffer, as its own default.
const proxyBufferSize = 32 << 10

var proxyBuffers = sync.Pool{New: func() any { b := make([]byte, proxyBufferSize); return &b }}

// copyBufferPool lends the proxy its copy buffers from proxyBuffers.
type copyBufferPool struct{}

func (copyBufferPool) Get() []byte { return *proxyBuffers.Get().(*[]byte) }

func (copyBufferPool) Put(b []byte) {
	if cap(b) == proxyBufferSize {
		b = b[:proxyBufferSize]
		proxyBuffers.Put(&b)
	}
}

// rewrite points the outbound request at its tunnel's connection pool and
// replaces every forwarding header the client sent with the gateway's own:
// nothing a client claims about its address or scheme passes through.
func rewrite(pr *httputil.ProxyRequest) {
	rt := pr.In.Context().Value(routeContextKey{}).(*route)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = rt.tunnel + poolSuffix
	// The application sees the Host the client asked for.
	pr.Out.Host = pr.In.Host
	stripForwarding(pr.Out.Header)
	pr.SetXForwarded()
	if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		pr.Out.Header.Set("X-Real-Ip", ip)
	}
}

// stripForwarding removes every header a client could use to claim an
// address, host or scheme: Forwarded, X-Real-IP and all X-Forwarded-*.
func stripForwarding(h http.Header) {
	for k := range h {
		ck := http.CanonicalHeaderKey(k)
		if ck == "Forwarded" || ck == "X-Real-Ip" || strings.HasPrefix(ck, "X-Forwarded-") {
			delete(h, k)
		}
	}
}

// serveHTTP routes one request by its Host. It is the handler of both the
// HTTPS and the plain-HTTP server.
func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request) {
	g.handlers.add(1)
	defer g.handlers.done()
	if r.ProtoMajor == 1 && r.Header.Get("Upgrade") != "" {
		// The proxy hijacks the connection of an upgrade and relays it
		// inside this handler; shutdown waits for it, then closes it.
		if c, ok := r.Context().Value(connContextKey{}).(net.Conn); ok {
			g.upgraded.add(c)
			defer g.upgraded.remove(c)
		}
	}

	if r.URL.Path == HealthPath {
		g.serveHealth(w, r)
		return
	}
	t := g.table.Load()
	rt, routed := t.lookup(normalizeHost(r.Host))
	switch {
	case !routed && r.URL.Path == plainHealthPath:
		g.serveHealth(w, r)
	case t.gatewayDisabled:
		writeError(w, r, pageGatewayDisabled)
	case !routed:
		writeError(w, r, pageNoSuchTunnel)
	case !rt.enabled:
		writeError(w, r, pageTunnelDisabled)
	case !rt.agentAddr.IsValid():
		writeError(w, r, pageAgentOffline)
	case g.health.isDown(rt.agentAddr) && !g.checkAgent(r.Context(), rt.agentAddr):
		writeError(w, r, pageAgentOffline)
	default:
		ctx, cancel := context.WithCancelCause(context.WithValue(r.Context(), routeContextKey{}, rt))
		defer cancel(nil)
		// A deadline a previous response on this connection left must
		// not cut this one (a long poll, or an upgrade that hijacks it).
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		pw := &progressWriter{ResponseWriter: w}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &countingBody{ReadCloser: r.Body, progress: &pw.progress}
		}
		defer g.watchStall(ctx, pw, rt.agentAddr, cancel)()
		g.proxy.ServeHTTP(pw, r.WithContext(ctx))
	}
}

// proxyError answers a request the proxy could not relay.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(context.Cause(r.Context()), errAgentDown) {
		g.log.Debug("agent stopped answering a request", "host", r.Host, "err", err)
		writeError(w, r, pageAgentOffline)
		return
	}
	if r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	page := pageForError(err)
	g.log.Debug("proxying failed", "host", r.Host, "reason", page.reason, "err", err)
	writeError(w, r, page)
}

// pageForError maps an error from dialing or relaying to its page.
func pageForError(err error) errorPage {
	var de *dialError
	if errors.As(err, &de) {
		return de.page
	}
	return pageUpstreamError
}

// dialError is a stream to an agent that could not be opened, with the
// page that explains why.
type dialError struct {
	page errorPage
	err  error
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialTunnel is the transport's DialContext: addr is "<tunnel>.tunnel:80",
// resolved with the current routing table.
func (g *Gateway) dialTunnel(ctx context.Context, _, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	tunnel := strings.TrimSuffix(host, poolSuffix)
	rt, ok := g.table.Load().tunnels[tunnel]
	switch {
	case !ok:
		// Removed between routing and dialing.
		return nil, &dialError{pageNoSuchTunnel, fmt.Errorf("dialing tunnel %s: no longer routed", tunnel)}
	case !rt.enabled:
		return nil, &dialError{pageTunnelDisabled, fmt.Errorf("dialing tunnel %s: disabled", tunnel)}
	}
	return g.dialAgent(ctx, rt.agentAddr, tunnel)
}

// dialAgent opens a stream to tunnel on the agent at addr: it dials
// addr:7000 through WireGuard within the dial timeout, writes the preamble
// and waits for the agent's answer. Every failure is a *dialError.
func (g *Gateway) dialAgent(ctx context.Context, addr netip.Addr, tunnel string) (net.Conn, error) {
	g.dials.Add(1)
	c, br, err := g.openStream(ctx, addr, tunnel)
	if err != nil {
		return nil, err
	}
	if err := readAnswer(ctx, c, br); err != nil {
		c.Close()
		page := pageUpstreamError
		var refused *bridge.RefusedError
		if errors.As(err, &refused) {
			switch refused.Code {
			case bridge.RefuseTargetUnreachable:
				page = pageTargetUnreachable
			case bridge.RefuseDisabled:
				page = pageTunnelDisabled
			case bridge.RefuseUnknownTunnel:
				page = pageAgentUnknownTunnel
			case bridge.RefuseStopping:
				page = pageAgentOffline
			}
		}
		return nil, &dialError{page, fmt.Errorf("opening tunnel %s on agent %s: %w", tunnel, addr, err)}
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		c.Close()
		return nil, &dialError{pageUpstreamError, fmt.Errorf("opening tunnel %s on agent %s: %w", tunnel, addr, err)}
	}
	g.streams.Add(1)
	set := g.health.get(addr).streams
	tc := &trackedConn{Conn: &agentConn{Conn: c, r: br, open: &g.streams}, set: set}
	set.add(tc)
	return tc, nil
}

// openStream dials the agent through WireGuard within the dial timeout and
// writes the preamble. The connection's deadline bounds the wait for the
// answer, which the caller reads from the returned reader.
func (g *Gateway) openStream(ctx context.Context, addr netip.Addr, tunnel string) (net.Conn, *bufio.Reader, error) {
	dev := g.dev.Load()
	if dev == nil {
		return nil, nil, &dialError{pageGatewayNotReady, fmt.Errorf("dialing agent %s: no wireguard device yet", addr)}
	}
	if !addr.IsValid() {
		return nil, nil, &dialError{pageAgentOffline, fmt.Errorf("dialing tunnel %s: the agent has no address", tunnel)}
	}
	dctx, cancel := context.WithTimeout(ctx, g.cfg.DialTimeout)
	defer cancel()
	target := netip.AddrPortFrom(addr, bridge.AgentForwardPort).String()
	c, err := dev.DialContext(dctx, "tcp", target)
	if err != nil {
		return nil, nil, &dialError{pageAgentOffline, fmt.Errorf("dialing agent %s: %w", target, err)}
	}
	// The agent answers once it has dialed the target, which may take a
	// while on its side: the answer timeout bounds that.
	if err := c.SetDeadline(time.Now().Add(g.cfg.AnswerTimeout)); err != nil {
		c.Close()
		return nil, nil, &dialError{pageAgentOffline, fmt.Errorf("dialing agent %s: %w", target, err)}
	}
	if err := bridge.WritePreamble(c, tunnel); err != nil {
		c.Close()
		return nil, nil, &dialError{pageAgentOffline, fmt.Errorf("opening tunnel %s on agent %s: %w", tunnel, addr, err)}
	}
	return c, bufio.NewReaderSize(c, 512), nil
}

// readAnswer reads the agent's answer to a preamble; a canceled ctx ends
// the wait at once.
func readAnswer(ctx context.Context, c net.Conn, br *bufio.Reader) error {
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	return bridge.ReadAnswer(br)
}

// serveHealth answers the gateway's own health: 200 while it serves, 503
// before it has a WireGuard device and while it drains.
func (g *Gateway) serveHealth(w http.ResponseWriter, r *http.Request) {
	status, state := http.StatusOK, "ok"
	switch {
	case g.draining.Load():
		status, state = http.StatusServiceUnavailable, "draining"
	case g.dev.Load() == nil:
		status, state = http.StatusServiceUnavailable, "waiting for configuration"
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, "{\"status\":%q}\n", state)
	}
}
