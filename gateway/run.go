package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// handlerExitTimeout bounds the wait, after everything is closed, for the
// last request handlers to return; they only have closed connections left
// to notice.
const handlerExitTimeout = 5 * time.Second

// closeFlush is how long the device stays up after the streams to agents
// are closed at shutdown, so that their FINs go out.
const closeFlush = 100 * time.Millisecond

// connContextKey carries a request's client connection from
// http.Server.ConnContext to the handler, which needs it for upgrades.
type connContextKey struct{}

// listener is one server with where it serves.
type listener struct {
	name string
	srv  *http.Server
	ln   net.Listener
	tls  bool
}

// Run serves HTTP, HTTPS, tcp routes and the probes until ctx ends, then
// drains: the listeners close at once, in-flight requests, upgraded
// connections and tcp relays get Config.ShutdownGrace to finish, and what
// is left is closed, the WireGuard device last. It returns nil on a clean
// stop, or the error that stopped a server. Run may be called once.
func (g *Gateway) Run(ctx context.Context) error {
	g.mu.Lock()
	if g.started {
		g.mu.Unlock()
		return fmt.Errorf("running gateway: already run: %w", api.ErrConflict)
	}
	g.started = true
	g.mu.Unlock()

	servers, err := g.listen()
	if err != nil {
		g.stop(nil)
		return fmt.Errorf("running gateway: %w", err)
	}

	g.mu.Lock()
	g.running = true
	for _, l := range g.tcp {
		g.startTCPLocked(l)
	}
	g.mu.Unlock()

	probeCtx, stopProbes := context.WithCancel(g.baseCtx)
	defer stopProbes()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.probeLoop(probeCtx)
	}()

	errc := make(chan error, len(servers))
	var serving sync.WaitGroup
	for _, s := range servers {
		serving.Add(1)
		go func() {
			defer serving.Done()
			var err error
			if s.tls {
				err = s.srv.ServeTLS(s.ln, "", "")
			} else {
				err = s.srv.Serve(s.ln)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serving %s on %s: %w", s.name, s.ln.Addr(), err)
			}
		}()
		g.log.Info("gateway listening", "server", s.name, "addr", s.ln.Addr())
	}

	var runErr error
	select {
	case <-ctx.Done():
		g.log.Info("gateway draining", "grace", g.cfg.ShutdownGrace)
	case runErr = <-errc:
		g.log.Error("gateway server failed", "err", runErr)
	}
	g.stop(servers)
	serving.Wait()
	if runErr == nil {
		select {
		case runErr = <-errc:
		default:
		}
	}
	return runErr
}

// listen binds (or takes) the HTTP and HTTPS listeners and builds their
// servers.
func (g *Gateway) listen() ([]listener, error) {
	var out []listener
	fail := func(err error) ([]listener, error) {
		for _, l := range out {
			l.ln.Close()
		}
		for _, ln := range []net.Listener{g.cfg.HTTPListener, g.cfg.HTTPSListener} {
			if ln != nil {
				ln.Close()
			}
		}
		return nil, err
	}
	routes := http.Handler(http.HandlerFunc(g.serveHTTP))
	plain := routes
	if g.cfg.WrapHTTP != nil {
		plain = g.cfg.WrapHTTP(routes)
	}
	specs := []struct {
		name string
		addr string
		ln   net.Listener
		h    http.Handler
		tls  bool
	}{
		{"http", g.cfg.HTTPListen, g.cfg.HTTPListener, plain, false},
		{"https", g.cfg.HTTPSListen, g.cfg.HTTPSListener, routes, true},
	}
	for _, sp := range specs {
		ln := sp.ln
		if ln == nil {
			if sp.addr == "" {
				continue
			}
			var err error
			if ln, err = net.Listen("tcp", sp.addr); err != nil {
				return fail(fmt.Errorf("listening for %s: %w", sp.name, err))
			}
		}
		out = append(out, listener{name: sp.name, srv: g.newServer(sp.h, sp.tls), ln: ln, tls: sp.tls})
	}
	return out, nil
}

// newServer builds one public server. There is no read or write timeout:
// uploads and streamed responses last as long as they flow; slow clients
// are cut off by the read-header timeout, which also bounds the TLS
// handshake.
func (g *Gateway) newServer(h http.Handler, withTLS bool) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: g.cfg.ReadHeaderTimeout,
		IdleTimeout:       g.cfg.IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return g.baseCtx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connContextKey{}, c)
		},
	}
	if withTLS {
		srv.TLSConfig = &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: g.certs.getCertificate,
			// acme-tls/1 comes last: only an ACME CA offers it, and the
			// certificate hook answers those handshakes with the
			// TLS-ALPN-01 challenge certificate.
			NextProtos: []string{"h2", "http/1.1", "acme-tls/1"},
		}
	}
	return srv
}

// stop shuts everything down: listeners first, then the grace period for
// what is in flight, then the rest, the device last. servers may be nil
// when Run failed to start them.
func (g *Gateway) stop(servers []listener) {
	g.draining.Store(true)
	grace, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownGrace)
	defer cancel()

	g.mu.Lock()
	g.stopped = true
	g.running = false
	tcp := make([]*tcpListener, 0, len(g.tcp))
	for _, l := range g.tcp {
		l.ln.Close()
		tcp = append(tcp, l)
	}
	g.mu.Unlock()

	var drain sync.WaitGroup
	for _, s := range servers {
		drain.Add(1)
		go func() {
			defer drain.Done()
			if err := s.srv.Shutdown(grace); err != nil {
				g.log.Warn("grace period over, closing connections", "server", s.name, "err", err)
			}
		}()
	}
	for _, l := range tcp {
		drain.Add(1)
		go func() {
			defer drain.Done()
			l.conns.wait(grace)
		}()
	}
	drain.Add(1)
	go func() {
		defer drain.Done()
		g.upgraded.wait(grace)
	}()
	drain.Wait()

	// Whatever is still open has had its grace.
	streams := g.streams.Load()
	for _, s := range servers {
		s.srv.Close()
	}
	g.upgraded.closeAll()
	for _, l := range tcp {
		l.conns.closeAll()
	}
	// Canceling every request's context makes the proxy abandon its
	// streams, and ends probes and dials.
	g.stopBase()
	g.transport.CloseIdleConnections()
	g.wg.Wait()
	wait, cancelWait := context.WithTimeout(context.Background(), handlerExitTimeout)
	defer cancelWait()
	if !g.handlers.wait(wait) {
		g.log.Error("request handlers still running after shutdown", "timeout", handlerExitTimeout)
	}
	// Streams the last handlers gave back to the pool.
	g.transport.CloseIdleConnections()

	g.mu.Lock()
	clear(g.tcp)
	g.publishRoutesLocked()
	dev := g.dev.Swap(nil)
	g.mu.Unlock()
	if dev != nil {
		if streams > 0 {
			// Let the closing segments of the streams just closed reach
			// the agents, which would otherwise keep them open.
			time.Sleep(closeFlush)
		}
		dev.Close()
	}
	g.log.Info("gateway stopped")
}
