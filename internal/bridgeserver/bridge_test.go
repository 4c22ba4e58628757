package bridgeserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/control"
	"github.com/kakuremichi/kakuremichi/internal/nodeclient"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// ctlPlane is Control run in-process on a real embedded etcd, restartable
// on the same data directory and address.
type ctlPlane struct {
	t      *testing.T
	dir    string
	addr   string
	cancel context.CancelFunc
	done   chan error
	// lease is Control's --node-lease; zero, its default.
	lease time.Duration
}

func startControl(t *testing.T) *ctlPlane { return startControlLease(t, 0) }

// startControlLease is startControl with Control's node lease.
func startControlLease(t *testing.T, lease time.Duration) *ctlPlane {
	c := &ctlPlane{t: t, dir: t.TempDir(), lease: lease}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	c.run(ln)
	t.Cleanup(c.stop)
	return c
}

func (c *ctlPlane) run(ln net.Listener) {
	c.t.Helper()
	if ln == nil {
		var err error
		for i := 0; i < 50; i++ {
			if ln, err = net.Listen("tcp", c.addr); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			c.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		c.done <- control.Run(ctx, control.Config{DataDir: c.dir, Listener: ln, NodeLease: c.lease, Ready: func(net.Addr) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-c.done:
		c.t.Fatalf("control exited: %v", err)
	}
}

func (c *ctlPlane) stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	if err := <-c.done; err != nil {
		c.t.Errorf("control: %v", err)
	}
	c.cancel = nil
}

func (c *ctlPlane) restart() { c.stop(); c.run(nil) }

func (c *ctlPlane) url() string { return "http://" + c.addr }

func (c *ctlPlane) admin() string {
	data, err := os.ReadFile(filepath.Join(c.dir, control.BootstrapTokenFile))
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func (c *ctlPlane) call(method, path, body string) (int, []byte) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.url()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.admin())
	req.Header.Set("Content-Type", "application/json")
	if method == http.MethodPatch {
		req.Header.Set("Content-Type", "application/merge-patch+json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

const apiBase = "/apis/kakuremichi.io/v1alpha1"

func (c *ctlPlane) apiKey(name string, role api.Role, maxUses int) string {
	c.t.Helper()
	code, out := c.call("POST", apiBase+"/apikeys", fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"APIKey","metadata":{"name":%q},"spec":{"role":%q,"maxUses":%d}}`, name, role, maxUses))
	if code != 201 {
		c.t.Fatalf("create apikey: %d %s", code, out)
	}
	var k api.APIKey
	json.Unmarshal(out, &k)
	return k.Status.Secret
}

// node is a nodeclient whose Apply records slices.
type node struct {
	client *nodeclient.Client
	mu     sync.Mutex
	slices []bridge.Slice
	cancel context.CancelFunc
	done   chan error
}

func (n *node) last() (bridge.Slice, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.slices) == 0 {
		return nil, 0
	}
	return n.slices[len(n.slices)-1], len(n.slices)
}

func newNode(t *testing.T, controlURL, kind, name, key, stateDir string) *node {
	t.Helper()
	return newNodeWithStatus(t, controlURL, kind, name, key, stateDir, func() bridge.NodeStatus {
		return bridge.NodeStatus{Targets: []bridge.TargetStatus{{Tunnel: "web", Reachable: true, CheckedAt: time.Now()}}}
	})
}

// newNodeWithStatus is newNode whose heartbeats carry status().
func newNodeWithStatus(t *testing.T, controlURL, kind, name, key, stateDir string, status func() bridge.NodeStatus) *node {
	t.Helper()
	pk, err := nodeclient.LoadOrCreateKey(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{}
	c, err := nodeclient.New(nodeclient.Config{ControlURL: controlURL, APIKey: key, Kind: kind, Name: name,
		PublicKey: pk.PublicKey(), PublicEndpoint: "127.0.0.1:51820", StateDir: stateDir, Version: "test",
		HeartbeatInterval: 100 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Apply: func(s bridge.Slice) error {
			n.mu.Lock()
			n.slices = append(n.slices, s)
			n.mu.Unlock()
			return nil
		},
		Status: status})
	if err != nil {
		t.Fatal(err)
	}
	n.client = c
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan error, 1)
	go func() { n.done <- c.Run(ctx) }()
	t.Cleanup(n.stop)
	return n
}

func (n *node) stop() {
	if n.cancel != nil {
		n.cancel()
		<-n.done
		n.cancel = nil
	}
}

func eventually(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const tunnelBody = `{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":%q},"spec":{"hostname":%q,"agent":%q,"target":"http://localhost:8080"}}`

func TestEnrolmentAndSlices(t *testing.T) {
	c := startControl(t)
	agentKey := c.apiKey("agents", api.RoleAgent, 0)
	gwKey := c.apiKey("gws", api.RoleGateway, 1)
	if code, out := c.call("POST", apiBase+"/tunnels", fmt.Sprintf(tunnelBody, "web", "fuga.sample.com", "home")); code != 201 {
		t.Fatalf("create tunnel: %d %s", code, out)
	}
	if code, out := c.call("POST", apiBase+"/tunnels", fmt.Sprintf(tunnelBody, "other", "other.example.com", "office")); code != 201 {
		t.Fatalf("create tunnel: %d %s", code, out)
	}
	home := newNode(t, c.url(), "Agent", "home", agentKey, t.TempDir())
	gw := newNode(t, c.url(), "Gateway", "gw1", gwKey, t.TempDir())
	eventually(t, "agent gets its forward", 10*time.Second, func() bool {
		s, _ := home.last()
		_, ok := s["forward/web"]
		return ok
	})
	s, _ := home.last()
	if _, leaked := s["forward/other"]; leaked {
		t.Fatalf("agent home got office's forward: %v", s)
	}
	if s["self"].Self == nil || s["self"].Self.Name != "home" {
		t.Fatalf("got self %+v, want home", s["self"].Self)
	}
	eventually(t, "gateway gets the routes", 10*time.Second, func() bool {
		s, _ := gw.last()
		_, a := s["route/fuga.sample.com"]
		_, b := s["route/other.example.com"]
		return a && b
	})
	// A tunnel change reaches the agent as a delta.
	if code, out := c.call("PATCH", apiBase+"/tunnels/web", `{"spec":{"enabled":false}}`); code != 200 {
		t.Fatalf("disable: %d %s", code, out)
	}
	eventually(t, "agent sees the tunnel disabled", 10*time.Second, func() bool {
		s, _ := home.last()
		f := s["forward/web"].Forward
		return f != nil && !f.Enabled
	})
	// Heartbeats reach the agent's status.
	eventually(t, "agent status shows a heartbeat", 10*time.Second, func() bool {
		code, out := c.call("GET", apiBase+"/agents/home", "")
		var a api.Agent
		json.Unmarshal(out, &a)
		return code == 200 && a.Status.LastHeartbeat != nil && api.IsConditionTrue(a.Status.Conditions, api.NodeConnected) &&
			len(a.Status.Targets) == 1 && a.Status.Version == "test"
	})
}

func TestRegistrationIsRefusedWithoutTheRightKey(t *testing.T) {
	c := startControl(t)
	agentKey := c.apiKey("once", api.RoleAgent, 1)
	pk, _ := wgnet.GeneratePrivateKey()
	reg := func(key, kind, name string) int {
		body := fmt.Sprintf(`{"kind":%q,"name":%q,"publicKey":%q}`, kind, name, pk.PublicKey().String())
		req, _ := http.NewRequest("POST", c.url()+bridge.RegisterPath, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		name, key, kind, node string
		want                  int
	}{
		{"no key", "", "Agent", "a", 401},
		{"admin token is not an API key", c.admin(), "Agent", "a", 401},
		{"garbage", "kka_once.wrong", "Agent", "a", 401},
		{"agent key for a gateway", agentKey, "Gateway", "g", 403},
		{"bad name", agentKey, "Agent", "Bad_Name", 422},
		{"first use", agentKey, "Agent", "a", 200},
		{"single-use key used again", agentKey, "Agent", "b", 403},
	}
	for _, tt := range tests {
		if got := reg(tt.key, tt.kind, tt.node); got != tt.want {
			t.Errorf("%s: got %d, want %d", tt.name, got, tt.want)
		}
	}
	// The watch endpoint takes node credentials only.
	req, _ := http.NewRequest("GET", c.url()+bridge.WatchPath, nil)
	req.Header.Set("Authorization", "Bearer "+c.admin())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("watch with an admin token: got %d, want 403", resp.StatusCode)
	}
	req.Header.Del("Authorization")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("watch without a token: got %d, want 401", resp.StatusCode)
	}
}

// TestRevokedCredentialIsCutOff holds quality.md 15: a revoked
// credential's watch is closed within 5 s.
func TestRevokedCredentialIsCutOff(t *testing.T) {
	c := startControl(t)
	key := c.apiKey("k", api.RoleAgent, 1)
	n := newNode(t, c.url(), "Agent", "home", key, t.TempDir())
	eventually(t, "connected", 10*time.Second, n.client.Connected)
	code, out := c.call("GET", apiBase+"/tokens", "")
	var list api.List
	json.Unmarshal(out, &list)
	var nodeTok string
	for _, raw := range list.Items {
		var tok api.Token
		json.Unmarshal(raw, &tok)
		if tok.Spec.Node == "home" {
			nodeTok = tok.Metadata.Name
		}
	}
	if code != 200 || nodeTok == "" {
		t.Fatalf("got no node credential in %s", out)
	}
	start := time.Now()
	if code, out := c.call("DELETE", apiBase+"/tokens/"+nodeTok, ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, out)
	}
	eventually(t, "the revoked node's connection closed", 5*time.Second, func() bool { return !n.client.Connected() })
	t.Logf("closed %v after revocation", time.Since(start).Round(time.Millisecond))
	// The single-use key is spent, so the node cannot come back.
	time.Sleep(500 * time.Millisecond)
	if n.client.Connected() {
		t.Fatal("the node reconnected with a revoked credential")
	}
}

// TestResumeAfterControlRestart holds quality.md 3 for the bridge: a node
// resumes from what it holds and gets UpToDate, not a new snapshot, and a
// node restarted while Control is down serves from its saved slice.
func TestResumeAfterControlRestart(t *testing.T) {
	c := startControl(t)
	key := c.apiKey("k", api.RoleAgent, 0)
	c.call("POST", apiBase+"/tunnels", fmt.Sprintf(tunnelBody, "web", "fuga.sample.com", "home"))
	state := t.TempDir()
	n := newNode(t, c.url(), "Agent", "home", key, state)
	eventually(t, "first slice", 10*time.Second, func() bool { s, _ := n.last(); return s["forward/web"].Forward != nil })
	// Let the status writes settle so the slice no longer moves.
	time.Sleep(300 * time.Millisecond)
	_, applied := n.last()
	c.restart()
	eventually(t, "reconnected", 15*time.Second, n.client.Connected)
	time.Sleep(300 * time.Millisecond)
	if _, after := n.last(); after != applied {
		t.Errorf("got %d slice applications after a Control restart, want none (UpToDate)", after-applied)
	}
	// Control down; the node restarts and serves its saved slice at once.
	n.stop()
	c.stop()
	m := newNode(t, c.url(), "Agent", "home", key, state)
	eventually(t, "saved slice applied with Control down", 2*time.Second, func() bool {
		s, _ := m.last()
		return s["forward/web"].Forward != nil
	})
	fi, err := os.Stat(filepath.Join(state, "slice.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("slice file: mode %v err %v, want 0600", fi.Mode().Perm(), err)
	}
	for _, f := range []string{"credential", "wireguard.key"} {
		if fi, err := os.Stat(filepath.Join(state, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: got mode %v err %v, want 0600", f, fi.Mode().Perm(), err)
		}
	}
	c.run(nil)
	eventually(t, "reconnected after Control came back", 15*time.Second, m.client.Connected)
}

// TestConcurrentRegistrationsCountEveryUse registers many nodes at once
// with one unlimited key and with one key of a few uses: every
// registration with the first succeeds and is counted, and the second
// admits exactly its limit.
func TestConcurrentRegistrationsCountEveryUse(t *testing.T) {
	c := startControl(t)
	const n = 40
	unlimited := c.apiKey("fleet", api.RoleAgent, 0)
	limited := c.apiKey("few", api.RoleAgent, 5)
	pk, _ := wgnet.GeneratePrivateKey()
	reg := func(key, name string) int {
		body := fmt.Sprintf(`{"kind":"Agent","name":%q,"publicKey":%q}`, name, pk.PublicKey().String())
		req, _ := http.NewRequest("POST", c.url()+bridge.RegisterPath, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var mu sync.Mutex
	codes := map[string]map[int]int{"fleet": {}, "few": {}}
	var wg sync.WaitGroup
	for i := range n {
		for key, secret := range map[string]string{"fleet": unlimited, "few": limited} {
			wg.Go(func() {
				code := reg(secret, fmt.Sprintf("%s-%d", key, i))
				mu.Lock()
				codes[key][code]++
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if codes["fleet"][200] != n {
		t.Errorf("unlimited key: answers %v, want %d × 200", codes["fleet"], n)
	}
	if codes["few"][200] != 5 || codes["few"][403] != n-5 {
		t.Errorf("key of 5 uses: answers %v, want 5 × 200 and %d × 403", codes["few"], n-5)
	}
	for name, want := range map[string]int64{"fleet": n, "few": 5} {
		code, out := c.call("GET", apiBase+"/apikeys/"+name, "")
		var k api.APIKey
		if code != 200 || json.Unmarshal(out, &k) != nil {
			t.Fatalf("get apikey %s: %d %s", name, code, out)
		}
		if k.Status.Uses != want {
			t.Errorf("apikey %s: %d uses counted, want %d", name, k.Status.Uses, want)
		}
	}
}

// TestLargeGatewayStatusIsRecorded checks that the heartbeat of a gateway
// with as many agents as a large fleet has is recorded: listed in full,
// its status would pass the store's limit on one object, and the gateway
// would look offline for want of a recorded heartbeat. The status counts
// the agents and lists, by name, all 1,715 whose probe failed, each in a
// few dozen bytes.
func TestLargeGatewayStatusIsRecorded(t *testing.T) {
	c := startControl(t)
	gwKey := c.apiKey("gws", api.RoleGateway, 1)
	const agents = 12000
	hs := time.Now()
	var peers []bridge.PeerStatus
	var probes []bridge.ProbeStatus
	for i := range agents {
		name := fmt.Sprintf("agent-%05d", i)
		peers = append(peers, bridge.PeerStatus{Name: name, Endpoint: fmt.Sprintf("203.0.113.%d:%d", i%250, 40000+i), LastHandshake: hs})
		probes = append(probes, bridge.ProbeStatus{Agent: name, OK: i%7 != 0, Message: "dial: i/o timeout"})
	}
	long := strings.Repeat("a long reason ", 10)
	probes[7].Message = long
	newNodeWithStatus(t, c.url(), "Gateway", "big", gwKey, t.TempDir(), func() bridge.NodeStatus {
		return bridge.NodeStatus{Peers: peers, Probes: probes}
	})
	var gw api.Gateway
	eventually(t, "the big gateway's heartbeat recorded", 20*time.Second, func() bool {
		code, out := c.call("GET", apiBase+"/gateways/big", "")
		gw = api.Gateway{}
		json.Unmarshal(out, &gw)
		return code == 200 && gw.Status.LastHeartbeat != nil && gw.Status.Peers != nil
	})
	failed := (agents + 6) / 7
	want := api.PeerCounts{Total: agents, Connected: agents, Answered: agents - failed}
	if *gw.Status.Peers != want {
		t.Fatalf("counts %+v, want %+v", *gw.Status.Peers, want)
	}
	if len(gw.Status.Agents) != failed {
		t.Fatalf("%d agents listed, want the %d whose probe failed", len(gw.Status.Agents), failed)
	}
	for j, p := range gw.Status.Agents {
		i := 7 * j
		want := "failed: dial: i/o timeout"
		if i == 7 {
			want = "failed: " + long[:32] + "…" // cut, in a list this long
		}
		if p.Name != fmt.Sprintf("agent-%05d", i) || p.Probe != want {
			t.Fatalf("agents[%d]: %+v, want agent-%05d with probe %q", j, p, i, want)
		}
	}
}

// TestVolatileHeartbeatsAreNotRewritten: a gateway whose heartbeats, ten
// a second, differ only in probe and handshake times has its status
// written once, not once per heartbeat; a probe that fails is written at
// once.
func TestVolatileHeartbeatsAreNotRewritten(t *testing.T) {
	// A 2 s lease: the bridge renews it at most every 400 ms.
	c := startControlLease(t, 2*time.Second)
	gwKey := c.apiKey("gws", api.RoleGateway, 1)
	var failing atomic.Bool
	newNodeWithStatus(t, c.url(), "Gateway", "gw", gwKey, t.TempDir(), func() bridge.NodeStatus {
		now := time.Now()
		st := bridge.NodeStatus{Peers: []bridge.PeerStatus{{Name: "ag", Endpoint: "192.0.2.1:40000", LastHandshake: now, RxBytes: now.UnixNano()}},
			Probes: []bridge.ProbeStatus{{Agent: "ag", OK: true, LatencyMS: float64(now.Nanosecond()), CheckedAt: now}}}
		if failing.Load() {
			st.Probes[0] = bridge.ProbeStatus{Agent: "ag", Message: "dial: i/o timeout", CheckedAt: now}
		}
		return st
	})
	get := func() (api.Gateway, bool) {
		code, out := c.call("GET", apiBase+"/gateways/gw", "")
		var gw api.Gateway
		return gw, code == 200 && json.Unmarshal(out, &gw) == nil
	}
	must := func() api.Gateway {
		gw, ok := get()
		if !ok {
			t.Fatal("get gateway gw: failed")
		}
		return gw
	}
	eventually(t, "the gateway's first heartbeat recorded", 10*time.Second, func() bool {
		gw, ok := get()
		return ok && gw.Status.LastHeartbeat != nil && len(gw.Status.Agents) == 1
	})
	// The gateway's slice settles (its revision is news, and written).
	f := must()
	for deadline := time.Now().Add(10 * time.Second); ; f = must() {
		time.Sleep(time.Second)
		if g := must(); g.Status.Revision == f.Status.Revision {
			f = g
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway's revision still changes after 10 s")
		}
	}
	first := f.Metadata.ResourceVersion
	time.Sleep(2 * time.Second) // some twenty heartbeats, over two seconds of timestamps
	got := must()
	if got.Metadata.ResourceVersion != first {
		a, _ := json.Marshal(f.Status)
		b, _ := json.Marshal(got.Status)
		t.Fatalf("heartbeats that changed only timestamps were written: resourceVersion %s, then %s\n%s\n%s", first, got.Metadata.ResourceVersion, a, b)
	}
	// They renewed the lease, which a read shows as lastHeartbeat, and
	// which keeps the gateway connected past the status's own.
	if got.Status.LastHeartbeat == nil || got.Status.LastHeartbeat.Sub(*f.Status.LastHeartbeat) < time.Second {
		t.Fatalf("lastHeartbeat after 2 s of renewals: %v, was %v; want it a second later at least", got.Status.LastHeartbeat, f.Status.LastHeartbeat)
	}
	if c := api.FindCondition(got.Status.Conditions, api.NodeConnected); c == nil || c.Status != api.ConditionTrue {
		t.Fatalf("Connected after 2 s of lease renewals under a 2 s lease: %+v, want True", c)
	}
	failing.Store(true)
	eventually(t, "the failed probe recorded", 5*time.Second, func() bool {
		a := must().Status.Agents
		return len(a) == 1 && a[0].Probe == "failed: dial: i/o timeout"
	})
}
