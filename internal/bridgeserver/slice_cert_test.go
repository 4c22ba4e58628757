package bridgeserver

import (
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// TestCertificatesOnlyReachGatewaysWithTheirRoute checks that a key
// reaches gateways only, and only for a hostname they route over http.
func TestCertificatesOnlyReachGatewaysWithTheirRoute(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tun := func(name, host, target string, port int) api.Object {
		return &api.Tunnel{Metadata: api.ObjectMeta{Name: name, CreationTimestamp: created},
			Spec: api.TunnelSpec{Hostname: host, Agent: "home", Target: target, PublicPort: port}}
	}
	kp := func(host string) api.Object {
		return &api.CertificateKeyPair{Metadata: api.ObjectMeta{Name: host}, Hostname: host,
			ChainPEM: "chain-" + host, KeyPEM: "key-" + host, Serial: "s-" + host}
	}
	st := State{
		Gateways: []api.Object{&api.Gateway{Metadata: api.ObjectMeta{Name: "gw1"}}},
		Agents:   []api.Object{&api.Agent{Metadata: api.ObjectMeta{Name: "home"}}},
		Tunnels: []api.Object{tun("web", "web.example.com", "http://localhost:80", 0),
			tun("db", "db.example.com", "tcp://localhost:5432", 5432)},
		Certificates: []api.Object{kp("web.example.com"), kp("db.example.com"), kp("gone.example.com")},
	}
	gs, ok := GatewaySlice(st, "gw1")
	if !ok {
		t.Fatalf("GatewaySlice: got no slice, want one")
	}
	tests := []struct {
		key  string
		want bool
	}{
		{bridge.CertificateKey("web.example.com"), true},
		{bridge.CertificateKey("db.example.com"), false},   // tcp: no TLS at the gateway
		{bridge.CertificateKey("gone.example.com"), false}, // no tunnel: the key stays home
	}
	for _, tt := range tests {
		it, got := gs[tt.key]
		if got != tt.want {
			t.Errorf("gateway slice has %s: got %v, want %v", tt.key, got, tt.want)
		}
		if got && (it.Certificate == nil || it.Certificate.KeyPEM != "key-web.example.com" || it.Certificate.Serial != "s-web.example.com") {
			t.Errorf("%s: got %+v, want the stored key pair", tt.key, it.Certificate)
		}
	}
	as, ok := AgentSlice(st, "home")
	if !ok {
		t.Fatalf("AgentSlice: got no slice, want one")
	}
	for k, it := range as {
		if it.Certificate != nil {
			t.Errorf("agent slice item %s: got a certificate, want none ever", k)
		}
	}
}
