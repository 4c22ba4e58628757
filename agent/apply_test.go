package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
	"github.com/kakuremichi/kakuremichi/internal/testlog"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// loopbackResolver resolves from /etc/hosts (localhost) and sends every
// DNS query to a closed loopback port, so that names outside the hosts
// file fail at once and no query leaves the machine.
func loopbackResolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, "127.0.0.1:1")
		},
	}
}

func TestNewRejects(t *testing.T) {
	key := mustKey(t)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no private key", Config{}},
		{"negative listen port", Config{PrivateKey: key, ListenPort: -1}},
		{"listen port too large", Config{PrivateKey: key, ListenPort: 65536}},
		{"MTU too small", Config{PrivateKey: key, MTU: 576}},
		{"MTU too large", Config{PrivateKey: key, MTU: 65536}},
		{"negative grace", Config{PrivateKey: key, ShutdownGrace: -time.Second}},
		{"negative dial timeout", Config{PrivateKey: key, DialTimeout: -time.Second}},
		{"negative probe interval", Config{PrivateKey: key, ProbeInterval: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(tt.cfg)
			if !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("New: got %v, %v, want an error matching api.ErrInvalid", a, err)
			}
		})
	}
	a, err := New(Config{PrivateKey: key})
	if err != nil {
		t.Fatalf("New with only a key: got %v, want nil", err)
	}
	if a.cfg.ShutdownGrace != DefaultShutdownGrace || a.cfg.DialTimeout != DefaultDialTimeout || a.cfg.ProbeInterval != DefaultProbeInterval {
		t.Errorf("defaults: got grace %v, dial %v, probe %v, want %v, %v, %v",
			a.cfg.ShutdownGrace, a.cfg.DialTimeout, a.cfg.ProbeInterval, DefaultShutdownGrace, DefaultDialTimeout, DefaultProbeInterval)
	}
}

