package ctl

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// fleetNow is the clock of the node tests: every age below is measured
// from it, so the golden output does not depend on when the test runs.
var fleetNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func before(d time.Duration) *time.Time {
	t := fleetNow.Add(-d)
	return &t
}

func cond(typ string, status api.ConditionStatus, reason, message string, ago time.Duration) api.Condition {
	return api.Condition{Type: typ, Status: status, Reason: reason, Message: message, LastTransitionTime: *before(ago)}
}

const (
	homeKey  = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	tokyoKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
)

// nodeFleet is a fleet seen at fleetNow: agent home online with one of
// its three gateways handshaking recently and one of two targets
// reachable; agent laptop disabled and long gone; agent fresh never
// connected; gateway tokyo probing all three; gateway osaka registered
// nowhere yet; tunnel web served by tokyo only.
func nodeFleet() []api.Object {
	home := &api.Agent{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Agent"},
		Metadata: api.ObjectMeta{Name: "home", Generation: 1, CreationTimestamp: *before(3 * 24 * time.Hour)},
		Spec:     api.AgentSpec{Enabled: ptr(true), PublicKey: homeKey},
		Status: api.AgentStatus{
			CommonStatus: api.CommonStatus{ObservedGeneration: 1, Conditions: []api.Condition{
				cond(api.NodeConnected, api.ConditionTrue, api.ReasonHeartbeat, "heartbeats arrive", 2*time.Hour),
				cond(api.NodeDataPath, api.ConditionTrue, api.ReasonProbeSucceeded, "probes from gateways tokyo reach the agent through WireGuard", time.Hour),
				cond(api.ConditionReady, api.ConditionTrue, api.ReasonReady, "", time.Hour),
			}},
			NodeStatus: api.NodeStatus{OverlayAddress: "100.64.0.2", Version: "v0.3.1", LastHeartbeat: before(4 * time.Second), Revision: 42},
			Gateways: []api.NodePeerStatus{
				{Name: "tokyo", Endpoint: "203.0.113.7:51820", LastHandshake: before(50 * time.Second)},
				{Name: "osaka", Endpoint: "198.51.100.9:51820", LastHandshake: before(10 * time.Minute)},
				{Name: "frankfurt"},
			},
			Targets: []api.TargetStatus{
				{Tunnel: "web", Reachable: true},
				{Tunnel: "db", Reachable: false, Message: "dial tcp 10.0.0.5:5432: connect: connection refused"},
			},
		}}
	laptop := &api.Agent{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Agent"},
		Metadata: api.ObjectMeta{Name: "laptop", Generation: 2, CreationTimestamp: *before(40 * 24 * time.Hour)},
		Spec:     api.AgentSpec{Enabled: ptr(false)},
		Status: api.AgentStatus{
			CommonStatus: api.CommonStatus{ObservedGeneration: 2, Conditions: []api.Condition{
				cond(api.NodeConnected, api.ConditionFalse, api.ReasonHeartbeatExpired, "no heartbeat for 2h", 2*time.Hour),
				cond(api.ConditionReady, api.ConditionFalse, api.ReasonDisabled, "spec.enabled is false", 2*time.Hour),
			}},
			NodeStatus: api.NodeStatus{OverlayAddress: "100.64.0.3", Version: "v0.2.0", LastHeartbeat: before(2*time.Hour + 5*time.Minute), Revision: 7},
		}}
	fresh := &api.Agent{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Agent"},
		Metadata: api.ObjectMeta{Name: "fresh", CreationTimestamp: *before(20 * time.Second)},
		Spec:     api.AgentSpec{Enabled: ptr(true)}}
	tokyo := &api.Gateway{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Gateway"},
		Metadata: api.ObjectMeta{Name: "tokyo", Generation: 1, CreationTimestamp: *before(4 * 24 * time.Hour)},
		Spec:     api.GatewaySpec{Enabled: ptr(true), PublicEndpoint: "203.0.113.7:51820", PublicKey: tokyoKey},
		Status: api.GatewayStatus{
			CommonStatus: api.CommonStatus{ObservedGeneration: 1, Conditions: []api.Condition{
				cond(api.ConditionReady, api.ConditionTrue, api.ReasonReady, "", 3*24*time.Hour),
			}},
			NodeStatus: api.NodeStatus{OverlayAddress: "100.64.0.1", Version: "v0.3.1", DataPath: "tun", LastHeartbeat: before(2 * time.Second), Revision: 42},
			Agents: []api.NodePeerStatus{
				{Name: "laptop", Endpoint: "192.0.2.44:1024", LastHandshake: before(2 * time.Hour), Probe: "dial tcp 100.64.0.3:1: i/o timeout"},
				{Name: "home", Endpoint: "192.0.2.10:41641", LastHandshake: before(50 * time.Second), Probe: "ok"},
				{Name: "fresh"},
			},
			Routes: 3,
		}}
	osaka := &api.Gateway{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Gateway"},
		Metadata: api.ObjectMeta{Name: "osaka", CreationTimestamp: *before(90 * time.Minute)},
		Spec:     api.GatewaySpec{Enabled: ptr(true)},
		Status: api.GatewayStatus{CommonStatus: api.CommonStatus{Conditions: []api.Condition{
			cond(api.ConditionReady, api.ConditionUnknown, api.ReasonNeverConnected, "the gateway has not connected yet", 90*time.Minute),
		}}}}
	web := seedTunnel("web", *before(2 * time.Hour), nil,
		cond(api.ConditionReady, api.ConditionTrue, api.ReasonReady, "", time.Hour))
	web.Status.Gateways = []api.TunnelGatewayStatus{
		{Name: "tokyo", Serving: true},
		{Name: "osaka", Serving: false, Reason: "GatewayOffline"},
	}
	db := seedTunnel("db", *before(26 * time.Hour), nil,
		cond(api.ConditionReady, api.ConditionFalse, api.ReasonTargetUnreachable, "the agent cannot reach tcp://10.0.0.5:5432", 5*time.Minute))
	db.Spec.Target = "tcp://10.0.0.5:5432"
	db.Spec.PublicPort = 15432
	return []api.Object{home, laptop, fresh, tokyo, osaka, web, db}
}

