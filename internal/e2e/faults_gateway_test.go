package e2e

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// TestFaultsGatewayCutOff holds quality.md 4 with real processes: one of
// three gateways is cut off while a load runs through the other two, first
// killed with SIGKILL, then silently (SIGSTOP: its UDP and TCP go
// unanswered, like a path that drops everything). No request through the
// others fails. Started again, agents handshake with it within 30 s;
// continued, it serves again.
func TestFaultsGatewayCutOff(t *testing.T) {
	c := newFaultCluster(t)
	victim, others := c.gateways[2], c.gateways[:2]
	targets := faultTargets(others)
	const workers = 8

	// (a) SIGKILL in the middle of the load.
	samples, start, ran := faultLoad(targets, workers, 5*time.Second, faultEvent{after: 1500 * time.Millisecond, do: victim.kill})
	st := faultSummarize(samples, start, time.Now())
	during := faultSummarize(samples, ran[0], time.Now())
	t.Logf("%s killed: load through %s and %s: %v (after the kill: %v)", victim.name, others[0].name, others[1].name, st, during)
	if st.failures > 0 {
		t.Fatalf("got %d failed requests through the other gateways, want 0; first: %s", st.failures, strings.Join(st.examples, "; "))
	}
	if during.requests < 100 {
		t.Fatalf("got %d requests after the kill, want at least 100 for the test to mean something", during.requests)
	}

	// Agents must handshake with it again on their own: it cannot reach
	// them first, not knowing their addresses until they do.
	restarted := time.Now()
	victim.start()
	serving := faultPoll(t, 30*time.Second, "every tunnel through "+victim.name+" after its restart",
		func() (bool, string) { return faultServesAll([]*gatewayProc{victim}, faultTunnels) })
	t.Logf("%s started again: serves every agent's tunnel %v later", victim.name, serving.Round(time.Millisecond))
	// What Control shows lags by a probe and a heartbeat; the handshake
	// times it shows are the gateway's own.
	var lastHandshake time.Duration
	faultPoll(t, 60*time.Second, victim.name+" reporting handshakes and probes of every agent after its restart",
		func() (bool, string) {
			f, err := faultReadFleet(c)
			if err != nil {
				return false, err.Error()
			}
			g := f.gateways[victim.name]
			if g == nil {
				return false, "no gateway " + victim.name
			}
			lastHandshake = 0
			for agent := range c.agents {
				i := slices.IndexFunc(g.Status.Agents, func(p api.NodePeerStatus) bool { return p.Name == agent })
				if i < 0 {
					return false, agent + " not a peer"
				}
				p := g.Status.Agents[i]
				if p.LastHandshake == nil || p.LastHandshake.Before(restarted.Add(-time.Second)) || p.Probe != "ok" {
					return false, fmt.Sprintf("%s: handshake %s, probe %q", agent, faultFmtTime(p.LastHandshake), p.Probe)
				}
				lastHandshake = max(lastHandshake, p.LastHandshake.Sub(restarted))
			}
			return true, ""
		})
	t.Logf("%s started again: every agent handshook with it within %v (Control shows probes \"ok\" %v after the start)",
		victim.name, lastHandshake.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	if lastHandshake > 30*time.Second {
		t.Errorf("got the last agent's handshake with the restarted %s %v after its start, want within 30s", victim.name, lastHandshake.Round(time.Millisecond))
	}

	// (b) SIGSTOP: the gateway holds its sockets but answers nothing.
	if err := syscall.Kill(victim.pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	continued := false
	t.Cleanup(func() {
		if !continued {
			syscall.Kill(victim.pid(), syscall.SIGCONT)
		}
	})
	if code, _, err := get(gatewayClient(victim.httpAddr, time.Second), "http://"+faultTunnels[0].host+"/"); err == nil {
		t.Fatalf("%s answered %d while stopped; want no answer", victim.name, code)
	}
	samples, start, _ = faultLoad(targets, workers, 4*time.Second)
	st = faultSummarize(samples, start, time.Now())
	if st.requests < 100 {
		t.Fatalf("got %d requests while %s was stopped, want at least 100 for the test to mean something", st.requests, victim.name)
	}
	t.Logf("%s stopped: load through %s and %s: %v", victim.name, others[0].name, others[1].name, st)
	if st.failures > 0 {
		t.Fatalf("got %d failed requests through the other gateways while %s was stopped, want 0; first: %s",
			st.failures, victim.name, strings.Join(st.examples, "; "))
	}
	if err := syscall.Kill(victim.pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	continued = true
	back := faultPoll(t, 30*time.Second, "every tunnel through "+victim.name+" after SIGCONT",
		func() (bool, string) { return faultServesAll([]*gatewayProc{victim}, faultTunnels) })
	t.Logf("%s continued: serves every agent's tunnel %v later", victim.name, back.Round(time.Millisecond))
	if ok, seen := faultServesAll(c.gateways, faultTunnels); !ok {
		t.Fatalf("after the episode: %s, want every tunnel served by every gateway", seen)
	}
}

func faultFmtTime(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.Format(time.TimeOnly)
}