// TestBuild: how a slice becomes the device's peers and the forwards.
func TestBuild(t *testing.T) {
	own := mustKey(t)
	a, err := New(Config{PrivateKey: own, Resolver: loopbackResolver()})
	if err != nil {
		t.Fatal(err)
	}
	self := bridge.Self{Name: "agent-home", Address: agentAddr, Enabled: true}
	k1, k2 := mustKey(t).PublicKey(), mustKey(t).PublicKey()
	gw := func(name string, k wgnet.Key, addr, endpoint string) bridge.Peer {
		return bridge.Peer{Name: name, PublicKey: k.String(), Address: netip.MustParseAddr(addr), Endpoint: endpoint}
	}
	host := func(addr string) []netip.Prefix {
		a := netip.MustParseAddr(addr)
		return []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}
	}

	tests := []struct {
		name        string
		self        bridge.Self
		peers       []bridge.Peer
		wantPeers   []wgnet.Peer
		wantSkipped map[string]string // gateway name -> part of the reason
	}{
		{
			name:  "endpoint by address, default keepalive",
			self:  self,
			peers: []bridge.Peer{gw("gw1", k1, "100.64.0.1", "198.51.100.7:51820")},
			wantPeers: []wgnet.Peer{{PublicKey: k1, Endpoint: netip.MustParseAddrPort("198.51.100.7:51820"),
				AllowedIPs: host("100.64.0.1"), PersistentKeepalive: DefaultKeepalive}},
		},
		{
			name:  "endpoint by host name, keepalive from self",
			self:  bridge.Self{Name: "agent-home", Address: agentAddr, Enabled: true, KeepaliveSeconds: 25},
			peers: []bridge.Peer{gw("gw1", k1, "100.64.0.1", "localhost:51820")},
			wantPeers: []wgnet.Peer{{PublicKey: k1, Endpoint: netip.MustParseAddrPort("127.0.0.1:51820"),
				AllowedIPs: host("100.64.0.1"), PersistentKeepalive: 25 * time.Second}},
		},
		{
			name:  "IPv6 overlay and endpoint",
			self:  bridge.Self{Name: "agent-home", Address: netip.MustParseAddr("fd00::2"), Enabled: true},
			peers: []bridge.Peer{gw("gw1", k1, "fd00::1", "[::1]:51820")},
			wantPeers: []wgnet.Peer{{PublicKey: k1, Endpoint: netip.MustParseAddrPort("[::1]:51820"),
				AllowedIPs: host("fd00::1"), PersistentKeepalive: DefaultKeepalive}},
		},
		{
			name: "gateways that cannot be used are left out, the others kept",
			self: self,
			peers: []bridge.Peer{
				gw("gw1", k1, "100.64.0.1", "127.0.0.1:51820"),
				gw("gw2", k2, "100.64.0.3", "gw2.invalid:51820"),
				gw("gw3", mustKey(t).PublicKey(), "100.64.0.4", ""),
				{Name: "gw4", PublicKey: "not-a-key", Address: netip.MustParseAddr("100.64.0.5"), Endpoint: "127.0.0.1:1"},
				gw("gw5", own.PublicKey(), "100.64.0.6", "127.0.0.1:1"),
				gw("gw6", mustKey(t).PublicKey(), "100.64.0.1", "127.0.0.1:2"),
				gw("gw7", mustKey(t).PublicKey(), "100.64.0.7", "127.0.0.1:0"),
				gw("gw8", mustKey(t).PublicKey(), "100.64.0.2", "127.0.0.1:3"),
				gw("gw9", k1, "100.64.0.9", "127.0.0.1:4"),
			},
			wantPeers: []wgnet.Peer{{PublicKey: k1, Endpoint: netip.MustParseAddrPort("127.0.0.1:51820"),
				AllowedIPs: host("100.64.0.1"), PersistentKeepalive: DefaultKeepalive}},
			wantSkipped: map[string]string{
				"gw2": "resolving endpoint",
				"gw3": "no public endpoint",
				"gw4": "parsing public key",
				"gw5": "this agent's own",
				"gw6": "also gateway gw1's",
				"gw7": "port",
				"gw8": "overlay address is this agent's own",
				"gw9": "public key is also gateway gw1's",
			},
		},
		{
			name:      "no self: peers still computed, device comes with self",
			peers:     []bridge.Peer{gw("gw1", k1, "100.64.0.1", "127.0.0.1:51820")},
			wantPeers: []wgnet.Peer{{PublicKey: k1, Endpoint: netip.MustParseAddrPort("127.0.0.1:51820"), AllowedIPs: host("100.64.0.1"), PersistentKeepalive: DefaultKeepalive}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sliceOf(tt.self, tt.peers)
			if !tt.self.Address.IsValid() {
				delete(s, "self")
			}
			d, err := a.build(context.Background(), s, nil)
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			if got, want := fmt.Sprint(d.peers), fmt.Sprint(tt.wantPeers); got != want {
				t.Errorf("peers:\n got %s\nwant %s", got, want)
			}
			got := map[string]string{}
			for _, p := range d.skipped {
				got[p.name] = p.reason
			}
			if len(got) != len(tt.wantSkipped) {
				t.Errorf("skipped: got %v, want %v", got, tt.wantSkipped)
			}
			for name, want := range tt.wantSkipped {
				if !strings.Contains(got[name], want) {
					t.Errorf("skipped %s: got reason %q, want one containing %q", name, got[name], want)
				}
			}
		})
	}

	t.Run("self without an address fails", func(t *testing.T) {
		s := bridge.Slice{"self": {Key: "self", Self: &bridge.Self{Name: "agent-home", Enabled: true}}}
		if _, err := a.build(context.Background(), s, nil); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("build: got %v, want api.ErrInvalid", err)
		}
	})
}