// summedUpFleet are nodes of more than api.ListedPeers peers, seen at
// fleetNow beside nodeFleet: their statuses sum their peers up and list
// only those in trouble. Gateway hub, of 10,000 agents, lists all three
// in trouble: fresh and laptop not connected, home not answering its
// probe yet. Gateway relay, of 2,400, lists the two in trouble.
// Agent mesh, of 1,000 gateways, lists the three it is not connected to.
func summedUpFleet() []api.Object {
	hub := &api.Gateway{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Gateway"},
		Metadata: api.ObjectMeta{Name: "hub", Generation: 1, CreationTimestamp: *before(10 * 24 * time.Hour)},
		Spec:     api.GatewaySpec{Enabled: ptr(true), PublicEndpoint: "203.0.113.1:51820", PublicKey: tokyoKey},
		Status: api.GatewayStatus{
			CommonStatus: api.CommonStatus{ObservedGeneration: 1, Conditions: []api.Condition{
				cond(api.ConditionReady, api.ConditionTrue, api.ReasonReady, "", 9*24*time.Hour),
			}},
			NodeStatus: api.NodeStatus{OverlayAddress: "100.64.0.4", Version: "v0.3.1", DataPath: "netstack", LastHeartbeat: before(time.Second), Revision: 42,
				Peers: &api.PeerCounts{Total: 10000, Connected: 9998, Answered: 9997}},
			Agents: []api.NodePeerStatus{
				{Name: "fresh"},
				{Name: "home", Connected: true},
				{Name: "laptop", Probe: "failed: i/o timeout"},
			},
			Routes: 12000,
		}}
	relay := &api.Gateway{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Gateway"},
		Metadata: api.ObjectMeta{Name: "relay", Generation: 1, CreationTimestamp: *before(10 * 24 * time.Hour)},
		Spec:     api.GatewaySpec{Enabled: ptr(true), PublicEndpoint: "203.0.113.2:51820"},
		Status: api.GatewayStatus{
			CommonStatus: api.CommonStatus{ObservedGeneration: 1, Conditions: []api.Condition{
				cond(api.ConditionReady, api.ConditionTrue, api.ReasonReady, "", 9*24*time.Hour),
			}},
			NodeStatus: api.NodeStatus{OverlayAddress: "100.64.0.5", Version: "v0.3.1", DataPath: "tun", LastHeartbeat: before(3 * time.Second), Revision: 42,
				Peers: &api.PeerCounts{Total: 2400, Connected: 2399, Answered: 2398}},
			Agents: []api.NodePeerStatus{
				{Name: "a0001"},
				{Name: "a0002", Connected: true, Probe: "failed: connection refused"},
			},
			Routes: 2400,
		}}
	mesh := &api.Agent{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Agent"},
		Metadata: api.ObjectMeta{Name: "mesh", Generation: 1, CreationTimestamp: *before(5 * 24 * time.Hour)},
		Spec:     api.AgentSpec{Enabled: ptr(true), PublicKey: homeKey},
		Status: api.AgentStatus{
			CommonStatus: api.CommonStatus{ObservedGeneration: 1, Conditions: []api.Condition{
				cond(api.NodeConnected, api.ConditionTrue, api.ReasonHeartbeat, "heartbeats arrive", 5*time.Hour),
				cond(api.ConditionReady, api.ConditionTrue, api.ReasonReady, "", 5*time.Hour),
			}},
			NodeStatus: api.NodeStatus{OverlayAddress: "100.64.0.9", Version: "v0.3.1", LastHeartbeat: before(2 * time.Second), Revision: 42,
				Peers: &api.PeerCounts{Total: 1000, Connected: 997}},
			Gateways: []api.NodePeerStatus{
				{Name: "hub", Endpoint: "203.0.113.1:51820"},
				{Name: "relay"},
				{Name: "tokyo"},
			},
			Targets: []api.TargetStatus{{Tunnel: "web", Reachable: true}},
		}}
	return []api.Object{hub, relay, mesh}
}

