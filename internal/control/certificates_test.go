package control

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
