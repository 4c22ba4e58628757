package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// TestFaultsControlDown holds quality.md 1, 2 and 3 with real processes,
// one phase after the other on one fleet (three gateways, two agents):
//
//  1. Control is killed with SIGKILL in the middle of a steady load through
//     every gateway, over HTTP and HTTPS, on kept and new connections: no
//     request fails.
//  2. With Control still down, every gateway and agent is killed and
//     started again: every tunnel is served through every gateway within
//     10 s, from what the nodes kept on disk.
//  3. Control is started again: the nodes reconnect on their own, resume
//     from the revision they hold, keep their overlay addresses and keys,
//     list each peer once, and everything the API acknowledged before the
//     kill is there and reaches the nodes.
func TestFaultsControlDown(t *testing.T) {
	c := newFaultCluster(t)
	before, err := faultReadFleet(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range faultNodeNames(c) {
		if !strings.HasPrefix(before.address(n), "100.") {
			t.Fatalf("%s: got overlay address %q before the kill, want one in 100.64.0.0/10", n, before.address(n))
		}
	}

	// Phase 1: kill -9 Control under load. Just before the kill a tunnel
	// is created (disabled, so that it changes no route the load uses):
	// the API acknowledged it, so it must survive.
	const workers, loadFor, killAfter = 8, 6 * time.Second, 2500 * time.Millisecond
	var lateUID string
	var killed time.Time
	samples, start, _ := faultLoad(faultTargets(c.gateways), workers, loadFor, faultEvent{after: killAfter, do: func() {
		lateUID = faultCreateTunnel(t, c, "late", "late.example.com", "home", c.apps["app-a"], false)
		killed = time.Now()
		c.control.kill()
	}})
	end := time.Now()
	beforeKill, afterKill := faultSummarize(samples, start, killed), faultSummarize(samples, killed, end)
	t.Logf("load through 3 gateways, %d workers: before the kill: %v; Control down: %v", workers, beforeKill, afterKill)
	if n := beforeKill.failures + afterKill.failures; n > 0 {
		t.Fatalf("got %d failed requests across the kill -9 of Control, want 0; first: %s", n,
			strings.Join(append(beforeKill.examples, afterKill.examples...), "; "))
	}
	if afterKill.requests < 100 || beforeKill.requests < 100 {
		t.Fatalf("got %d requests before and %d after the kill, want at least 100 each for the test to mean something",
			beforeKill.requests, afterKill.requests)
	}

	// Phase 2: restart every node while Control stays down.
	nodes := faultNodeProcs(c)
	for _, p := range nodes {
		if _, err := os.Stat(filepath.Join(faultStateDir(t, p), "slice.json")); err != nil {
			t.Fatalf("%v: got %v, want the last slice kept on disk", p.args[:3], err)
		}
	}
	for _, p := range nodes {
		p.kill()
	}
	restarted := time.Now()
	for _, g := range c.gateways {
		g.start() // waits for /healthz
	}
	for _, ft := range faultTunnels {
		c.agents[ft.agent].start()
	}
	faultPoll(t, 20*time.Second, "every tunnel through every gateway after restarting all nodes with Control down",
		func() (bool, string) { return faultServesAll(c.gateways, faultTunnels) })
	served := time.Since(restarted) // from the first start, not from the last
	t.Logf("all nodes SIGKILLed and started with Control down: every tunnel served by every gateway %v after the first start",
		served.Round(time.Millisecond))
	if served > 10*time.Second {
		t.Errorf("got every tunnel served %v after the restarts, want within 10s", served.Round(time.Millisecond))
	}
	if _, err := http.Get(c.control.url() + "/readyz"); err == nil {
		t.Fatal("Control answered during phase 2; the tunnels were not served from disk alone")
	}

	// Phase 3: Control comes back.
	logBefore := len(c.control.logs())
	back := time.Now()
	c.control.start()
	var after faultFleet
	reconnected := faultPoll(t, 90*time.Second, "every node reconnected, heartbeating and probing after Control's restart", func() (bool, string) {
		f, err := faultReadFleet(c)
		if err != nil {
			return false, err.Error()
		}
		after = f
		return f.allFresh(c, back)
	})
	t.Logf("Control restarted: every node reconnected with fresh heartbeats and probes within %v", reconnected.Round(time.Millisecond))
	c.waitNodesReady(30 * time.Second)

	// Nothing duplicated: the same nodes, keys and addresses, each peer once.
	if len(after.gateways) != len(c.gateways) || len(after.agents) != len(c.agents) {
		t.Errorf("got %d gateways and %d agents after the restart, want %d and %d", len(after.gateways), len(after.agents), len(c.gateways), len(c.agents))
	}
	owners := map[string]string{}
	for _, n := range faultNodeNames(c) {
		was, is := before.address(n), after.address(n)
		if is != was {
			t.Errorf("%s: got overlay address %q after the restarts, want %q as before", n, is, was)
		}
		if other, dup := owners[is]; dup {
			t.Errorf("%s and %s: both got overlay address %s, want distinct addresses", other, n, is)
		}
		owners[is] = n
		if k, k0 := after.publicKey(n), before.publicKey(n); k != k0 {
			t.Errorf("%s: got public key %q after the restarts, want %q kept in its state dir", n, k, k0)
		}
	}
	var agentNames, gatewayNames []string
	for name := range c.agents {
		agentNames = append(agentNames, name)
	}
	for _, g := range c.gateways {
		gatewayNames = append(gatewayNames, g.name)
	}
	slices.Sort(agentNames)
	slices.Sort(gatewayNames)
	for name, g := range after.gateways {
		var peers []string
		for _, p := range g.Status.Agents {
			peers = append(peers, p.Name)
		}
		slices.Sort(peers)
		if !slices.Equal(peers, agentNames) {
			t.Errorf("gateway %s: got WireGuard peers %v, want each agent once: %v", name, peers, agentNames)
		}
	}
	for name, a := range after.agents {
		var peers []string
		for _, p := range a.Status.Gateways {
			peers = append(peers, p.Name)
		}
		slices.Sort(peers)
		if !slices.Equal(peers, gatewayNames) {
			t.Errorf("agent %s: got WireGuard peers %v, want each gateway once: %v", name, peers, gatewayNames)
		}
	}

	// Resumed, not started over: each node's first connection to the new
	// Control carries the revision it held.
	resumed := faultResumes(c.control.logs()[logBefore:])
	for _, n := range faultNodeNames(c) {
		name := n[strings.Index(n, "/")+1:]
		if rev, ok := resumed[name]; !ok || rev <= 0 {
			t.Errorf("%s: got first reconnection resuming from revision %d (logged: %v), want the revision it held (> 0)", n, rev, ok)
		}
	}

	// Nothing acknowledged is lost, and the bridge carries changes again.
	for name, tun := range before.tunnels {
		if got := after.tunnels[name]; got == nil || got.Metadata.UID != tun.Metadata.UID {
			t.Errorf("tunnel %s: got %v after the restart, want uid %s", name, got, tun.Metadata.UID)
		}
	}
	if got := after.tunnels["late"]; got == nil || got.Metadata.UID != lateUID {
		t.Fatalf("tunnel late, acknowledged just before the kill: got %v, want uid %s", got, lateUID)
	}
	code, out := c.api("PATCH", "/tunnels/late", `{"spec":{"enabled":true}}`)
	if code != http.StatusOK {
		t.Fatalf("enable tunnel late: got %d %s, want 200", code, out)
	}
	enabled := time.Now()
	late := faultTunnel{name: "late", host: "late.example.com", agent: "home", app: "app-a"}
	for _, g := range c.gateways {
		waitServing(t, gatewayClient(g.httpAddr, 2*time.Second), "http://"+late.host+"/", 200, late.want(), 5*time.Second)
	}
	t.Logf("tunnel acknowledged before the kill, enabled after the restart: served by every gateway %v later",
		time.Since(enabled).Round(time.Millisecond))
	if ok, seen := faultServesAll(c.gateways, faultTunnels); !ok {
		t.Fatalf("after Control's restart: %s, want every tunnel served", seen)
	}
}

// faultNodeNames lists every node as kind/name.
func faultNodeNames(c *cluster) []string {
	var out []string
	for _, g := range c.gateways {
		out = append(out, "Gateway/"+g.name)
	}
	for name := range c.agents {
		out = append(out, "Agent/"+name)
	}
	slices.Sort(out)
	return out
}

// faultNodeProcs lists every gateway and agent process.
func faultNodeProcs(c *cluster) []*controlProc {
	var out []*controlProc
	for _, g := range c.gateways {
		out = append(out, g.controlProc)
	}
	for _, ft := range faultTunnels {
		out = append(out, c.agents[ft.agent])
	}
	return out
}

func (f faultFleet) address(node string) string {
	kind, name, _ := strings.Cut(node, "/")
	if kind == "Gateway" {
		if g := f.gateways[name]; g != nil {
			return g.Status.OverlayAddress
		}
		return ""
	}
	if a := f.agents[name]; a != nil {
		return a.Status.OverlayAddress
	}
	return ""
}

func (f faultFleet) publicKey(node string) string {
	kind, name, _ := strings.Cut(node, "/")
	if kind == "Gateway" {
		if g := f.gateways[name]; g != nil {
			return g.Spec.PublicKey
		}
		return ""
	}
	if a := f.agents[name]; a != nil {
		return a.Spec.PublicKey
	}
	return ""
}

// allFresh reports whether every node of c is Connected with a heartbeat
// later than since, and every gateway's probe of every agent answers.
func (f faultFleet) allFresh(c *cluster, since time.Time) (bool, string) {
	for _, n := range faultNodeNames(c) {
		kind, name, _ := strings.Cut(n, "/")
		var st *api.CommonStatus
		var ns api.NodeStatus
		if kind == "Gateway" {
			g := f.gateways[name]
			if g == nil {
				return false, n + " missing"
			}
			st, ns = &g.Status.CommonStatus, g.Status.NodeStatus
			for agent := range c.agents {
				if p := faultProbe(g, agent); p != "ok" {
					return false, fmt.Sprintf("%s probe of %s %q", n, agent, p)
				}
			}
		} else {
			a := f.agents[name]
			if a == nil {
				return false, n + " missing"
			}
			st, ns = &a.Status.CommonStatus, a.Status.NodeStatus
		}
		if ns.LastHeartbeat == nil || ns.LastHeartbeat.Before(since) {
			return false, fmt.Sprintf("%s last heartbeat %v, before Control's restart at %v", n, ns.LastHeartbeat, since.Format(time.TimeOnly))
		}
		if s := faultCondition(st.Conditions, api.NodeConnected); s != api.ConditionTrue {
			return false, fmt.Sprintf("%s Connected=%s", n, s)
		}
	}
	return true, ""
}

// faultResumes reads Control's log for the revision each node's first
// connection resumed from.
func faultResumes(log string) map[string]int64 {
	re := regexp.MustCompile(`msg="node connected"[^\n]* name=(\S+)[^\n]* resume=(-?\d+)`)
	out := map[string]int64{}
	for _, m := range re.FindAllStringSubmatch(log, -1) {
		if _, seen := out[m[1]]; seen {
			continue
		}
		rev, _ := strconv.ParseInt(m[2], 10, 64)
		out[m[1]] = rev
	}
	return out
}

// faultCreateTunnel creates a tunnel and returns the uid the API
// acknowledged it with.
func faultCreateTunnel(t *testing.T, c *cluster, name, host, agent, target string, enabled bool) string {
	t.Helper()
	body := fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":%q},"spec":{"hostname":%q,"agent":%q,"target":%q,"enabled":%t}}`,
		name, host, agent, target, enabled)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	code, out, err := request(ctx, "POST", c.control.url()+prefix+"/tunnels", c.token, body)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("create tunnel %s: got %d %v %s, want 201", name, code, err, out)
	}
	var tun api.Tunnel
	decodeJSON(t, out, &tun)
	return tun.Metadata.UID
}