// runAt runs kakuremichictl against server with a viewer token, its clock
// stopped at fleetNow.
func runAt(t *testing.T, server string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	c := &cli{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut,
		now: func() time.Time { return fleetNow }, lookupEnv: os.LookupEnv}
	code := c.main(ctx, append([]string{"--server", server, "--token", viewerToken}, args...))
	return result{out.String(), errOut.String(), code}
}

func TestGetNodes(t *testing.T) {
	e := newTestEnv(t)
	e.srv.Seed(nodeFleet()...)
	tests := []outputCase{
		{"agents", []string{"get", "agents"},
			"NAME     ADDRESS      VERSION   CONNECTED   READY              LAST-SEEN   AGE\n" +
				"fresh    <none>       <none>    Unknown     Unknown            never       20s\n" +
				"home     100.64.0.2   v0.3.1    True        True               4s ago      3d\n" +
				"laptop   100.64.0.3   v0.2.0    False       False (Disabled)   2h ago      40d\n"},
		{"agents wide", []string{"get", "agents", "-o", "wide"},
			"NAME     ADDRESS      VERSION   CONNECTED   READY              LAST-SEEN   AGE   GATEWAYS   TARGETS   PUBLIC KEY                                     MESSAGE                 LABELS\n" +
				"fresh    <none>       <none>    Unknown     Unknown            never       20s   0/0        0/0       <none>                                         <none>                  <none>\n" +
				"home     100.64.0.2   v0.3.1    True        True               4s ago      3d    1/3        1/2       " + homeKey + "   <none>                  <none>\n" +
				"laptop   100.64.0.3   v0.2.0    False       False (Disabled)   2h ago      40d   0/0        0/0       <none>                                         spec.enabled is false   <none>\n"},
		{"gateways", []string{"get", "gateways"},
			"NAME    ENDPOINT            ADDRESS      VERSION   READY                      LAST-SEEN   AGE\n" +
				"osaka   <none>              <none>       <none>    Unknown (NeverConnected)   never       1h\n" +
				"tokyo   203.0.113.7:51820   100.64.0.1   v0.3.1    True                       2s ago      4d\n"},
		{"gateways wide", []string{"get", "gateways", "-o", "wide"},
			"NAME    ENDPOINT            ADDRESS      VERSION   READY                      LAST-SEEN   AGE   AGENTS   ROUTES   DATA-PATH   PUBLIC KEY                                     MESSAGE                             LABELS\n" +
				"osaka   <none>              <none>       <none>    Unknown (NeverConnected)   never       1h    0/0      0        <none>      <none>                                         the gateway has not connected yet   <none>\n" +
				"tokyo   203.0.113.7:51820   100.64.0.1   v0.3.1    True                       2s ago      4d    1/3      3        tun         " + tokyoKey + "   <none>                              <none>\n"},
		{"tunnels wide", []string{"get", "tunnels", "-o", "wide"},
			"NAME   HOSTNAME               TARGET                  AGENT   READY                       AGE   GATEWAYS   ENABLED   REASON              MESSAGE                                      LABELS\n" +
				"db     db.example.com:15432   tcp://10.0.0.5:5432     home    False (TargetUnreachable)   1d    0/0        true      TargetUnreachable   the agent cannot reach tcp://10.0.0.5:5432   <none>\n" +
				"web    web.example.com        http://localhost:8080   home    True                        2h    1/2        true      Ready               <none>                                       <none>\n"},
		{"tunnels keep their columns", []string{"get", "tunnels"},
			"NAME   HOSTNAME               TARGET                  AGENT   READY                       AGE\n" +
				"db     db.example.com:15432   tcp://10.0.0.5:5432     home    False (TargetUnreachable)   1d\n" +
				"web    web.example.com        http://localhost:8080   home    True                        2h\n"},
		{"one agent by name", []string{"get", "agent", "fresh"},
			"NAME    ADDRESS   VERSION   CONNECTED   READY     LAST-SEEN   AGE\n" +
				"fresh   <none>    <none>    Unknown     Unknown   never       20s\n"},
	}
	checkOutputs(t, e.srv.URL, tests)
}

