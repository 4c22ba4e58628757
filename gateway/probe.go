package gateway

import (
	"context"
	"errors"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// maxConcurrentProbes bounds the probes in flight, so a gateway with many
// offline agents does not open hundreds of dials at once.
const maxConcurrentProbes = 32

// probeTarget is one agent peer to probe.
type probeTarget struct {
	agent string
	addr  netip.Addr
}

// probeLoop probes every agent peer each probe interval, and at once when
// Apply changes the peers, until ctx ends. Each round also retries the tcp
// ports that could not be bound.
func (g *Gateway) probeLoop(ctx context.Context) {
	ticker := time.NewTicker(g.cfg.ProbeInterval)
	defer ticker.Stop()
	for {
		g.probeAll(ctx)
		g.mu.Lock()
		if len(g.tcpFailed) > 0 {
			_ = g.syncTCPLocked(g.table.Load())
		}
		g.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-g.probeNow:
		}
	}
}

// probeAll probes the current agent peers concurrently and records the
// results, forgetting agents that are no longer peers.
func (g *Gateway) probeAll(ctx context.Context) {
	targets := *g.targets.Load()
	results := make([]bridge.ProbeStatus, len(targets))
	sem := make(chan struct{}, maxConcurrentProbes)
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = g.probe(ctx, t)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	sort.Slice(results, func(i, j int) bool { return results[i].Agent < results[j].Agent })
	g.probeMu.Lock()
	defer g.probeMu.Unlock()
	g.probes = results
}

// probe opens a stream to the agent for the reserved tunnel ".probe". Any
// answer, OK or a refusal, proves that the data path works both ways.
func (g *Gateway) probe(ctx context.Context, t probeTarget) bridge.ProbeStatus {
	st := bridge.ProbeStatus{Agent: t.agent}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, g.cfg.ProbeTimeout)
	defer cancel()
	err := g.probeOnce(ctx, t.addr)
	st.CheckedAt = time.Now()
	// A probe cut short by shutdown says nothing about the agent.
	if !errors.Is(ctx.Err(), context.Canceled) && aboutAgent(err) {
		g.health.record(t.addr, err == nil, st.CheckedAt)
	}
	if err != nil {
		st.Message = err.Error()
		return st
	}
	st.OK = true
	st.LatencyMS = float64(st.CheckedAt.Sub(start).Microseconds()) / 1000
	return st
}

func (g *Gateway) probeOnce(ctx context.Context, addr netip.Addr) error {
	c, br, err := g.openStream(ctx, addr, probeTunnel)
	if err != nil {
		return err
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	err = readAnswer(ctx, c, br)
	var refused *bridge.RefusedError
	if err == nil || errors.As(err, &refused) {
		return nil
	}
	return err
}