func TestParseForward(t *testing.T) {
	tests := []struct {
		target      string
		wantScheme  string
		wantAddress string
		wantInvalid bool
	}{
		{"http://app", "http", "app:80", false},
		{"http://localhost:8080", "http", "localhost:8080", false},
		{"https://origin.lan", "https", "origin.lan:443", false},
		{"https://[::1]:8443/", "https", "[::1]:8443", false},
		{"tcp://db:5432", "tcp", "db:5432", false},
		{"tcp://db", "", "", true},
		{"ftp://files:21", "", "", true},
		{"http://app:8080/path", "", "", true},
		{"", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			f := parseForward(bridge.Forward{Tunnel: "t", Target: tt.target, Enabled: true})
			if got := f.invalid != ""; got != tt.wantInvalid {
				t.Fatalf("invalid: got %q, want invalid=%v", f.invalid, tt.wantInvalid)
			}
			if f.scheme != tt.wantScheme || f.address != tt.wantAddress {
				t.Errorf("got %s %s, want %s %s", f.scheme, f.address, tt.wantScheme, tt.wantAddress)
			}
		})
	}
}

// TestResolveEndpointSticky: a name that resolves to several addresses
// keeps the gateway on the one it had, so a rotating DNS answer does not
// restart its WireGuard session; otherwise IPv4 is preferred.
func TestResolveEndpointSticky(t *testing.T) {
	a, err := New(Config{PrivateKey: mustKey(t), Resolver: loopbackResolver()})
	if err != nil {
		t.Fatal(err)
	}
	addrs := []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")}
	tests := []struct {
		name   string
		sticky string
		want   string
	}{
		{"no previous endpoint: first IPv4", "", "198.51.100.1:51820"},
		{"previous address still answered", "198.51.100.2:51820", "198.51.100.2:51820"},
		{"previous IPv6 address still answered", "[2001:db8::1]:51820", "[2001:db8::1]:51820"},
		{"previous address gone", "198.51.100.9:51820", "198.51.100.1:51820"},
		{"port changed", "198.51.100.2:51821", "198.51.100.1:51820"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sticky netip.AddrPort
			if tt.sticky != "" {
				sticky = netip.MustParseAddrPort(tt.sticky)
			}
			lookups := map[string]lookup{"gw.example.com": {addrs: addrs}}
			got, err := a.resolveEndpoint(context.Background(), "gw.example.com:51820", sticky, lookups)
			if err != nil || got.String() != tt.want {
				t.Errorf("got %v, %v, want %s", got, err, tt.want)
			}
		})
	}
}

