package gateway

import (
	"testing"
	"time"
)

// TestStalledRequestChecksItsAgent: a request whose agent falls silent
// while the request waits for its answer is ended with 502 "agent
// offline" within seconds. Only the request's own stall check can find
// out: the probe loop is an hour apart here, and a silent agent sends
// nothing that would end the stream.
func TestStalledRequestChecksItsAgent(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ProbeInterval = time.Hour })
	if code, _, _ := get(t, e.http, "http://"+hostA+"/"); code != 200 {
		t.Fatalf("before: got %d, want 200", code)
	}
	go func() {
		<-e.app.blocked
		// The agent drops the gateway from its peers: what the gateway
		// sends from now on is dropped without an answer, as by an agent
		// whose machine is gone.
		e.agent.mu.Lock()
		defer e.agent.mu.Unlock()
		sl := e.agent.sliceLocked()
		delete(sl, "peer/gw1")
		if err := e.agent.ag.Apply(sl); err != nil {
			t.Errorf("silence the agent: %v", err)
		}
	}()
	start := time.Now()
	code, hdr, _ := get(t, e.http, "http://"+hostA+"/block")
	took := time.Since(start)
	if code != 502 || hdr.Get(ErrorHeader) != ReasonAgentOffline {
		t.Fatalf("a request whose agent fell silent: got %d %s=%q, want 502 %q", code, ErrorHeader, hdr.Get(ErrorHeader), ReasonAgentOffline)
	}
	// The first check comes stallCheckAfter into the silence, and the
	// agent has the probe timeout to answer it.
	if limit := stallCheckAfter + e.gw.cfg.ProbeTimeout + 2*time.Second; took > limit {
		t.Errorf("answered after %v, want within %v", took, limit)
	}
	t.Logf("502 agent offline after %v", took.Round(time.Millisecond))
}
