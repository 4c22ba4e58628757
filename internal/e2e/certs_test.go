package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/certs"
)

// trustingClient sends every request to addr, like DNS pointing at one
// gateway, and trusts only the roots in pool: `curl --cacert`.
func trustingClient(addr string, pool *x509.CertPool) *http.Client {
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: dial,
		TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
}

// servedSerial returns the serial (hex) of the certificate a gateway
// presents for sni, without verifying it.
func servedSerial(addr, sni string) (string, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return fmt.Sprintf("%x", conn.ConnectionState().PeerCertificates[0].SerialNumber), nil
}

// TestInternalCACertificateOnEveryGateway: Control in internal CA mode and
// three gateways as processes. A new tunnel hostname gets one certificate
// that every gateway serves (same serial), which a client trusting only
// the root exported by `kakuremichictl get ca -o pem` accepts; a gateway
// restarted while Control is down serves it from its cache; once the
// tunnel is deleted no gateway serves it any more.
func TestInternalCACertificateOnEveryGateway(t *testing.T) {
	c := newCluster(t, "--certificates", "internal")
	for _, g := range []string{"gw1", "gw2", "gw3"} {
		c.addGateway(g)
	}
	c.addApp("app-a")
	c.addAgent("home")
	c.waitNodesReady(30 * time.Second)

	home := t.TempDir()
	tokenFile := filepath.Join(home, "token")
	if err := os.WriteFile(tokenFile, []byte(c.token), 0o600); err != nil {
		t.Fatal(err)
	}
	rootPEM, errOut, code := ctl(t, home, "", "--server", c.control.url(), "--token-file", tokenFile, "get", "ca", "-o", "pem")
	if code != 0 {
		t.Fatalf("kakuremichictl get ca -o pem: got exit %d %s, want 0", code, errOut)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(rootPEM)) {
		t.Fatalf("get ca -o pem: got %q, want a PEM certificate", rootPEM)
	}

	const host = "secure.example.com"
	c.applyTunnel("web", host, "home", c.apps["app-a"])
	applied := time.Now()
	serials := map[string]string{}
	for _, g := range c.gateways {
		client := trustingClient(g.httpsAddr, pool)
		var last string
		for deadline := time.Now().Add(15 * time.Second); ; {
			code, body, err := get(client, "https://"+host+"/")
			if err == nil && code == 200 && strings.Contains(body, "Hello from app-a") {
				break
			}
			last = fmt.Sprintf("%d %v", code, err)
			if time.Now().After(deadline) {
				t.Fatalf("%s: https://%s trusted by the exported root: got %s after 15s, want 200 from app-a", g.name, host, last)
			}
			time.Sleep(100 * time.Millisecond)
		}
		s, err := servedSerial(g.httpsAddr, host)
		if err != nil {
			t.Fatalf("%s: handshake: got %v, want a certificate", g.name, err)
		}
		serials[g.name] = s
	}
	t.Logf("all three gateways serve a trusted certificate %v after the tunnel was created", time.Since(applied).Round(time.Millisecond))
	for name, s := range serials {
		if s != serials["gw1"] {
			t.Fatalf("serials: got %v, want one serial on every gateway (%s differs)", serials, name)
		}
	}
	_, out := c.api("GET", "/certificates/"+api.CertificateName(host), "")
	var cert api.Certificate
	decodeJSON(t, out, &cert)
	if cert.Status.State != api.CertificateIssued || cert.Status.Serial != serials["gw1"] || cert.Status.NotAfter == nil {
		t.Fatalf("Certificate status: got state %q serial %q notAfter %v, want Issued, %s and a notAfter",
			cert.Status.State, cert.Status.Serial, cert.Status.NotAfter, serials["gw1"])
	}

	// Plain HTTP is redirected to HTTPS, except the ACME path.
	noFollow := gatewayClient(c.gateways[0].httpAddr, 2*time.Second)
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	_, httpsPort, _ := net.SplitHostPort(c.gateways[0].httpsAddr)
	resp, err := noFollow.Get("http://" + host + "/some/path?q=1")
	if err != nil {
		t.Fatalf("http://%s: got %v, want a redirect", host, err)
	}
	resp.Body.Close()
	if want := "https://" + host + ":" + httpsPort + "/some/path?q=1"; resp.StatusCode != 308 || resp.Header.Get("Location") != want {
		t.Fatalf("http://%s/some/path?q=1: got %d %q, want 308 %q", host, resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if code, _, err := get(noFollow, "http://"+host+"/.well-known/acme-challenge/none"); err != nil || code != 404 {
		t.Fatalf("ACME path over http: got %d %v, want 404 and no redirect", code, err)
	}

	// A name that is not ours gets no certificate the root vouches for.
	if _, _, err := get(trustingClient(c.gateways[0].httpsAddr, pool), "https://not-ours.example.org/"); err == nil {
		t.Fatalf("https://not-ours.example.org: got a trusted handshake, want a certificate error")
	}

	// A second tunnel stays, for the restart below.
	const kept = "kept.example.com"
	c.applyTunnel("kept", kept, "home", c.apps["app-a"])
	gw := c.gateways[1]
	var keptSerial string
	for deadline := time.Now().Add(15 * time.Second); ; {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", gw.httpsAddr, &tls.Config{ServerName: kept, RootCAs: pool})
		if err == nil {
			keptSerial = fmt.Sprintf("%x", conn.ConnectionState().PeerCertificates[0].SerialNumber)
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: verified handshake for %s got %v after 15s, want nil", gw.name, kept, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if code, out := c.api("DELETE", "/tunnels/web", ""); code != 200 {
		t.Fatalf("delete tunnel: got %d %s, want 200", code, out)
	}
	for _, g := range c.gateways {
		var last string
		for deadline := time.Now().Add(15 * time.Second); ; {
			s, err := servedSerial(g.httpsAddr, host)
			if err == nil && s != serials["gw1"] {
				break
			}
			last = fmt.Sprintf("serial %q, %v", s, err)
			if time.Now().After(deadline) {
				t.Fatalf("%s after the tunnel was deleted: got %s after 15s, want its certificate no longer served", g.name, last)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		code, _ := c.api("GET", "/certificates/"+api.CertificateName(host), "")
		if code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Certificate after the tunnel was deleted: got %d after 15s, want 404", code)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Control down, a gateway restarted: it serves the same certificate
	// from the slice it kept on disk.
	c.control.kill()
	gw.stop()
	gw.start()
	if s, err := servedSerial(gw.httpsAddr, kept); err != nil || s != keptSerial {
		t.Fatalf("%s restarted with Control down: got serial %q (%v), want %s", gw.name, s, err, keptSerial)
	}
	// Trusted by the root alone (the data path through the restarted
	// process is the data plane's promise, tested elsewhere).
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", gw.httpsAddr, &tls.Config{ServerName: kept, RootCAs: pool})
	if err != nil {
		t.Fatalf("%s restarted with Control down: verified handshake got %v, want nil", gw.name, err)
	}
	conn.Close()
}

// startHTTPSControl starts Control on a port chosen beforehand (addr),
// serving HTTPS: the harness's plain-HTTP readiness check does not
// apply, so this one waits for /readyz over TLS without verifying.
func startHTTPSControl(t *testing.T, addr string, extra ...string) *controlProc {
	t.Helper()
	dir := t.TempDir()
	cp := &controlProc{t: t, dataDir: filepath.Join(dir, "data"), addr: addr, logPath: filepath.Join(dir, "control.log"),
		extra: extra, readyURL: "-"}
	cp.start()
	t.Cleanup(cp.kill)
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if code, _, err := get(insecure, "https://"+addr+"/readyz"); err == nil && code == 200 {
			return cp
		}
		if time.Now().After(deadline) {
			t.Fatalf("control over HTTPS at %s: not ready after 30s:\n%s", addr, cp.logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitControlTrusted waits until Control, reached by hostname (mapped to
// its loopback address), presents a certificate pool trusts, then checks
// an authenticated API call over it, and returns the certificate's
// serial and the client.
func waitControlTrusted(t *testing.T, cp *controlProc, hostname string, pool *x509.CertPool, within time.Duration) (string, *http.Client) {
	t.Helper()
	_, port, _ := net.SplitHostPort(cp.addr)
	client := trustingClient(cp.addr, pool)
	base := "https://" + hostname + ":" + port
	var last string
	for deadline := time.Now().Add(within); ; {
		code, _, err := get(client, base+"/readyz")
		if err == nil && code == 200 {
			break
		}
		last = fmt.Sprintf("%d %v", code, err)
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz trusting only the exported root: got %s after %v, want 200\ncontrol log:\n%s", base, last, within, cp.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	req, _ := http.NewRequest("GET", base+prefix+"/certificates/"+certs.ControlCertificate, nil)
	req.Header.Set("Authorization", "Bearer "+cp.adminToken())
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET the certificate of %s over HTTPS: got %v, want 200", hostname, err)
	}
	defer resp.Body.Close()
	var cert api.Certificate
	if err := json.NewDecoder(resp.Body).Decode(&cert); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET the certificate of %s over HTTPS: got %d %v, want 200 and the Certificate", hostname, resp.StatusCode, err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", cp.addr, &tls.Config{ServerName: hostname, RootCAs: pool})
	if err != nil {
		t.Fatalf("verified handshake with %s: got %v, want nil", hostname, err)
	}
	serial := fmt.Sprintf("%x", conn.ConnectionState().PeerCertificates[0].SerialNumber)
	conn.Close()
	if cert.Status.State != api.CertificateIssued || cert.Status.Serial != serial {
		t.Fatalf("Certificate of %s: got state %q serial %q, want Issued and the served %s", hostname, cert.Status.State, cert.Status.Serial, serial)
	}
	return serial, client
}

// TestControlServesItsOwnCertificate: with --public-hostname and the
// internal CA, Control serves its API over HTTPS with a certificate for
// that name, and a client that trusts only the root exported by
// `kakuremichictl get ca -o pem` reaches the API by the name. After a
// restart the same certificate is served (it lives in the store).
func TestControlServesItsOwnCertificate(t *testing.T) {
	const hostname = "control.example.test"
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp := startHTTPSControl(t, addr, "--certificates", "internal", "--public-hostname", hostname)

	// The root is public; fetching it is the one step that cannot verify
	// anything yet, exactly like `curl -k .../certificates/v1/ca.pem`.
	home := t.TempDir()
	tokenFile := filepath.Join(home, "token")
	if err := os.WriteFile(tokenFile, []byte(cp.adminToken()), 0o600); err != nil {
		t.Fatal(err)
	}
	rootPEM, errOut, code := ctl(t, home, "", "--server", "https://"+addr, "--insecure-skip-tls-verify", "--token-file", tokenFile, "get", "ca", "-o", "pem")
	if code != 0 {
		t.Fatalf("kakuremichictl get ca -o pem: got exit %d %s, want 0", code, errOut)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(rootPEM)) {
		t.Fatalf("get ca -o pem: got %q, want a PEM certificate", rootPEM)
	}
	serial, _ := waitControlTrusted(t, cp, hostname, pool, 15*time.Second)

	cp.stop()
	cp.start()
	if got, _ := waitControlTrusted(t, cp, hostname, pool, 15*time.Second); got != serial {
		t.Fatalf("after a restart: serial %s, want the stored %s", got, serial)
	}
}
