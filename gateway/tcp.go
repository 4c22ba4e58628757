package gateway

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// tcpListener is the public listener of one tcp route's port, with the
// connections it relays.
type tcpListener struct {
	port  int
	ln    net.Listener
	conns *connSet
	// started is true once an accept loop runs for it (guarded by
	// Gateway.mu).
	started bool
}

// syncTCPLocked makes the bound public ports those of the enabled tcp
// routes of t: it closes the listeners (and connections) of ports no
// longer routed and binds the new ones. A port that cannot be bound is
// reported in the error and tried again on the next resync; the others are
// served regardless. Callers hold g.mu.
func (g *Gateway) syncTCPLocked(t *routeTable) error {
	if g.stopped {
		// Run's shutdown owns the listeners now.
		return nil
	}
	want := map[int]bool{}
	if !t.gatewayDisabled {
		for p, r := range t.ports {
			if r.enabled {
				want[p] = true
			}
		}
	}
	for p, l := range g.tcp {
		if !want[p] {
			g.closeTCPLocked(l)
			delete(g.tcp, p)
			g.log.Info("tcp route removed", "port", p)
		}
	}
	for p := range g.tcpFailed {
		if !want[p] {
			delete(g.tcpFailed, p)
		}
	}
	var errs []error
	for p := range want {
		if _, ok := g.tcp[p]; ok {
			continue
		}
		addr := net.JoinHostPort(g.cfg.TCPListenHost, strconv.Itoa(p))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			err = fmt.Errorf("binding public port of tcp route %s: %w", t.ports[p].key, err)
			if _, known := g.tcpFailed[p]; !known {
				g.log.Warn("tcp route not served", "port", p, "tunnel", t.ports[p].tunnel, "err", err)
			}
			g.tcpFailed[p] = err.Error()
			errs = append(errs, err)
			continue
		}
		if _, known := g.tcpFailed[p]; known {
			g.log.Info("tcp route bound after earlier failure", "port", p)
			delete(g.tcpFailed, p)
		}
		l := &tcpListener{port: p, ln: ln, conns: newConnSet()}
		g.tcp[p] = l
		g.log.Info("tcp route listening", "port", p, "tunnel", t.ports[p].tunnel, "addr", ln.Addr())
		if g.running {
			g.startTCPLocked(l)
		}
	}
	g.publishRoutesLocked()
	return errors.Join(errs...)
}

// startTCPLocked starts l's accept loop, owned by the running Run.
func (g *Gateway) startTCPLocked(l *tcpListener) {
	if l.started {
		return
	}
	l.started = true
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.acceptTCP(l)
	}()
}

// closeTCPLocked stops l: no new connections, and the relayed ones end
// (the route is gone, so is the right to reach the tunnel through it).
func (g *Gateway) closeTCPLocked(l *tcpListener) {
	l.ln.Close()
	l.conns.closeAll()
}

// acceptTCP accepts the connections of one tcp route until its listener
// closes, relaying each through the tunnel.
func (g *Gateway) acceptTCP(l *tcpListener) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		l.conns.add(c)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer l.conns.remove(c)
			g.relayTCP(l.port, c)
		}()
	}
}

// relayTCP relays one public connection to the tunnel of the route that
// owns port now. Raw TCP has no way to say why a tunnel is unavailable, so
// a failure closes the connection (and is logged).
func (g *Gateway) relayTCP(port int, c net.Conn) {
	defer c.Close()
	t := g.table.Load()
	rt, ok := t.ports[port]
	if !ok || !rt.enabled || t.gatewayDisabled {
		return
	}
	// The dial ends when the gateway stops; once relaying, closing the
	// public connection (route removed, shutdown) ends the agent's side too.
	agent, err := g.dialAgent(g.baseCtx, rt.agentAddr, rt.tunnel)
	if err != nil {
		g.log.Info("tcp connection not relayed", "port", port, "tunnel", rt.tunnel, "client", c.RemoteAddr(), "err", err)
		return
	}
	relay(c, agent)
}