func TestDescribeNodes(t *testing.T) {
	e := newTestEnv(t)
	e.srv.Seed(nodeFleet()...)
	tests := []outputCase{
		{"agent", []string{"describe", "agent", "home"}, `Name:            home
Kind:            Agent
Labels:          <none>
Annotations:     <none>
Created:         2025-05-29T12:00:00Z (3d ago)
Generation:      1 (observed 1)
Address:         100.64.0.2
Version:         v0.3.1
Last heartbeat:  2025-06-01T11:59:56Z (4s ago)
Revision:        42
Ready:           True
Spec:
  enabled: true
  publicKey: ` + homeKey + `
Peers:
  NAME       ENDPOINT            LAST-HANDSHAKE  PROBE
  frankfurt  <none>              never           <none>
  osaka      198.51.100.9:51820  10m ago         <none>
  tokyo      203.0.113.7:51820   50s ago         ok
Targets:
  TUNNEL  REACHABLE  MESSAGE
  db      false      dial tcp 10.0.0.5:5432: connect: connection refused
  web     true
Conditions:
  TYPE           STATUS  REASON             AGE  MESSAGE
  Connected      True    HeartbeatReceived  2h   heartbeats arrive
  DataPathReady  True    ProbeSucceeded     1h   probes from gateways tokyo reach the agent through WireGuard
  Ready          True    Ready              1h
`},
		{"agent never connected", []string{"describe", "agent", "fresh"}, `Name:            fresh
Kind:            Agent
Labels:          <none>
Annotations:     <none>
Created:         2025-06-01T11:59:40Z (20s ago)
Generation:      1 (not observed by Control yet)
Address:         <none>
Version:         <none>
Last heartbeat:  never
Revision:        none reported
Spec:
  enabled: true
Peers:  <none>
Targets:  <none>
Conditions:  <none>
`},
		{"gateway", []string{"describe", "gateway", "tokyo"}, `Name:            tokyo
Kind:            Gateway
Labels:          <none>
Annotations:     <none>
Created:         2025-05-28T12:00:00Z (4d ago)
Generation:      1 (observed 1)
Address:         100.64.0.1
Version:         v0.3.1
Last heartbeat:  2025-06-01T11:59:58Z (2s ago)
Revision:        42
Ready:           True
Spec:
  enabled: true
  publicEndpoint: 203.0.113.7:51820
  publicKey: ` + tokyoKey + `
Peers:
  NAME    ENDPOINT          LAST-HANDSHAKE  PROBE
  fresh   <none>            never           pending
  home    192.0.2.10:41641  50s ago         ok
  laptop  192.0.2.44:1024   2h ago          dial tcp 100.64.0.3:1: i/o timeout
Conditions:
  TYPE   STATUS  REASON  AGE  MESSAGE
  Ready  True    Ready   3d
`},
		{"tunnel", []string{"describe", "tunnel", "web"}, `Name:         web
Kind:         Tunnel
Labels:       <none>
Annotations:  <none>
Created:      2025-06-01T10:00:00Z (2h ago)
Generation:   1 (observed 1)
Hostname:     not checked by Control yet
Ready:        True
Spec:
  agent: home
  enabled: true
  hostname: web.example.com
  target: http://localhost:8080
Gateways:
  NAME   SERVING  REASON
  osaka  false    GatewayOffline
  tokyo  true     <none>
Conditions:
  TYPE   STATUS  REASON  AGE  MESSAGE
  Ready  True    Ready   1h
`},
	}
	checkOutputs(t, e.srv.URL, tests)
}