// TestPeers: every gateway of the slice with a usable endpoint becomes a
// peer with only its own address routed and the slice's keepalive; each
// reaches the agent; those left out are reported by Status without
// failing Apply.
func TestPeers(t *testing.T) {
	leakcheck.Goroutines(t)
	echo := serveTCP(t, lineEcho)
	fwd := bridge.Forward{Tunnel: "db", Target: "tcp://" + echo, Enabled: true}
	gw1 := newGateway(t, "gw1", netip.MustParseAddr("100.64.0.1"))
	gw2 := newGateway(t, "gw2", netip.MustParseAddr("100.64.0.3"))
	a, err := New(Config{PrivateKey: mustKey(t), Resolver: loopbackResolver(), Logger: testlog.New(t, "agent")})
	if err != nil {
		t.Fatal(err)
	}
	gw1.admit(t, a.PublicKey(), agentAddr)
	gw2.admit(t, a.PublicKey(), agentAddr)

	p1 := gw1.asPeer()
	p1.Endpoint = fmt.Sprintf("localhost:%d", gw1.dev.ListenPort())
	unresolvable := bridge.Peer{Name: "gw3", PublicKey: mustKey(t).PublicKey().String(), Address: netip.MustParseAddr("100.64.0.4"), Endpoint: "gw3.invalid:51820"}
	pending := bridge.Peer{Name: "gw4", PublicKey: mustKey(t).PublicKey().String(), Address: netip.MustParseAddr("100.64.0.5")}
	self := bridge.Self{Name: "agent-home", Address: agentAddr, Enabled: true, KeepaliveSeconds: 20}
	if err := a.Apply(sliceOf(self, []bridge.Peer{p1, gw2.asPeer(), unresolvable, pending}, fwd)); err != nil {
		t.Fatalf("Apply: got %v, want nil", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	})

	a.mu.Lock()
	dev := a.dev
	a.mu.Unlock()
	live, err := dev.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 2 {
		t.Fatalf("device peers: got %d, want 2 (gw1, gw2)", len(live))
	}
	for _, p := range live {
		want := map[wgnet.Key]netip.Addr{gw1.priv.PublicKey(): gw1.addr, gw2.priv.PublicKey(): gw2.addr}[p.PublicKey]
		if got := fmt.Sprint(p.AllowedIPs); got != fmt.Sprintf("[%s/32]", want) {
			t.Errorf("peer %s allowed IPs: got %s, want [%s/32]", p.PublicKey.Short(), got, want)
		}
		if p.PersistentKeepalive != 20*time.Second {
			t.Errorf("peer %s keepalive: got %v, want 20s", p.PublicKey.Short(), p.PersistentKeepalive)
		}
	}

	for _, gw := range []*testGateway{gw1, gw2} {
		s := gw.mustOpen(t, agentAddr, "db")
		io.WriteString(s, gw.name+"\n")
		if got, want := readLine(t, s), "echo: "+gw.name+"\n"; got != want {
			t.Errorf("through %s: got %q, want %q", gw.name, got, want)
		}
	}

	waitFor(t, 5*time.Second, "Status to show both handshakes", func() bool {
		st := a.Status()
		return len(st.Peers) == 4 && !st.Peers[0].LastHandshake.IsZero() && !st.Peers[1].LastHandshake.IsZero()
	})
	st := a.Status()
	got := make([]string, 0, len(st.Peers))
	for _, p := range st.Peers {
		got = append(got, fmt.Sprintf("%s %s %v", p.Name, p.Endpoint, p.LastHandshake.IsZero()))
	}
	want := []string{
		fmt.Sprintf("gw1 127.0.0.1:%d false", gw1.dev.ListenPort()),
		fmt.Sprintf("gw2 127.0.0.1:%d false", gw2.dev.ListenPort()),
		"gw3 gw3.invalid:51820 true",
		"gw4  true",
	}
	if !slices.Equal(got, want) {
		t.Errorf("status peers:\n got %q\nwant %q", got, want)
	}
	if st.Revision != 0 {
		t.Errorf("status revision: got %d, want 0 (the node client's)", st.Revision)
	}

	// Removing a gateway from the slice removes the peer, and closes its
	// streams: they could never finish.
	s2 := gw2.mustOpen(t, agentAddr, "db")
	io.WriteString(s2, "before\n")
	if got, want := readLine(t, s2), "echo: before\n"; got != want {
		t.Fatalf("through gw2: got %q, want %q", got, want)
	}
	rep, err := a.apply(context.Background(), sliceOf(self, []bridge.Peer{p1}, fwd))
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	// Both streams through gw2 end; the one through gw1 stays.
	if !rep.peersChanged || rep.streamsClosed != 2 {
		t.Errorf("removing gw2: got %+v, want peers changed and 2 streams closed", rep)
	}
	if live, _ := dev.Peers(); len(live) != 1 || live[0].PublicKey != gw1.priv.PublicKey() {
		t.Errorf("device peers after removing gw2: got %d, want only gw1", len(live))
	}
}

