package agent

import (
	"context"
	"net/netip"
	"sync"
)

// pokePort is the port pokeGateways dials on a gateway's overlay address.
// Gateways listen on nothing in the overlay, so a live one answers at once
// with a reset; the answer, not a connection, is what is wanted.
const pokePort = 9

// pokeGateways sends every gateway a packet that WireGuard counts as data,
// a connection attempt through the tunnel, and waits for the attempts to
// end (each within DialTimeout).
//
// Persistent keepalives alone cannot tell that a gateway lost its session
// (the process restarted): the gateway drops them silently, cannot reach
// the agent first (it does not know the NAT's address until the agent
// handshakes) and the agent would only start a new handshake when its
// session ages out after two minutes. Data that gets no answer makes
// WireGuard start a new handshake within 15 s, so a restarted gateway is
// reached again within a probe interval and 15 s; a live gateway's reset
// is the answer that keeps the session.
func (a *Agent) pokeGateways() {
	a.mu.Lock()
	dev, cur := a.dev, a.cur
	a.mu.Unlock()
	if dev == nil || cur == nil {
		return
	}
	var wg sync.WaitGroup
	for addr := range cur.gateways {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(a.hardCtx, a.cfg.DialTimeout)
			defer cancel()
			if c, err := dev.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, pokePort).String()); err == nil {
				c.Close()
			}
		})
	}
	wg.Wait()
}