// A node of many peers shows how many are connected and answered, with
// those in trouble listed; a gateway's probe of an agent it leaves out of
// such a list answered, when no peer in trouble is left out.
func TestSummedUpPeers(t *testing.T) {
	e := newTestEnv(t)
	e.srv.Seed(append(nodeFleet(), summedUpFleet()...)...)
	tests := []outputCase{
		{"agent", []string{"get", "agent", "mesh", "-o", "wide"},
			"NAME   ADDRESS      VERSION   CONNECTED   READY   LAST-SEEN   AGE   GATEWAYS   TARGETS   PUBLIC KEY                                     MESSAGE   LABELS\n" +
				"mesh   100.64.0.9   v0.3.1    True        True    2s ago      5d    997/1000   1/1       " + homeKey + "   <none>    <none>\n"},
		{"gateways", []string{"get", "gateways", "hub", "relay", "-o", "wide"},
			"NAME    ENDPOINT            ADDRESS      VERSION   READY   LAST-SEEN   AGE   AGENTS       ROUTES   DATA-PATH   PUBLIC KEY                                     MESSAGE   LABELS\n" +
				"hub     203.0.113.1:51820   100.64.0.4   v0.3.1    True    1s ago      10d   9997/10000   12000    netstack    " + tokyoKey + "   <none>    <none>\n" +
				"relay   203.0.113.2:51820   100.64.0.5   v0.3.1    True    3s ago      10d   2398/2400    2400     tun         <none>                                         <none>    <none>\n"},
		// The gateways mesh is not connected to are listed; hub and relay
		// sum their agents up and leave mesh out, which with no session
		// between them says nothing (unknown); tokyo lists every peer and
		// not mesh.
		{"describe agent", []string{"describe", "agent", "mesh"}, `Name:            mesh
Kind:            Agent
Labels:          <none>
Annotations:     <none>
Created:         2025-05-27T12:00:00Z (5d ago)
Generation:      1 (observed 1)
Address:         100.64.0.9
Version:         v0.3.1
Last heartbeat:  2025-06-01T11:59:58Z (2s ago)
Revision:        42
Ready:           True
Spec:
  enabled: true
  publicKey: ` + homeKey + `
Peers:
  1000 peers: 997 connected; showing the 3 not connected
  NAME   ENDPOINT           LAST-HANDSHAKE  PROBE
  hub    203.0.113.1:51820  not within 3m   <unknown>
  relay  <none>             not within 3m   <unknown>
  tokyo  <none>             not within 3m   <none>
Targets:
  TUNNEL  REACHABLE  MESSAGE
  web     true
Conditions:
  TYPE       STATUS  REASON             AGE  MESSAGE
  Connected  True    HeartbeatReceived  5h   heartbeats arrive
  Ready      True    Ready              5h
`},
		{"describe gateway", []string{"describe", "gateway", "hub"}, `Name:            hub
Kind:            Gateway
Labels:          <none>
Annotations:     <none>
Created:         2025-05-22T12:00:00Z (10d ago)
Generation:      1 (observed 1)
Address:         100.64.0.4
Version:         v0.3.1
Last heartbeat:  2025-06-01T11:59:59Z (1s ago)
Revision:        42
Ready:           True
Spec:
  enabled: true
  publicEndpoint: 203.0.113.1:51820
  publicKey: ` + tokyoKey + `
Peers:
  10000 peers: 9998 connected, 9997 answered probes; showing the 3 in trouble
  NAME    ENDPOINT  LAST-HANDSHAKE  PROBE
  fresh   <none>    not within 3m   pending
  home    <none>    within 3m       pending
  laptop  <none>    not within 3m   failed: i/o timeout
Conditions:
  TYPE   STATUS  REASON  AGE  MESSAGE
  Ready  True    Ready   9d
`},
		{"describe gateway leaving peers in trouble out", []string{"describe", "gateway", "relay"}, `Name:            relay
Kind:            Gateway
Labels:          <none>
Annotations:     <none>
Created:         2025-05-22T12:00:00Z (10d ago)
Generation:      1 (observed 1)
Address:         100.64.0.5
Version:         v0.3.1
Last heartbeat:  2025-06-01T11:59:57Z (3s ago)
Revision:        42
Ready:           True
Spec:
  enabled: true
  publicEndpoint: 203.0.113.2:51820
Peers:
  2400 peers: 2399 connected, 2398 answered probes; showing the 2 in trouble
  NAME   ENDPOINT  LAST-HANDSHAKE  PROBE
  a0001  <none>    not within 3m   pending
  a0002  <none>    within 3m       failed: connection refused
Conditions:
  TYPE   STATUS  REASON  AGE  MESSAGE
  Ready  True    Ready   9d
`},
	}
	checkOutputs(t, e.srv.URL, tests)
}