// TestBuildKeepsLastAddress: a gateway whose endpoint name fails to
// resolve keeps the address it resolved to before, unless its endpoint
// changed.
func TestBuildKeepsLastAddress(t *testing.T) {
	a, err := New(Config{PrivateKey: mustKey(t), Resolver: loopbackResolver()})
	if err != nil {
		t.Fatal(err)
	}
	self := bridge.Self{Name: "agent-home", Address: agentAddr, Enabled: true}
	k := mustKey(t).PublicKey()
	last := netip.MustParseAddrPort("198.51.100.7:51820")
	prev := &desired{endpoints: map[wgnet.Key]peerEndpoint{k: {configured: "gw1.invalid:51820", resolved: last}}}
	tests := []struct {
		endpoint    string
		wantPeer    bool
		wantStale   bool
		wantSkipped bool
	}{
		{endpoint: "gw1.invalid:51820", wantPeer: true, wantStale: true},
		{endpoint: "gw1-new.invalid:51820", wantSkipped: true},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint, func(t *testing.T) {
			p := bridge.Peer{Name: "gw1", PublicKey: k.String(), Address: gwAddr, Endpoint: tt.endpoint}
			d, err := a.build(context.Background(), sliceOf(self, []bridge.Peer{p}), prev)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(d.peers) == 1 && d.peers[0].Endpoint == last; got != tt.wantPeer {
				t.Errorf("peer kept at %v: got %v, want %v (peers %v)", last, got, tt.wantPeer, d.peers)
			}
			if got := len(d.stale) == 1; got != tt.wantStale {
				t.Errorf("stale: got %v, want %v", d.stale, tt.wantStale)
			}
			if got := len(d.skipped) == 1; got != tt.wantSkipped {
				t.Errorf("skipped: got %v, want %v", d.skipped, tt.wantSkipped)
			}
		})
	}
}

// TestStatusTargets: probes report each enabled tunnel's target, follow a
// target going down, and leave disabled tunnels out.
func TestStatusTargets(t *testing.T) {
	leakcheck.Goroutines(t)
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upLn.Close()
	selfSigned := httptest.NewUnstartedServer(http.HandlerFunc(origin))
	selfSigned.Config.ErrorLog = log.New(io.Discard, "", 0)
	selfSigned.StartTLS()
	t.Cleanup(selfSigned.Close)

	f := startAgent(t, Config{ProbeInterval: 50 * time.Millisecond, DialTimeout: time.Second},
		bridge.Forward{Tunnel: "up", Target: "tcp://" + upLn.Addr().String(), Enabled: true},
		bridge.Forward{Tunnel: "down", Target: "tcp://" + closedPort(t), Enabled: true},
		bridge.Forward{Tunnel: "off", Target: "tcp://" + upLn.Addr().String(), Enabled: false},
		bridge.Forward{Tunnel: "untrusted", Target: selfSigned.URL, Enabled: true},
		bridge.Forward{Tunnel: "trusted", Target: selfSigned.URL, InsecureSkipVerify: true, Enabled: true},
		bridge.Forward{Tunnel: "bad", Target: "ftp://files:21", Enabled: true},
	)
	summary := func() string {
		var parts []string
		for _, ts := range f.agent.Status().Targets {
			word := "down"
			if ts.Reachable {
				word = "up"
			}
			parts = append(parts, ts.Tunnel+"="+word)
		}
		return strings.Join(parts, " ")
	}
	want := "bad=down down=down trusted=up untrusted=down up=up"
	waitFor(t, 5*time.Second, "targets "+want, func() bool { return summary() == want })
	for _, ts := range f.agent.Status().Targets {
		wantMsg := map[string]string{"bad": "invalid target", "down": "refused", "untrusted": "certificate"}[ts.Tunnel]
		if !strings.Contains(ts.Message, wantMsg) {
			t.Errorf("target %s: got message %q, want one containing %q", ts.Tunnel, ts.Message, wantMsg)
		}
		if ts.CheckedAt.IsZero() {
			t.Errorf("target %s: no check time", ts.Tunnel)
		}
	}

	upLn.Close()
	want = "bad=down down=down trusted=up untrusted=down up=down"
	waitFor(t, 5*time.Second, "targets "+want, func() bool { return summary() == want })
}

