package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/certs/namedtest"
)

// TestACMEWildcardThroughDNS01: a tunnel for *.example.test, Control in
// ACME mode with BIND as its RFC 2136 DNS provider, and Pebble asking the
// same BIND. One order (DNS-01, the TXT record added with a TSIG-signed
// update and removed afterwards) gives a wildcard certificate that every
// gateway serves for a.example.test and b.example.test alike, trusted by
// Pebble's root, and both names reach the app.
func TestACMEWildcardThroughDNS01(t *testing.T) {
	ns := namedtest.Start(t, "example.test")
	r := startACMECluster(t, acmeOptions{dnsAddr: ns.Addr, controlArgs: []string{
		"--acme-dns-provider", "rfc2136", "--acme-dns-server", ns.Addr,
		"--acme-dns-tsig-key", "kakuremichi-test", "--acme-dns-tsig-secret-file", ns.SecretFile,
		"--acme-dns-propagation-timeout", "20s"}})
	c := r.c
	const wildcard = "*.example.test"
	c.applyTunnel("wild", wildcard, "home", c.apps["app-a"])
	applied := time.Now()
	pool := pebbleRoot(t, r.mgmt)
	serial := waitSerial(t, c, c.gateways[0], "a.example.test", pool, 60*time.Second)
	t.Logf("wildcard certificate served %v after the tunnel was created", time.Since(applied).Round(time.Millisecond))
	for _, g := range c.gateways {
		for _, host := range []string{"a.example.test", "b.example.test"} {
			if got := waitSerial(t, c, g, host, pool, 10*time.Second); got != serial {
				t.Fatalf("%s, %s: serial %s, want the wildcard's %s", g.name, host, got, serial)
			}
			code, body, err := get(trustingClient(g.httpsAddr, pool), "https://"+host+"/")
			if err != nil || code != 200 || !strings.Contains(body, "Hello from app-a") {
				t.Fatalf("%s: https://%s trusted by Pebble's root: got %d %v, want 200 from app-a", g.name, host, code, err)
			}
		}
	}
	if n := r.orders(); n != 1 {
		t.Errorf("orders at the CA: got %d, want 1", n)
	}
	// A deeper name is not covered by the wildcard, nor routed by it.
	if _, _, err := get(trustingClient(c.gateways[0].httpsAddr, pool), "https://x.a.example.test/"); err == nil {
		t.Errorf("https://x.a.example.test: got a trusted handshake, want a certificate error")
	}
	// The wildcard tunnel is Ready like any other: every gateway reports
	// its route.
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, out := c.api("GET", "/tunnels/wild", "")
		var tun api.Tunnel
		decodeJSON(t, out, &tun)
		if api.IsConditionTrue(tun.Status.Conditions, api.ConditionReady) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wildcard tunnel: got %s after 30s, want Ready", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A tunnel for one exact name under the wildcard takes that name
	// over; the other names stay with the wildcard.
	c.addApp("app-b")
	c.applyTunnel("exact", "exact.example.test", "home", c.apps["app-b"])
	for _, tt := range []struct{ host, app string }{{"exact.example.test", "app-b"}, {"other.example.test", "app-a"}} {
		var last string
		for deadline := time.Now().Add(30 * time.Second); ; {
			code, body, err := get(trustingClient(c.gateways[1].httpsAddr, pool), "https://"+tt.host+"/")
			if err == nil && code == 200 && strings.Contains(body, "Hello from "+tt.app) {
				break
			}
			last = fmt.Sprintf("%d %q %v", code, body, err)
			if time.Now().After(deadline) {
				t.Fatalf("https://%s with an exact tunnel beside the wildcard: got %s after 30s, want 200 from %s", tt.host, last, tt.app)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	_, out := c.api("GET", "/certificates/"+api.CertificateName(wildcard), "")
	var cert api.Certificate
	decodeJSON(t, out, &cert)
	if cert.Status.State != api.CertificateIssued || cert.Status.Serial != serial {
		t.Fatalf("Certificate %s: got %s, want Issued with serial %s", wildcard, out, serial)
	}
	// The challenge record is gone from the zone.
	m := new(dns.Msg)
	m.SetQuestion("_acme-challenge.example.test.", dns.TypeTXT)
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, _, err := (&dns.Client{Net: "tcp", Timeout: 3 * time.Second}).Exchange(m, ns.Addr)
		if err == nil && len(resp.Answer) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TXT _acme-challenge.example.test after issuance: got %v %v, want none", resp, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(c.control.logs(), mustRead(t, ns.SecretFile)) {
		t.Errorf("control log: quotes the TSIG secret")
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}