// When the gateways cannot be read, describe agent still shows the agent,
// says it does not know the probes, and fails.
func TestDescribeAgentWithoutGateways(t *testing.T) {
	e := newTestEnv(t)
	e.srv.Seed(nodeFleet()...)
	upstream, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	var lists atomic.Int32
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/gateways") {
			lists.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd is unavailable","reason":"ServiceUnavailable","code":503}`))
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	r := runAt(t, front.URL, "describe", "agent", "home", "laptop")
	wantPeers := "Peers:\n" +
		"  NAME       ENDPOINT            LAST-HANDSHAKE  PROBE\n" +
		"  frankfurt  <none>              never           <unknown>\n" +
		"  osaka      198.51.100.9:51820  10m ago         <unknown>\n" +
		"  tokyo      203.0.113.7:51820   50s ago         <unknown>\n"
	if r.code != 1 || !strings.Contains(r.stdout, wantPeers) || !strings.Contains(r.stdout, "Name:            laptop\n") {
		t.Fatalf("got code %d stdout\n%s\nwant code 1, both agents and\n%s", r.code, r.stdout, wantPeers)
	}
	if !strings.HasPrefix(r.stderr, "error: read the gateways' probes of agents: ") || strings.Count(r.stderr, "error:") != 1 {
		t.Fatalf("got stderr %q, want one error about reading the gateways", r.stderr)
	}
	if n := lists.Load(); n != 1 {
		t.Fatalf("got %d lists of gateways for two agents, want 1", n)
	}
}

