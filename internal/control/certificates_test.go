package control

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/store"
)

func TestOwnCertificateOnlyWithoutExplicitFiles(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want bool
	}{
		{Config{PublicHostname: "ctl.example.com", Certificates: CertificatesInternal}, true},
		{Config{PublicHostname: "ctl.example.com", Certificates: CertificatesACME}, true},
		{Config{PublicHostname: "ctl.example.com", Certificates: CertificatesOff}, false},
		{Config{PublicHostname: "ctl.example.com", Certificates: CertificatesACME, TLSCertFile: "c.pem", TLSKeyFile: "k.pem"}, false},
		{Config{Certificates: CertificatesInternal}, false},
	} {
		if got := ownCertificate(tt.cfg); got != tt.want {
			t.Errorf("ownCertificate(%+v): got %v, want %v", tt.cfg, got, tt.want)
		}
	}
}

func TestCertificateConfigErrorsNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	secret := filepath.Join(dir, "secret")
	os.WriteFile(empty, nil, 0o600)
	os.WriteFile(secret, []byte("c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n"), 0o600)
	acme := func(d DNSSettings, challenges ...string) Config {
		return Config{Certificates: CertificatesACME, ACME: ACMESettings{DNS: d, Challenges: challenges}}
	}
	for _, tt := range []struct {
		cfg  Config
		want string // "" = valid
	}{
		{Config{PublicHostname: "Ctl.Example.com.", Certificates: CertificatesInternal}, ""},
		{Config{PublicHostname: "*.example.com"}, "--public-hostname"},
		{Config{PublicHostname: "localhost"}, "--public-hostname"},
		{acme(DNSSettings{}), ""},
		{acme(DNSSettings{Server: "ns:53"}), "--acme-dns-provider"},
		{acme(DNSSettings{Provider: "route53"}), "--acme-dns-provider"},
		{acme(DNSSettings{Provider: "rfc2136"}), "--acme-dns-server"},
		{acme(DNSSettings{Provider: "rfc2136", Server: "ns:53", TSIGKey: "k", TSIGSecretFile: filepath.Join(dir, "missing")}), "--acme-dns-tsig-secret-file"},
		{acme(DNSSettings{Provider: "rfc2136", Server: "ns:53", TSIGKey: "k", TSIGSecretFile: empty}), "empty"},
		{acme(DNSSettings{Provider: "rfc2136", Server: "ns:53", TSIGKey: "k", TSIGSecretFile: secret}), ""},
		{acme(DNSSettings{Provider: "rfc2136", Server: "ns:53", TSIGKey: "k", TSIGSecretFile: secret}, "dns-01", "tls-alpn-01"), ""},
		{acme(DNSSettings{}, "dns-01"), "--acme-challenges"},
		{acme(DNSSettings{}, "http-02"), "--acme-challenges"},
	} {
		cfg := tt.cfg
		err := checkCertificateConfig(&cfg)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("checkCertificateConfig(%+v): got %v, want %q", tt.cfg, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "c2VjcmV0") {
			t.Errorf("checkCertificateConfig: %v quotes the secret", err)
		}
	}
	cfg := Config{PublicHostname: "Ctl.Example.com."}
	if err := checkCertificateConfig(&cfg); err != nil || cfg.PublicHostname != "ctl.example.com" {
		t.Errorf("public hostname: got %q %v, want ctl.example.com", cfg.PublicHostname, err)
	}
}

// TestBridgeNeverSeesTunnelsOfControlsName: the bridge's tunnel source,
// on the real store, lists and watches every tunnel but those naming
// Control's public hostname; one renamed to it is gone as if deleted,
// and back when renamed again.
func TestBridgeNeverSeesTunnelsOfControlsName(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const ctl = "ctl.example.com"
	mk := func(name, host string) *api.Tunnel {
		return &api.Tunnel{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tunnel"}, Metadata: api.ObjectMeta{Name: name},
			Spec: api.TunnelSpec{Hostname: host, Agent: "home", Target: "http://127.0.0.1:9"}}
	}
	for _, tn := range []*api.Tunnel{mk("hijack", ctl), mk("web", "web.example.com")} {
		if _, err := st.Create(ctx, tn, store.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	src := withoutHostname(source{a: storeAdapter{st: st}, kind: "Tunnel"}, ctl)
	objs, rev, err := src.List(ctx)
	if err != nil || len(objs) != 1 || objs[0].GetMeta().Name != "web" {
		t.Fatalf("List: got %d objects %v, want only web", len(objs), err)
	}
	events, err := src.Watch(ctx, rev+1)
	if err != nil {
		t.Fatal(err)
	}
	next := func() reconcile.Event {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case <-ctx.Done():
			t.Fatal("no watch event")
		}
		return reconcile.Event{}
	}
	rename := func(name, host string) {
		t.Helper()
		obj, err := st.Get(ctx, "Tunnel", name)
		if err != nil {
			t.Fatal(err)
		}
		tn := obj.(*api.Tunnel)
		tn.Spec.Hostname = host
		if _, err := st.Update(ctx, tn, store.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rename("web", ctl)
	if ev := next(); ev.Type != api.Deleted || ev.Object.GetMeta().Name != "web" {
		t.Fatalf("web renamed to Control's name: got %s %s, want Deleted web", ev.Type, ev.Object.GetMeta().Name)
	}
	rename("web", "web.example.com")
	if ev := next(); ev.Type != api.Modified || ev.Object.GetMeta().Name != "web" {
		t.Fatalf("web renamed back: got %s %s, want Modified web (an upsert)", ev.Type, ev.Object.GetMeta().Name)
	}
	if _, err := st.Create(ctx, mk("again", ctl), store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Type != api.Deleted || ev.Object.GetMeta().Name != "again" {
		t.Fatalf("a new tunnel of Control's name: got %s %s, want Deleted again (nothing to add)", ev.Type, ev.Object.GetMeta().Name)
	}
}
