package wgnet

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func testKey(b byte) Key {
	var k Key
	for i := range k {
		k[i] = b
	}
	return k
}

func TestParseUAPI(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	in := "private_key=" + strings.Repeat("ab", 32) + "\n" +
		"listen_port=51820\n" +
		"fwmark=0\n" +
		"public_key=" + k2.hex() + "\n" +
		"preshared_key=" + strings.Repeat("0", 64) + "\n" +
		"protocol_version=1\n" +
		"last_handshake_time_sec=0\n" +
		"last_handshake_time_nsec=0\n" +
		"tx_bytes=0\n" +
		"rx_bytes=0\n" +
		"persistent_keepalive_interval=0\n" +
		"public_key=" + k1.hex() + "\n" +
		"endpoint=127.0.0.1:1234\n" +
		"last_handshake_time_sec=1700000000\n" +
		"last_handshake_time_nsec=5\n" +
		"tx_bytes=10\n" +
		"rx_bytes=20\n" +
		"persistent_keepalive_interval=15\n" +
		"some_future_field=x\n" +
		"allowed_ip=10.0.0.0/8\n" +
		"allowed_ip=100.64.0.2/32\n" +
		"allowed_ip=fd00::/64\n"
	got, err := parseUAPI(in)
	if err != nil {
		t.Fatal(err)
	}
	want := deviceState{listenPort: 51820, peers: []PeerStatus{
		{
			PublicKey: k1, Endpoint: netip.MustParseAddrPort("127.0.0.1:1234"),
			AllowedIPs: []netip.Prefix{
				netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("100.64.0.2/32"), netip.MustParsePrefix("fd00::/64"),
			},
			PersistentKeepalive: 15 * time.Second, LastHandshake: time.Unix(1700000000, 5), RxBytes: 20, TxBytes: 10,
		},
		{PublicKey: k2},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}

	bad := []string{
		"listen_port=x\n",
		"listen_port=70000\n",
		"no equals sign\n",
		"endpoint=1.2.3.4:5\n", // before any peer
		"public_key=zz\n",
		"public_key=" + k1.hex() + "\nendpoint=nonsense\n",
		"public_key=" + k1.hex() + "\nallowed_ip=10.0.0.0/99\n",
		"public_key=" + k1.hex() + "\nrx_bytes=-1\n",
	}
	for _, s := range bad {
		if _, err := parseUAPI(s); err == nil {
			t.Errorf("parseUAPI(%q): got nil error, want one", s)
		}
	}
	// A malformed line is quoted in the error, but never a key in it.
	_, err = parseUAPI(strings.Repeat("ab", 32) + "\n")
	if err == nil || strings.Contains(err.Error(), strings.Repeat("ab", 32)) {
		t.Errorf("parse error for a bare key line: got %v, want an error without the key", err)
	}
}

func TestPeerDelta(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	ep1 := netip.MustParseAddrPort("192.0.2.1:51820")
	ep2 := netip.MustParseAddrPort("192.0.2.2:51820")
	roamed := netip.MustParseAddrPort("198.51.100.7:40000")
	p24 := netip.MustParsePrefix("10.1.0.0/24")
	h1 := netip.MustParsePrefix("100.64.0.1/32")
	h2 := netip.MustParsePrefix("100.64.0.2/32")
	live := func(k Key, ep netip.AddrPort, ka time.Duration, ips ...netip.Prefix) PeerStatus {
		return PeerStatus{PublicKey: k, Endpoint: ep, PersistentKeepalive: ka, AllowedIPs: ips}
	}
	peer := func(k Key, ep netip.AddrPort, ka time.Duration, ips ...netip.Prefix) Peer {
		return Peer{PublicKey: k, Endpoint: ep, PersistentKeepalive: ka, AllowedIPs: ips}
	}
	lines := func(ls ...string) string {
		if len(ls) == 0 {
			return ""
		}
		return strings.Join(ls, "\n") + "\n"
	}
	pk := func(k Key) string { return "public_key=" + k.hex() }
	var noEP netip.AddrPort

	tests := []struct {
		name    string
		live    []PeerStatus
		desired []Peer
		written map[Key]netip.AddrPort
		want    string
	}{
		{"nothing", nil, nil, nil, ""},
		{"add dialled peer", nil, []Peer{peer(k1, ep1, 15*time.Second, h1)}, nil,
			lines(pk(k1), "endpoint=192.0.2.1:51820", "allowed_ip=100.64.0.1/32", "persistent_keepalive_interval=15")},
		{"add passive peer", nil, []Peer{peer(k2, noEP, 0, h2, p24)}, nil,
			lines(pk(k2), "allowed_ip=100.64.0.2/32", "allowed_ip=10.1.0.0/24")},
		{"unchanged", []PeerStatus{live(k1, ep1, 15*time.Second, h1)}, []Peer{peer(k1, ep1, 15*time.Second, h1)},
			map[Key]netip.AddrPort{k1: ep1}, ""},
		{"remove", []PeerStatus{live(k1, ep1, 0, h1), live(k2, noEP, 0, h2)}, []Peer{peer(k2, noEP, 0, h2)},
			map[Key]netip.AddrPort{k1: ep1}, lines(pk(k1), "remove=true")},
		{"allowed IPs changed in place", []PeerStatus{live(k2, noEP, 0, h2, p24)}, []Peer{peer(k2, noEP, 0, h1, h2)}, nil,
			lines(pk(k2), "update_only=true", "allowed_ip=100.64.0.1/32", "allowed_ip=-10.1.0.0/24")},
		{"keepalive on", []PeerStatus{live(k1, ep1, 0, h1)}, []Peer{peer(k1, ep1, 15*time.Second, h1)}, map[Key]netip.AddrPort{k1: ep1},
			lines(pk(k1), "update_only=true", "persistent_keepalive_interval=15")},
		{"keepalive changed re-arms", []PeerStatus{live(k1, ep1, 25*time.Second, h1)}, []Peer{peer(k1, ep1, 15*time.Second, h1)}, map[Key]netip.AddrPort{k1: ep1},
			lines(pk(k1), "update_only=true", "persistent_keepalive_interval=0", "persistent_keepalive_interval=15")},
		{"keepalive off", []PeerStatus{live(k1, ep1, 25*time.Second, h1)}, []Peer{peer(k1, ep1, 0, h1)}, map[Key]netip.AddrPort{k1: ep1},
			lines(pk(k1), "update_only=true", "persistent_keepalive_interval=0")},
		{"roamed away from the configured endpoint: left alone", []PeerStatus{live(k1, roamed, 0, h1)}, []Peer{peer(k1, ep1, 0, h1)},
			map[Key]netip.AddrPort{k1: ep1}, ""},
		{"passive peer with a learned endpoint: left alone", []PeerStatus{live(k2, roamed, 0, h2)}, []Peer{peer(k2, noEP, 0, h2)},
			map[Key]netip.AddrPort{k2: noEP}, ""},
		{"endpoint already where we want it", []PeerStatus{live(k1, ep2, 0, h1)}, []Peer{peer(k1, ep2, 0, h1)},
			map[Key]netip.AddrPort{k1: ep1}, ""},
		{"endpoint moved: peer recreated", []PeerStatus{live(k1, ep1, 15*time.Second, h1)}, []Peer{peer(k1, ep2, 15*time.Second, h1)},
			map[Key]netip.AddrPort{k1: ep1},
			lines(pk(k1), "remove=true", pk(k1), "endpoint=192.0.2.2:51820", "allowed_ip=100.64.0.1/32", "persistent_keepalive_interval=15")},
		{"prefix moves between peers: removal before addition",
			[]PeerStatus{live(k1, noEP, 0, h1, p24)}, []Peer{peer(k2, noEP, 0, h2, p24)}, nil,
			lines(pk(k1), "remove=true", pk(k2), "allowed_ip=100.64.0.2/32", "allowed_ip=10.1.0.0/24")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, summary := peerDelta(tt.live, tt.desired, tt.written)
			if got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
			if (got == "") != (len(summary) == 0) {
				t.Errorf("summary %q does not match the change %q", summary, got)
			}
			if s := containsAny(strings.Join(summary, " "), k1.hex(), k2.hex(), k1.String(), k2.String()); s != "" {
				t.Errorf("summary %q carries a whole key", summary)
			}
		})
	}
}