func TestNodeColumns(t *testing.T) {
	// peers is what describe's Peers table says above its rows, after
	// how many peers the node has in all.
	peers := func(listed []api.NodePeerStatus, counts *api.PeerCounts, gateway bool) string {
		s, total := peersSection(listed, counts, gateway)
		return fmt.Sprintf("%d: %s", total, s.note)
	}
	written := func(listed []api.NodePeerStatus, counts *api.PeerCounts) string {
		s, _ := peersSection(listed, counts, true)
		var b strings.Builder
		if err := s.write(&b); err != nil {
			return err.Error()
		}
		return b.String()
	}
	troubled := []api.NodePeerStatus{{Name: "a"}, {Name: "b", Connected: true, Probe: "failed: timeout"}}
	gateway := func(name string, counts *api.PeerCounts, agents ...api.NodePeerStatus) api.Object {
		return &api.Gateway{Metadata: api.ObjectMeta{Name: name},
			Status: api.GatewayStatus{NodeStatus: api.NodeStatus{Peers: counts}, Agents: agents}}
	}
	summedUp := &api.PeerCounts{Total: 600, Connected: 599, Answered: 598}
	probes := gatewayProbes{objs: []api.Object{
		gateway("full-lists", nil, api.NodePeerStatus{Name: "b"}, api.NodePeerStatus{Name: "a", Probe: "failed: timeout"}),
		gateway("full-leaves-out", nil, api.NodePeerStatus{Name: "b", Probe: api.ProbeOK}),
		gateway("summed-lists", summedUp, api.NodePeerStatus{Name: "a", Connected: true}),
		gateway("summed-leaves-out", summedUp, api.NodePeerStatus{Name: "b"}),
	}}
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"last seen never", lastSeen(nil, fleetNow), "never"},
		{"last seen zero", lastSeen(&time.Time{}, fleetNow), "never"},
		{"last seen seconds", lastSeen(before(4*time.Second), fleetNow), "4s ago"},
		{"last seen in the future (skew)", lastSeen(before(-3*time.Second), fleetNow), "0s ago"},
		{"handshakes at the freshness edge", handshakesColumn([]api.NodePeerStatus{
			{Name: "a", LastHandshake: before(handshakeFresh)},
			{Name: "b", LastHandshake: before(handshakeFresh + time.Second)},
			{Name: "c", LastHandshake: &time.Time{}},
		}, nil, fleetNow), "1/3"},
		{"a handshake renewed every two minutes is fresh", handshakesColumn([]api.NodePeerStatus{
			{Name: "a", LastHandshake: before(2*time.Minute + 59*time.Second)},
		}, nil, fleetNow), "1/1"},
		{"so is one shown by a status rewritten a minute later", handshakesColumn([]api.NodePeerStatus{
			{Name: "a", LastHandshake: before(2*time.Minute + 25*time.Second + time.Minute)},
		}, nil, fleetNow), "1/1"},
		{"handshakes none", handshakesColumn(nil, nil, fleetNow), "0/0"},
		{"a summed-up status counts connected peers, not the few it lists", handshakesColumn(troubled,
			&api.PeerCounts{Total: 10000, Connected: 9998}, fleetNow), "9998/10000"},
		{"a node of many peers shows whether each is connected", handshakesColumn([]api.NodePeerStatus{
			{Name: "a", Connected: true}, {Name: "b"}, {Name: "c", Connected: true},
		}, nil, fleetNow), "2/3"},
		{"a handshake time shown outweighs connected", handshakesColumn([]api.NodePeerStatus{
			{Name: "a", LastHandshake: before(handshakeFresh + time.Second), Connected: true},
		}, nil, fleetNow), "0/1"},
		{"peer of a short list", strings.Join(peerRow(api.NodePeerStatus{Name: "a", LastHandshake: before(50 * time.Second), Connected: true},
			api.TimedPeers, fleetNow, "ok"), " "), "a <none> 50s ago ok"},
		{"connected peer of a long list", strings.Join(peerRow(api.NodePeerStatus{Name: "a", Endpoint: "192.0.2.1:1", Connected: true},
			api.TimedPeers+1, fleetNow, "ok"), " "), "a 192.0.2.1:1 within 3m ok"},
		{"peer of a long list not connected", strings.Join(peerRow(api.NodePeerStatus{Name: "a"}, api.TimedPeers+1, fleetNow, "ok"), " "),
			"a <none> not within 3m ok"},
		{"probed", probedColumn([]api.NodePeerStatus{{Probe: "ok"}, {Probe: ""}, {Probe: "timeout"}, {Probe: "ok"}}, nil), "2/4"},
		{"probed by a summed-up status", probedColumn(troubled, &api.PeerCounts{Total: 10000, Connected: 9999, Answered: 9998}), "9998/10000"},
		{"peers listed in full", peers(troubled, nil, true), "2: "},
		{"summed-up gateway with none in trouble", peers(nil, &api.PeerCounts{Total: 10000, Connected: 10000, Answered: 10000}, true),
			"10000: 10000 peers: 10000 connected, 10000 answered probes; none in trouble"},
		{"summed-up gateway", peers(troubled, &api.PeerCounts{Total: 10000, Connected: 9999, Answered: 9998}, true),
			"10000: 10000 peers: 9999 connected, 9998 answered probes; showing the 2 in trouble"},
		{"peers none", written(nil, nil), "Peers:  <none>\n"},
		{"summed-up peers none in trouble", written(nil, &api.PeerCounts{Total: 501, Connected: 501, Answered: 501}),
			"Peers:\n  501 peers: 501 connected, 501 answered probes; none in trouble\n"},
		{"summed-up agent", peers(troubled[:1], &api.PeerCounts{Total: 1000, Connected: 999}, false),
			"1000: 1000 peers: 999 connected; showing the 1 not connected"},
		{"gateways' probes of an agent", fmt.Sprintf("%q", probes.of("a")),
			`map["full-lists":"failed: timeout" "summed-leaves-out":"\x00unlisted" "summed-lists":""]`},
		{"a gateway not listing an agent it sums up, seen connected by the agent", probeOfUnlisted(api.NodePeerStatus{Name: "g", Connected: true}, fleetNow), "ok"},
		{"the same, not seen connected: maybe no peer of it yet", probeOfUnlisted(api.NodePeerStatus{Name: "g"}, fleetNow), "<unknown>"},
		{"reachable", reachableColumn([]api.TargetStatus{{Reachable: true}, {Reachable: false}}), "1/2"},
		{"serving", servingColumn([]api.TunnelGatewayStatus{{Serving: true}, {Serving: true}, {Serving: false}}), "2/3"},
		{"connected missing", conditionStatus(nil, api.NodeConnected), "Unknown"},
		{"probe not reported", probeCell("", false), "<none>"},
		{"probe pending", probeCell("", true), "pending"},
		{"probe failed", probeCell("connection refused", true), "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

// outputCase is a command line and the whole output it must print.
type outputCase struct {
	name string
	args []string
	want string
}

// checkOutputs runs each case against the API at url and wants exit code
// 0 and exactly its output.
func checkOutputs(t *testing.T, url string, tests []outputCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runAt(t, url, tt.args...)
			if r.code != 0 || r.stdout != tt.want {
				t.Fatalf("got code %d stderr %q stdout\n%s\nwant code 0 and\n%s", r.code, r.stderr, r.stdout, tt.want)
			}
		})
	}
}
