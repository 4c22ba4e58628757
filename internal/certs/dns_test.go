package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/certs/namedtest"
)

// txt asks server for the TXT values of name.
func txt(t *testing.T, server, name string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	resp, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(m, server)
	if err != nil {
		t.Fatalf("TXT %s at %s: got %v, want an answer", name, server, err)
	}
	var out []string
	for _, rr := range resp.Answer {
		if r, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(r.Txt, ""))
		}
	}
	return out
}

// TestRFC2136AgainstBIND: the provider adds a challenge record to a real
// BIND zone with a TSIG-signed update, finds the zone by itself, waits
// until it is served, keeps a second value beside the first (a name and
// its wildcard share the record name), and removes only its own. A wrong
// secret is refused by the server, and the error says so without
// quoting it.
func TestRFC2136AgainstBIND(t *testing.T) {
	ns := namedtest.Start(t, "example.test")
	ctx := testCtx(t)
	p, err := NewRFC2136(RFC2136Config{Server: ns.Addr, TSIGKey: "kakuremichi-test", TSIGSecret: ns.Secret, PropagationTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("NewRFC2136: got %v, want nil", err)
	}
	const name = "_acme-challenge.app.example.test."
	for _, v := range []string{"first-value", "second-value"} {
		if err := p.Present(ctx, name, v); err != nil {
			t.Fatalf("Present %s: got %v, want nil", v, err)
		}
		if err := p.Wait(ctx, name, v); err != nil {
			t.Fatalf("Wait %s: got %v, want nil", v, err)
		}
	}
	if got := txt(t, ns.Addr, name); len(got) != 2 {
		t.Fatalf("TXT after two Presents: got %q, want both values", got)
	}
	if err := p.CleanUp(ctx, name, "first-value"); err != nil {
		t.Fatalf("CleanUp: got %v, want nil", err)
	}
	if got := txt(t, ns.Addr, name); len(got) != 1 || got[0] != "second-value" {
		t.Fatalf("TXT after CleanUp of one: got %q, want [second-value]", got)
	}

	wrong := base64.StdEncoding.EncodeToString([]byte("not the secret of this key at all"))
	bad, err := NewRFC2136(RFC2136Config{Server: ns.Addr, Zone: "example.test", TSIGKey: "kakuremichi-test", TSIGSecret: wrong})
	if err != nil {
		t.Fatal(err)
	}
	err = bad.Present(ctx, name, "x")
	if err == nil || strings.Contains(err.Error(), wrong) {
		t.Fatalf("Present with a wrong secret: got %v, want a refusal that does not quote the secret", err)
	}
	short, _ := NewRFC2136(RFC2136Config{Server: ns.Addr, TSIGKey: "kakuremichi-test", TSIGSecret: ns.Secret, PropagationTimeout: time.Second})
	if err := short.Wait(ctx, "_acme-challenge.none.example.test.", "never"); err == nil {
		t.Fatalf("Wait for a record never added: got nil, want a timeout")
	}
}

func TestRFC2136ConfigErrorsNameTheFlag(t *testing.T) {
	for _, tt := range []struct {
		cfg  RFC2136Config
		want string
	}{
		{RFC2136Config{Server: "ns1.example.com"}, "--acme-dns-server"},
		{RFC2136Config{Server: "ns1.example.com:53", TSIGAlgorithm: "md5"}, "--acme-dns-tsig-algorithm"},
		{RFC2136Config{Server: "ns1.example.com:53", TSIGKey: "k"}, "--acme-dns-tsig-secret-file"},
		{RFC2136Config{Server: "ns1.example.com:53", TSIGKey: "k", TSIGSecret: "not base64!"}, "not base64"},
	} {
		_, err := NewRFC2136(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewRFC2136(%+v): got %v, want an error naming %s", tt.cfg, err, tt.want)
		}
		if err != nil && tt.cfg.TSIGSecret != "" && strings.Contains(err.Error(), tt.cfg.TSIGSecret) {
			t.Errorf("NewRFC2136: the error %q quotes the secret", err)
		}
	}
}

// TestWildcardWithoutDNSProviderIsNotOrdered: with no DNS provider the
// ACME issuer refuses a wildcard before contacting the CA, and the
// certificate's status says why.
func TestWildcardWithoutDNSProviderIsNotOrdered(t *testing.T) {
	st := openStore(t)
	ctx := testCtx(t)
	// A directory nobody listens on: any contact would fail differently.
	iss := NewACMEIssuer(ACMEConfig{Store: st, Directory: "https://127.0.0.1:1/dir"})
	defer iss.Close()
	create(t, st, tunnel("wild", "*.example.com", "http://127.0.0.1:8080", true))
	c := New(Config{Store: st, Issuer: iss})
	if _, err := c.Pass(ctx, iss); err != nil {
		t.Fatalf("Pass: got %v, want nil", err)
	}
	cert := certificates(t, st)["*.example.com"]
	if cert == nil {
		t.Fatalf("certificates: got %v, want one for *.example.com", keys(certificates(t, st)))
	}
	ready := api.FindCondition(cert.Status.Conditions, api.ConditionReady)
	if cert.Status.State != api.CertificateFailed || ready == nil || ready.Reason != api.ReasonWildcardNeedsDNS01 || !strings.Contains(ready.Message, "--acme-dns-provider") {
		t.Fatalf("status: got %q %+v, want Failed with reason %s naming --acme-dns-provider", cert.Status.State, ready, api.ReasonWildcardNeedsDNS01)
	}
}

// TestInternalCAIssuesWildcards: the internal CA signs a wildcard
// directly, and it verifies for a single label under it only.
func TestInternalCAIssuesWildcards(t *testing.T) {
	st := openStore(t)
	ctx := testCtx(t)
	create(t, st, tunnel("wild", "*.example.com", "http://127.0.0.1:8080", true))
	c := New(Config{Store: st})
	ca, err := LoadOrCreateCA(ctx, st, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pass(ctx, c.InternalIssuer(ca)); err != nil {
		t.Fatalf("Pass: got %v, want nil", err)
	}
	kp := pairs(t, st)["*.example.com"]
	if kp == nil {
		t.Fatalf("key pairs: got %v, want *.example.com", keys(pairs(t, st)))
	}
	cert, err := tls.X509KeyPair([]byte(kp.ChainPEM), []byte(kp.KeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.RootPEM())
	for host, ok := range map[string]bool{"a.example.com": true, "b.example.com": true, "a.b.example.com": false, "example.com": false} {
		_, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool})
		if (err == nil) != ok {
			t.Errorf("wildcard certificate for %s: got %v, want valid=%v", host, err, ok)
		}
	}
}
