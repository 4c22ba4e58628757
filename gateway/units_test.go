package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

func TestNormalizeHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"fuga.example.com", "fuga.example.com"},
		{"FUGA.Example.Com", "fuga.example.com"},
		{"fuga.example.com:443", "fuga.example.com"},
		{"fuga.example.com.", "fuga.example.com"},
		{"fuga.example.com.:8080", "fuga.example.com"},
		{"fuga.example.com:", "fuga.example.com"},
		{"127.0.0.1:80", "127.0.0.1"},
		{"[::1]:80", "::1"},
		{"[::1]", "::1"},
		{"fuga.example.com:x", "fuga.example.com:x"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := normalizeHost(tt.in); got != tt.want {
			t.Errorf("normalizeHost(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestPrefersJSON(t *testing.T) {
	tests := []struct {
		accept []string
		want   bool
	}{
		{nil, false},
		{[]string{"*/*"}, false},
		{[]string{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}, false},
		{[]string{"application/json"}, true},
		{[]string{"application/json, */*"}, true},
		{[]string{"application/problem+json"}, true},
		{[]string{"text/html", "application/json"}, false},
		{[]string{"text/html;q=0.5, application/json"}, true},
		{[]string{"application/json;q=0"}, false},
		{[]string{"application/json;q=0.3, text/html;q=0.9"}, false},
		{[]string{"garbage;;;, application/json"}, true},
	}
	for _, tt := range tests {
		if got := prefersJSON(tt.accept); got != tt.want {
			t.Errorf("prefersJSON(%q): got %v, want %v", tt.accept, got, tt.want)
		}
	}
}

// TestParseSlice: items that cannot be installed are left out and
// reported; the rest of the slice is still installed.
func TestParseSlice(t *testing.T) {
	own := newKey(t)
	k1, k2 := newKey(t).PublicKey().String(), newKey(t).PublicKey().String()
	a1, a2 := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.3")
	self := selfItem(gatewayAddr, true)
	peer := func(name, key string, addr netip.Addr) bridge.Item {
		return bridge.Item{Key: "peer/" + name, Peer: &bridge.Peer{Name: name, PublicKey: key, Address: addr}}
	}
	rt := func(key, tunnel, host, proto string, port int) bridge.Item {
		return bridge.Item{Key: key, Route: &bridge.Route{Tunnel: tunnel, Hostname: host, Protocol: proto, PublicPort: port, Agent: "a1", AgentAddress: a1, Enabled: true}}
	}
	tests := []struct {
		name      string
		items     []bridge.Item
		wantPeers int
		wantHosts string
		wantPorts string
		wantErr   string
	}{
		{"valid", []bridge.Item{self, peer("a1", k1, a1), peer("a2", k2, a2),
			rt("route/x.example.com", "x", "X.example.com", "http", 0), rt("tcp/5432", "db", "db.example.com", "tcp", 5432)},
			2, "x.example.com", "5432", ""},
		{"bad key", []bridge.Item{self, peer("a1", "not-a-key", a1), peer("a2", k2, a2)}, 1, "", "", "peer/a1"},
		{"own key", []bridge.Item{self, peer("a1", own.PublicKey().String(), a1)}, 0, "", "", "gateway's own"},
		{"own address", []bridge.Item{self, peer("a1", k1, gatewayAddr)}, 0, "", "", "gateway's own"},
		{"duplicate key", []bridge.Item{self, peer("a1", k1, a1), peer("a2", k1, a2)}, 1, "", "", "already used by peer a1"},
		{"duplicate address", []bridge.Item{self, peer("a1", k1, a1), peer("a2", k2, a1)}, 1, "", "", "already used by peer a1"},
		{"no address", []bridge.Item{self, peer("a1", k1, netip.Addr{})}, 0, "", "", "no overlay address"},
		{"duplicate hostname", []bridge.Item{rt("route/a", "t1", "x.example.com", "http", 0), rt("route/b", "t2", "X.EXAMPLE.COM", "http", 0)},
			0, "x.example.com", "", "already routed by route/a"},
		{"duplicate port", []bridge.Item{rt("tcp/1", "t1", "a.example.com", "tcp", 7000), rt("tcp/2", "t2", "b.example.com", "tcp", 7000)},
			0, "", "7000", "already routed by tcp/1"},
		{"duplicate tunnel", []bridge.Item{rt("route/a", "t1", "a.example.com", "http", 0), rt("route/b", "t1", "b.example.com", "http", 0)},
			0, "a.example.com", "", "tunnel t1 is already routed"},
		{"bad tunnel name", []bridge.Item{rt("route/a", "Bad Name", "a.example.com", "http", 0)}, 0, "", "", "tunnel name"},
		{"bad port", []bridge.Item{rt("tcp/0", "t1", "a.example.com", "tcp", 0)}, 0, "", "", "out of range"},
		{"bad protocol", []bridge.Item{rt("route/a", "t1", "a.example.com", "udp", 0)}, 0, "", "", "not supported"},
		{"http without hostname", []bridge.Item{rt("route/a", "t1", "", "http", 0)}, 0, "", "", "without a hostname"},
		{"self without address", []bridge.Item{selfItem(netip.Addr{}, true)}, 0, "", "", "self: no overlay address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := bridge.Slice{}
			for _, it := range tt.items {
				s[it.Key] = it
			}
			d, err := parseSlice(s, own.PublicKey())
			if tt.wantErr == "" && err != nil {
				t.Errorf("error: got %v, want nil", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error: got %v, want one containing %q", err, tt.wantErr)
			}
			if len(d.peers) != tt.wantPeers {
				t.Errorf("peers: got %d, want %d", len(d.peers), tt.wantPeers)
			}
			var hosts, ports []string
			for h := range d.table.hosts {
				hosts = append(hosts, h)
			}
			for p := range d.table.ports {
				ports = append(ports, fmt.Sprint(p))
			}
			if got := strings.Join(hosts, ","); got != tt.wantHosts {
				t.Errorf("hosts: got %q, want %q", got, tt.wantHosts)
			}
			if got := strings.Join(ports, ","); got != tt.wantPorts {
				t.Errorf("ports: got %q, want %q", got, tt.wantPorts)
			}
		})
	}
}

// TestPeersConfigured: each agent becomes a WireGuard peer with its /32 as
// the only AllowedIP and no endpoint, and nothing else.
func TestPeersConfigured(t *testing.T) {
	leakcheck.Goroutines(t)
	gw := startGateway(t)
	a1, a2 := newAgent(t, "a1", "100.64.0.2"), newAgent(t, "a2", "100.64.0.3")
	gw.apply(t, sliceOf([]*testAgent{a1, a2}))
	peers, err := gw.dev.Load().Peers()
	if err != nil {
		t.Fatal(err)
	}
	want := map[wgnet.Key]netip.Prefix{
		a1.priv.PublicKey(): netip.MustParsePrefix("100.64.0.2/32"),
		a2.priv.PublicKey(): netip.MustParsePrefix("100.64.0.3/32"),
	}
	if len(peers) != len(want) {
		t.Fatalf("peers: got %d, want %d", len(peers), len(want))
	}
	for _, p := range peers {
		if len(p.AllowedIPs) != 1 || p.AllowedIPs[0] != want[p.PublicKey] || p.Endpoint.IsValid() || p.PersistentKeepalive != 0 {
			t.Errorf("peer %s: got allowed %v endpoint %v keepalive %v, want [%v], none, none",
				p.PublicKey.Short(), p.AllowedIPs, p.Endpoint, p.PersistentKeepalive, want[p.PublicKey])
		}
	}
	// One agent removed: its peer goes, the other stays.
	gw.apply(t, sliceOf([]*testAgent{a2}))
	if peers, _ := gw.dev.Load().Peers(); len(peers) != 1 || peers[0].PublicKey != a2.priv.PublicKey() {
		t.Errorf("after removing a1: got %d peers, want only a2", len(peers))
	}
}

func TestConfigValidation(t *testing.T) {
	key := newKey(t)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no key", Config{}},
		{"port out of range", Config{PrivateKey: key, WireGuardPort: 70000}},
		{"cert without key", Config{PrivateKey: key, CertFile: "cert.pem"}},
		{"negative grace", Config{PrivateKey: key, ShutdownGrace: -time.Second}},
		{"negative dial timeout", Config{PrivateKey: key, DialTimeout: -1}},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("%s: got %v, want api.ErrInvalid", tt.name, err)
		}
	}
	g, err := New(Config{PrivateKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if g.cfg.ShutdownGrace != DefaultShutdownGrace || g.cfg.ReadHeaderTimeout != DefaultReadHeaderTimeout ||
		g.cfg.IdleTimeout != DefaultIdleTimeout || g.cfg.DialTimeout != DefaultDialTimeout {
		t.Errorf("defaults: got %+v, want the documented ones", g.cfg)
	}
}

// FuzzRouting: whatever the Host and path, the handler answers without
// panicking; a Host that no route names is answered 404 (or the health
// endpoint) and never opens a stream to an agent.
func FuzzRouting(f *testing.F) {
	for _, s := range []string{"fuga.example.com", "FUGA.example.com:443", "[::1]:80", "", "nope", "fuga.example.com.", "a:b:c", "\x00", "%zz"} {
		f.Add(s, "/")
		f.Add(s, "/healthz")
	}
	f.Add("x", HealthPath)
	g, err := New(Config{PrivateKey: newKey(f)})
	if err != nil {
		f.Fatal(err)
	}
	// Routes but no device: a routed Host gets "not ready" without any
	// network, so the fuzzer runs fast.
	if err := g.Apply(bridge.Slice{"route/" + hostA: {Key: "route/" + hostA, Route: &bridge.Route{
		Tunnel: "fuga", Hostname: hostA, Protocol: "http", Agent: "a", AgentAddress: netip.MustParseAddr("100.64.0.2"), Enabled: true,
	}}}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, host, path string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = host
		r.URL.Path = path
		w := httptest.NewRecorder()
		before := g.dials.Load()
		g.serveHTTP(w, r)
		_, routed := g.table.Load().hosts[normalizeHost(host)]
		switch {
		case path == HealthPath || !routed && path == plainHealthPath:
			if w.Code != http.StatusServiceUnavailable || w.Header().Get(ErrorHeader) != "" {
				t.Errorf("health on %q: got %d, want 503 (no device yet)", host, w.Code)
			}
		case !routed:
			if w.Code != http.StatusNotFound || w.Header().Get(ErrorHeader) != ReasonNoSuchTunnel {
				t.Errorf("host %q: got %d %s, want 404 %s", host, w.Code, w.Header().Get(ErrorHeader), ReasonNoSuchTunnel)
			}
			if g.dials.Load() != before {
				t.Errorf("host %q: a stream was opened for an unrouted host", host)
			}
		default:
			if w.Code != http.StatusServiceUnavailable || w.Header().Get(ErrorHeader) != ReasonGatewayNotReady {
				t.Errorf("host %q: got %d %s, want 503 %s", host, w.Code, w.Header().Get(ErrorHeader), ReasonGatewayNotReady)
			}
		}
	})
}
