package wgnet

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
)

func TestNewRejectsBadConfig(t *testing.T) {
	leakcheck.Goroutines(t)
	priv, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("100.64.0.9")
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no private key", Config{Address: addr}},
		{"no address", Config{PrivateKey: priv}},
		{"negative port", Config{PrivateKey: priv, Address: addr, ListenPort: -1}},
		{"port too large", Config{PrivateKey: priv, Address: addr, ListenPort: 70000}},
		{"MTU too small", Config{PrivateKey: priv, Address: addr, MTU: 576}},
		{"MTU too large", Config{PrivateKey: priv, Address: addr, MTU: 70000}},
	}
	for _, tt := range tests {
		d, err := New(tt.cfg)
		if !errors.Is(err, api.ErrInvalid) {
			t.Errorf("%s: got %v, want api.ErrInvalid", tt.name, err)
		}
		if d != nil {
			d.Close()
		}
	}
}

func TestNewPortInUse(t *testing.T) {
	leakcheck.Goroutines(t)
	first := newNode(t, "first", "100.64.0.1")
	priv, _ := GeneratePrivateKey()
	d, err := New(Config{PrivateKey: priv, Address: netip.MustParseAddr("100.64.0.2"), ListenPort: first.dev.ListenPort()})
	if err == nil {
		d.Close()
		t.Fatalf("second device on port %d: got nil error, want one", first.dev.ListenPort())
	}
	if !strings.Contains(err.Error(), "binding UDP port") {
		t.Errorf("got %q, want it to say the port could not be bound", err)
	}
}

func TestNewSettings(t *testing.T) {
	leakcheck.Goroutines(t)
	priv, _ := GeneratePrivateKey()
	d, err := New(Config{PrivateKey: priv, Address: netip.MustParseAddr("::ffff:100.64.0.9"), MTU: 1280})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got, want := d.Address(), netip.MustParseAddr("100.64.0.9"); got != want {
		t.Errorf("Address: got %v, want %v", got, want)
	}
	if d.PublicKey() != priv.PublicKey() {
		t.Errorf("PublicKey: got %v, want %v", d.PublicKey(), priv.PublicKey())
	}
	if d.ListenPort() == 0 {
		t.Errorf("ListenPort: got 0, want the port picked")
	}
}

func TestSetPeersRejectsInvalid(t *testing.T) {
	leakcheck.Goroutines(t)
	n := newNode(t, "n", "100.64.0.1")
	k1, k2 := testKey(1), testKey(2)
	h := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	tests := []struct {
		name  string
		peers []Peer
		field string // the path the error must name
	}{
		{"zero key", []Peer{{}}, "peers[0].publicKey"},
		{"own key", []Peer{{PublicKey: n.priv.PublicKey()}}, "peers[0].publicKey"},
		{"duplicate key", []Peer{{PublicKey: k1}, {PublicKey: k1}}, "peers[1].publicKey"},
		{"endpoint port 0", []Peer{{PublicKey: k1, Endpoint: netip.MustParseAddrPort("192.0.2.1:0")}}, "peers[0].endpoint"},
		{"keepalive under a second", []Peer{{PublicKey: k1, PersistentKeepalive: 500 * time.Millisecond}}, "peers[0].persistentKeepalive"},
		{"keepalive not whole seconds", []Peer{{PublicKey: k1, PersistentKeepalive: 1500 * time.Millisecond}}, "peers[0].persistentKeepalive"},
		{"keepalive negative", []Peer{{PublicKey: k1, PersistentKeepalive: -time.Second}}, "peers[0].persistentKeepalive"},
		{"keepalive too long", []Peer{{PublicKey: k1, PersistentKeepalive: 65536 * time.Second}}, "peers[0].persistentKeepalive"},
		{"invalid prefix", []Peer{{PublicKey: k1, AllowedIPs: []netip.Prefix{{}}}}, "peers[0].allowedIPs[0]"},
		{"prefix on two peers", []Peer{{PublicKey: k1, AllowedIPs: h("10.0.0.0/8")}, {PublicKey: k2, AllowedIPs: h("10.1.2.3/8")}}, "peers[1].allowedIPs[0]"},
	}
	valid := []Peer{{PublicKey: k1, AllowedIPs: h("100.64.0.5/32")}}
	n.setPeers(t, valid...)
	for _, tt := range tests {
		changed, err := n.dev.SetPeers(tt.peers)
		if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: got %v, want api.ErrInvalid naming %s", tt.name, err, tt.field)
		}
		if changed {
			t.Errorf("%s: got changed=true, want false", tt.name)
		}
	}
	// Nothing was touched.
	ps, _ := n.dev.Peers()
	if len(ps) != 1 || ps[0].PublicKey != k1 {
		t.Errorf("peers after rejected calls: got %v, want only the valid one", ps)
	}
}

func TestNormalisePeers(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	got, err := normalisePeers([]Peer{
		{PublicKey: k2, Endpoint: netip.MustParseAddrPort("[::ffff:192.0.2.1]:51820"), AllowedIPs: []netip.Prefix{
			netip.MustParsePrefix("10.9.8.7/16"), netip.MustParsePrefix("100.64.0.2/32"), netip.MustParsePrefix("10.9.0.0/16"),
		}},
		{PublicKey: k1},
	}, testKey(9))
	if err != nil {
		t.Fatal(err)
	}
	want := []Peer{
		{PublicKey: k1, AllowedIPs: []netip.Prefix{}},
		{PublicKey: k2, Endpoint: netip.MustParseAddrPort("192.0.2.1:51820"), AllowedIPs: []netip.Prefix{
			netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("100.64.0.2/32"),
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestDialAndListenArguments(t *testing.T) {
	leakcheck.Goroutines(t)
	n := newNode(t, "n", "100.64.0.1")
	n.setPeers(t, Peer{PublicKey: testKey(1), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/24")}})
	dials := []struct {
		network, addr string
		want          error
	}{
		{"udp", "100.64.0.2:53", api.ErrInvalid},
		{"tcp", "localhost:80", api.ErrInvalid},
		{"tcp", "100.64.0.2", api.ErrInvalid},
		{"tcp6", "100.64.0.2:80", api.ErrInvalid},
		{"tcp", "100.65.0.2:80", ErrNoRoute},
		{"tcp4", "[::ffff:100.65.0.2]:80", ErrNoRoute},
	}
	for _, tt := range dials {
		_, err := n.dev.DialContext(context.Background(), tt.network, tt.addr)
		if !errors.Is(err, tt.want) {
			t.Errorf("DialContext(%q, %q): got %v, want %v", tt.network, tt.addr, err, tt.want)
		}
	}
	listens := []struct {
		network, addr string
		ok            bool
	}{
		{"tcp", ":0", true},
		{"tcp4", "100.64.0.1:0", true},
		{"tcp", "[::ffff:100.64.0.1]:0", true},
		{"tcp6", ":0", false},
		{"udp", ":53", false},
		{"tcp", "100.64.0.2:80", false},
		{"tcp", "0.0.0.0:80", false},
		{"tcp", ":http", false},
		{"tcp", "80", false},
	}
	for _, tt := range listens {
		l, err := n.dev.Listen(tt.network, tt.addr)
		if tt.ok != (err == nil) {
			t.Errorf("Listen(%q, %q): got %v, want success %v", tt.network, tt.addr, err, tt.ok)
		}
		if err != nil && !errors.Is(err, api.ErrInvalid) {
			t.Errorf("Listen(%q, %q): got %v, want api.ErrInvalid", tt.network, tt.addr, err)
		}
		if l != nil {
			l.Close()
		}
	}
}
