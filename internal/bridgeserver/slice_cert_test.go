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
			tun("db", "db.example.com", "tcp://localhost:5432", 5432), tun("plain", "plain.example.com", "http://localhost:80", 0),
			tun("spec-off", "spec-off.example.com", "http://localhost:80", 0), tun("spec-on", "spec-on.example.com", "http://localhost:80", 0)},
		Certificates: []api.Object{kp("web.example.com"), kp("db.example.com"), kp("gone.example.com"), kp("plain.example.com"),
			kp("spec-off.example.com"), kp("spec-on.example.com")},
		Challenges: []api.Object{&api.ACMEChallenge{Metadata: api.ObjectMeta{Name: "t1"}, Hostname: "web.example.com", Token: "t1", KeyAuthorization: "k1"},
			&api.ACMEChallenge{Metadata: api.ObjectMeta{Name: "t2"}, Hostname: "evil.example.org", Token: "t2", KeyAuthorization: "k2"},
			&api.ACMEChallenge{Metadata: api.ObjectMeta{Name: "alpn.web.example.com"}, Type: "tls-alpn-01", Hostname: "web.example.com",
				Token: "alpn.web.example.com", CertPEM: "c", KeyPEM: "k"}},
	}
	st.Tunnels[2].GetMeta().Annotations = map[string]string{api.AnnotationHTTPRedirect: "false"}
	off, on := false, true
	st.Tunnels[3].(*api.Tunnel).Spec.HTTPRedirect = &off
	// The spec field wins over the older annotation.
	st.Tunnels[4].(*api.Tunnel).Spec.HTTPRedirect = &on
	st.Tunnels[4].GetMeta().Annotations = map[string]string{api.AnnotationHTTPRedirect: "false"}
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
	if c := gs[bridge.CertificateKey("web.example.com")].Certificate; c == nil || !c.RedirectHTTP {
		t.Errorf("web.example.com redirect: got %+v, want RedirectHTTP by default", c)
	}
	if c := gs[bridge.CertificateKey("plain.example.com")].Certificate; c == nil || c.RedirectHTTP {
		t.Errorf("plain.example.com redirect: got %+v, want none: its tunnel opted out", c)
	}
	if c := gs[bridge.CertificateKey("spec-off.example.com")].Certificate; c == nil || c.RedirectHTTP {
		t.Errorf("spec-off.example.com redirect: got %+v, want none: spec.httpRedirect is false", c)
	}
	if c := gs[bridge.CertificateKey("spec-on.example.com")].Certificate; c == nil || !c.RedirectHTTP {
		t.Errorf("spec-on.example.com redirect: got %+v, want it: spec.httpRedirect true wins over the annotation", c)
	}
	if it, ok := gs[bridge.ChallengeKey("t1")]; !ok || it.Challenge == nil || it.Challenge.KeyAuthorization != "k1" {
		t.Errorf("challenge of a routed hostname: got %+v, want it delivered", it.Challenge)
	}
	if it, ok := gs[bridge.TLSALPNChallengeKey("web.example.com")]; !ok || it.Challenge == nil || it.Challenge.CertPEM != "c" {
		t.Errorf("tls-alpn-01 challenge: got %+v, want it delivered under its hostname", it.Challenge)
	}
	if _, ok := gs[bridge.ChallengeKey("t2")]; ok {
		t.Errorf("challenge of a hostname no tunnel routes: got it delivered, want it kept back")
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
