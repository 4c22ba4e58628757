package e2e

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// TestFaultsSilentAgentPath holds quality.md 5 and 7 with real processes:
// an agent is frozen with SIGSTOP, so its WireGuard and its bridge
// connection go silent without a single packet saying so. The gateways'
// probes through the tunnel fail, and Control turns the agent's
// DataPathReady and its tunnel's Ready False within 60 s; the other
// agent's tunnel keeps being served. After SIGCONT everything recovers,
// and the gateways' file descriptors return to what they were.
func TestFaultsSilentAgentPath(t *testing.T) {
	c := newFaultCluster(t)
	victim, bystander := faultTunnels[1], faultTunnels[0]
	agent := c.agents[victim.agent]

	fdsBefore := map[string]int{}
	for _, g := range c.gateways {
		fdsBefore[g.name] = faultFDCount(t, g.pid())
	}

	if err := syscall.Kill(agent.pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	continued := false
	t.Cleanup(func() {
		if !continued {
			syscall.Kill(agent.pid(), syscall.SIGCONT)
		}
	})
	stopped := time.Now()

	// While the path is silent: requests for the frozen agent's tunnel end
	// (an error page or a timeout, not a hang), the other tunnel works.
	var wg sync.WaitGroup
	answers := make([]string, len(c.gateways))
	for i, g := range c.gateways {
		wg.Go(func() {
			cl := gatewayClient(g.httpAddr, 10*time.Second)
			defer cl.CloseIdleConnections()
			start := time.Now()
			code, _, err := get(cl, "http://"+victim.host+"/")
			answers[i] = fmt.Sprintf("%s: %d %v after %v", g.name, code, err, time.Since(start).Round(time.Millisecond))
			if err == nil && code == 200 {
				t.Errorf("%s via %s: got 200 with its agent frozen, want an error", victim.host, g.name)
			}
		})
	}
	wg.Wait()
	t.Logf("%s with %s frozen: %s", victim.host, victim.agent, strings.Join(answers, "; "))
	if ok, seen := faultServesAll(c.gateways, []faultTunnel{bystander}); !ok {
		t.Fatalf("with %s frozen: %s, want %s served by every gateway", victim.agent, seen, bystander.host)
	}

	var probesFailed, dataPathFalse, tunnelNotReady time.Duration
	faultPoll(t, 60*time.Second-time.Since(stopped), "DataPathReady of the frozen agent and Ready of its tunnel turning False", func() (bool, string) {
		f, err := faultReadFleet(c)
		if err != nil {
			return false, err.Error()
		}
		now := time.Since(stopped)
		failing := 0
		for _, g := range f.gateways {
			if p := faultProbe(g, victim.agent); p != "" && p != "ok" {
				failing++
			}
		}
		if probesFailed == 0 && failing == len(c.gateways) {
			probesFailed = now
		}
		a, tun := f.agents[victim.agent], f.tunnels[victim.name]
		if a == nil || tun == nil {
			return false, "agent or tunnel missing"
		}
		if dataPathFalse == 0 && faultCondition(a.Status.Conditions, api.NodeDataPath) == api.ConditionFalse {
			dataPathFalse = now
		}
		if tunnelNotReady == 0 && faultCondition(tun.Status.Conditions, api.ConditionReady) == api.ConditionFalse {
			tunnelNotReady = now
		}
		seen := fmt.Sprintf("%d of %d gateways' probes failing, agent DataPathReady=%s, tunnel Ready=%s",
			failing, len(c.gateways), faultCondition(a.Status.Conditions, api.NodeDataPath), faultCondition(tun.Status.Conditions, api.ConditionReady))
		return dataPathFalse > 0 && tunnelNotReady > 0, seen
	})
	t.Logf("%s frozen: every gateway's probe failing after %v, DataPathReady False after %v, tunnel %s Ready False after %v",
		victim.agent, probesFailed.Round(time.Millisecond), dataPathFalse.Round(time.Millisecond), victim.name, tunnelNotReady.Round(time.Millisecond))
	if ok, seen := faultServesAll(c.gateways, []faultTunnel{bystander}); !ok {
		t.Fatalf("with %s frozen: %s, want %s served by every gateway", victim.agent, seen, bystander.host)
	}

	if err := syscall.Kill(agent.pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	continued = true
	resumed := time.Now()
	served := faultPoll(t, 60*time.Second, victim.host+" through every gateway after SIGCONT",
		func() (bool, string) { return faultServesAll(c.gateways, faultTunnels) })
	ready := faultPoll(t, 60*time.Second-time.Since(resumed), "the agent and its tunnel Ready again after SIGCONT", func() (bool, string) {
		f, err := faultReadFleet(c)
		if err != nil {
			return false, err.Error()
		}
		a, tun := f.agents[victim.agent], f.tunnels[victim.name]
		if a == nil || tun == nil {
			return false, "agent or tunnel missing"
		}
		dp, ar, tr := faultCondition(a.Status.Conditions, api.NodeDataPath), faultCondition(a.Status.Conditions, api.ConditionReady),
			faultCondition(tun.Status.Conditions, api.ConditionReady)
		return dp == api.ConditionTrue && ar == api.ConditionTrue && tr == api.ConditionTrue,
			fmt.Sprintf("agent DataPathReady=%s Ready=%s, tunnel Ready=%s", dp, ar, tr)
	})
	t.Logf("%s continued: its tunnel served by every gateway after %v, agent and tunnel Ready after %v",
		victim.agent, served.Round(time.Millisecond), (served + ready).Round(time.Millisecond))

	// Nothing the episode opened is left behind in the gateways.
	const margin = 4
	var fdsAfter []string
	faultPoll(t, 30*time.Second, "gateways' file descriptors back near their baseline", func() (bool, string) {
		fdsAfter = fdsAfter[:0]
		ok := true
		for _, g := range c.gateways {
			n := faultFDCount(t, g.pid())
			fdsAfter = append(fdsAfter, fmt.Sprintf("%s %d -> %d", g.name, fdsBefore[g.name], n))
			ok = ok && n <= fdsBefore[g.name]+margin
		}
		return ok, strings.Join(fdsAfter, ", ")
	})
	t.Logf("gateways' open file descriptors before and after: %s", strings.Join(fdsAfter, ", "))
}
