package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/internal/certs/namedtest"
)

// TestACMEControlOwnCertificate: Control in ACME mode with
// --public-hostname gets its own certificate from Pebble. Pebble's
// TLS-ALPN-01 validation goes to Control's own HTTPS listener (there is
// no gateway at all, and its HTTP-01 port leads nowhere), and a client
// trusting only Pebble's root then reaches the API by that name.
func TestACMEControlOwnCertificate(t *testing.T) {
	pebbleBinary(t)
	certsDir := pebbleCerts(t)
	resolver, dnsAddr := startLoopbackDNS(t)
	const hostname = "control.example.test"
	controlPort, pebblePort := freePort(t), freePort(t)
	_, mgmt, orders, _, logPath := startPebbleLog(t, pebblePort, dnsAddr, freePort(t), controlPort, 0)
	cp := startHTTPSControl(t, fmt.Sprintf("127.0.0.1:%d", controlPort), "--certificates", "acme",
		"--acme-directory", fmt.Sprintf("https://localhost:%d/dir", pebblePort), "--acme-email", "ops@example.com",
		"--acme-ca-file", filepath.Join(certsDir, "pebble.minica.pem"), "--public-hostname", hostname)
	pool := pebbleRoot(t, mgmt)
	start := time.Now()
	waitControlTrusted(t, cp, hostname, pool, 60*time.Second)
	t.Logf("control serves a certificate from the CA %v after it was ready", time.Since(start).Round(time.Millisecond))
	if n := orders(); n != 1 {
		t.Errorf("orders at the CA: got %d, want 1", n)
	}
	if resolver.count(hostname) == 0 {
		t.Errorf("DNS questions for %s: got none, want the CA to have looked it up to validate", hostname)
	}
	if log := mustRead(t, logPath); strings.Contains(log, "Attempting to validate w/ HTTP") {
		t.Errorf("pebble log: an HTTP-01 validation was attempted, want TLS-ALPN-01 at Control's listener")
	}
}

// TestACMEControlOwnCertificateByDNS01: with a DNS provider, Control's
// own name is validated by DNS-01 through BIND, and none of Control's
// ports needs to be reachable by the CA (Pebble's TLS-ALPN-01 and
// HTTP-01 ports lead nowhere).
func TestACMEControlOwnCertificateByDNS01(t *testing.T) {
	pebbleBinary(t)
	certsDir := pebbleCerts(t)
	ns := namedtest.Start(t, "example.test")
	const hostname = "control.example.test"
	pebblePort := freePort(t)
	_, mgmt, orders, _, logPath := startPebbleLog(t, pebblePort, ns.Addr, freePort(t), freePort(t), 0)
	cp := startHTTPSControl(t, fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--certificates", "acme",
		"--acme-directory", fmt.Sprintf("https://localhost:%d/dir", pebblePort), "--acme-email", "ops@example.com",
		"--acme-ca-file", filepath.Join(certsDir, "pebble.minica.pem"), "--public-hostname", hostname,
		"--acme-dns-provider", "rfc2136", "--acme-dns-server", ns.Addr,
		"--acme-dns-tsig-key", "kakuremichi-test", "--acme-dns-tsig-secret-file", ns.SecretFile)
	waitControlTrusted(t, cp, hostname, pebbleRoot(t, mgmt), 60*time.Second)
	if n := orders(); n != 1 {
		t.Errorf("orders at the CA: got %d, want 1", n)
	}
	if log := mustRead(t, logPath); strings.Contains(log, "Attempting to validate w/ HTTP") {
		t.Errorf("pebble log: an HTTP-01 validation was attempted, want DNS-01 only")
	}
}