// TestLifecycle: Apply before Run, a slice without self, Run only once,
// and nothing applied after Run returns.
func TestLifecycle(t *testing.T) {
	leakcheck.Goroutines(t)
	gw := newGateway(t, "gw1", gwAddr)
	a, err := New(Config{PrivateKey: mustKey(t), Logger: testlog.New(t, "agent")})
	if err != nil {
		t.Fatal(err)
	}
	self := bridge.Self{Name: "agent-home", Address: agentAddr, Enabled: true}
	noSelf := sliceOf(self, []bridge.Peer{gw.asPeer()})
	delete(noSelf, "self")

	rep, err := a.apply(context.Background(), noSelf)
	if err != nil || rep.deviceCreated {
		t.Fatalf("apply without self: got %+v, %v, want no device and no error", rep, err)
	}
	if st := a.Status(); len(st.Peers) != 0 {
		t.Errorf("status without a device: got %d peers, want 0", len(st.Peers))
	}
	rep, err = a.apply(context.Background(), sliceOf(self, []bridge.Peer{gw.asPeer()}))
	if err != nil || !rep.deviceCreated || !rep.peersChanged {
		t.Fatalf("apply with self: got %+v, %v, want a device with its peer", rep, err)
	}
	rep, err = a.apply(context.Background(), noSelf)
	if err != nil || !rep.deviceClosed {
		t.Fatalf("apply without self again: got %+v, %v, want the device closed", rep, err)
	}
	if _, err := a.apply(context.Background(), sliceOf(self, []bridge.Peer{gw.asPeer()})); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	gw.admit(t, a.PublicKey(), agentAddr)
	waitFor(t, 10*time.Second, "a handshake", func() bool { return !gw.handshakeWith(t, a.PublicKey()).IsZero() })
	if err := a.Run(context.Background()); !errors.Is(err, ErrStopped) {
		t.Errorf("second Run: got %v, want ErrStopped", err)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	if err := a.Apply(sliceOf(self, []bridge.Peer{gw.asPeer()})); !errors.Is(err, ErrStopped) {
		t.Errorf("Apply after Run: got %v, want ErrStopped", err)
	}
	a.mu.Lock()
	dev := a.dev
	a.mu.Unlock()
	if dev != nil {
		t.Errorf("device after Run: got one, want it closed and gone")
	}
}

// TestRestartedGateway: a gateway that restarts (same key and port, no
// session) cannot handshake with the agent first, since it learns the
// agent's address only from the agent; the agent's probe rounds send it
// data, which makes WireGuard handshake again within about 15 s instead
// of when the old session ages out after two minutes. It takes that long,
// so -short skips it.
func TestRestartedGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("waits about 15 s for WireGuard's handshake timers")
	}
	leakcheck.Goroutines(t)
	echo := serveTCP(t, lineEcho)
	f := startAgent(t, Config{ProbeInterval: 200 * time.Millisecond, DialTimeout: time.Second},
		bridge.Forward{Tunnel: "db", Target: "tcp://" + echo, Enabled: true})

	port := f.gw.dev.ListenPort()
	f.gw.dev.Close()
	dev, err := wgnet.New(wgnet.Config{PrivateKey: f.gw.priv, Address: gwAddr, ListenPort: port, Logger: testlog.New(t, "gw1-restarted")})
	if err != nil {
		t.Fatalf("restarting the gateway on port %d: %v", port, err)
	}
	t.Cleanup(func() { dev.Close() })
	f.gw.dev = dev
	f.gw.admit(t, f.agent.PublicKey(), agentAddr)

	restarted := time.Now()
	waitFor(t, 30*time.Second, "the agent to handshake with the restarted gateway", func() bool {
		return !f.gw.handshakeWith(t, f.agent.PublicKey()).IsZero()
	})
	t.Logf("handshake %v after the restart", time.Since(restarted).Round(time.Millisecond))
	s := f.open(t, "db")
	io.WriteString(s, "back\n")
	if got, want := readLine(t, s), "echo: back\n"; got != want {
		t.Errorf("through the restarted gateway: got %q, want %q", got, want)
	}
	// Stop the agent while the restarted gateway is still up to take the
	// stream's close.
	s.Close()
	if err := f.stop(t); err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
}
