package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kakuremichi/kakuremichi/api"
)

// pebbleVersion is the Pebble .ci/run installs; its test certificates
// come from the module cache of the same version.
const pebbleVersion = "v2.10.1"

// loopbackDNS answers every A question with 127.0.0.1, as if every name
// pointed at the gateways, and counts the A questions per name. It
// serves UDP and TCP on one port: Pebble asks over TCP.
type loopbackDNS struct {
	udp, tcp *dns.Server
	mu       sync.Mutex // guards asked
	// asked counts A questions by lower-case name without the final dot.
	asked map[string]int
}

func startLoopbackDNS(t *testing.T) (*loopbackDNS, string) {
	t.Helper()
	// The UDP port picked may be taken for TCP: try another.
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if attempt == 20 {
			t.Fatal(err)
		}
	}
	d := &loopbackDNS{asked: map[string]int{}}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		for _, question := range q.Question {
			if question.Qtype != dns.TypeA {
				continue
			}
			name := strings.ToLower(strings.TrimSuffix(question.Name, "."))
			d.mu.Lock()
			d.asked[name]++
			d.mu.Unlock()
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
				A: net.IPv4(127, 0, 0, 1)})
		}
		_ = w.WriteMsg(m)
	})
	d.udp = &dns.Server{PacketConn: pc, Handler: handler}
	d.tcp = &dns.Server{Listener: ln, Handler: handler}
	for _, srv := range []*dns.Server{d.udp, d.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return d, pc.LocalAddr().String()
}

func (d *loopbackDNS) count(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.asked[name]
}

// pebbleBinary finds Pebble on PATH or in $(go env GOPATH)/bin.
func pebbleBinary(t *testing.T) string {
	if p, err := exec.LookPath("pebble"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH", "GOMODCACHE").Output()
	if err == nil {
		gopath := strings.Split(strings.TrimSpace(string(out)), "\n")[0]
		if p := filepath.Join(gopath, "bin", "pebble"); fileExists(p) {
			return p
		}
	}
	t.Skip("pebble is not installed (.ci/run installs it: go install github.com/letsencrypt/pebble/v2/cmd/pebble@" + pebbleVersion + ")")
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// pebbleCerts returns the directory of Pebble's test certificates.
func pebbleCerts(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "github.com/letsencrypt/pebble/v2@"+pebbleVersion, "test/certs")
	if !fileExists(filepath.Join(dir, "localhost", "cert.pem")) {
		t.Skipf("pebble's test certificates are not in the module cache at %s", dir)
	}
	return dir
}

// startPebble runs Pebble on listenPort, validating HTTP-01 at httpPort
// and TLS-ALPN-01 at tlsPort of 127.0.0.1 (every name resolves there
// through dnsAddr), and returns its directory URL and management
// address, a function counting the orders Pebble has taken (from its
// log: the count is the CA's, not ours), and one that stops Pebble.
// validity, when not zero, is the lifetime of what Pebble issues.
func startPebble(t *testing.T, listenPort int, dnsAddr string, httpPort, tlsPort int, validity time.Duration) (dir, mgmt string, orders func() int, stop func()) {
	t.Helper()
	dir, mgmt, orders, stop, _ = startPebbleLog(t, listenPort, dnsAddr, httpPort, tlsPort, validity)
	return dir, mgmt, orders, stop
}

// startPebbleLog is startPebble that also returns the path of Pebble's
// log.
func startPebbleLog(t *testing.T, listenPort int, dnsAddr string, httpPort, tlsPort int, validity time.Duration) (dir, mgmt string, orders func() int, stop func(), logPath string) {
	t.Helper()
	bin, certs := pebbleBinary(t), pebbleCerts(t)
	listen, mgmtAddr := fmt.Sprintf("localhost:%d", listenPort), fmt.Sprintf("localhost:%d", freePort(t))
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmtAddr,
		"certificate": filepath.Join(certs, "localhost", "cert.pem"), "privateKey": filepath.Join(certs, "localhost", "key.pem"),
		"httpPort": httpPort, "tlsPort": tlsPort, "ocspResponderURL": "", "externalAccountBindingRequired": false,
	}}
	if validity > 0 {
		conf["pebble"].(map[string]any)["profiles"] = map[string]any{"default": map[string]any{
			"description": "short-lived, to watch renewals", "validityPeriod": int(validity.Seconds())}}
	}
	data, _ := json.Marshal(conf)
	tmp := t.TempDir()
	path := filepath.Join(tmp, "pebble.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(tmp, "pebble.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", path, "-dnsserver", dnsAddr)
	// No random sleeps before validation and no rejected nonces: the
	// test is about our side. Validation itself is real (never
	// PEBBLE_VA_ALWAYS_VALID).
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(func() {
		stop()
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("pebble log:\n%s", out)
		}
	})
	dir = "https://" + listen + "/dir"
	pool := x509.NewCertPool()
	minica, _ := os.ReadFile(filepath.Join(certs, "pebble.minica.pem"))
	pool.AppendCertsFromPEM(minica)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for deadline := time.Now().Add(15 * time.Second); ; {
		resp, err := hc.Get(dir)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return dir, mgmtAddr, func() int {
					data, _ := os.ReadFile(logf.Name())
					return strings.Count(string(data), "Added order")
				}, stop, logf.Name()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble at %s: got %v after 15s, want its directory", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pebbleRoot fetches the root that signs what Pebble issues.
func pebbleRoot(t *testing.T, mgmt string) *x509.CertPool {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := hc.Get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("pebble root: got %v, want it", err)
	}
	defer resp.Body.Close()
	pemData, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		t.Fatalf("pebble root: got %q, want a PEM certificate", pemData)
	}
	return pool
}

// TestACMEThroughAnyGateway: Control in ACME mode against Pebble, three
// gateways. Pebble validates HTTP-01 at one gateway only, one Control
// never talks to: the challenge reached it through the bridge. A new
// hostname gets one validation (one order), every gateway serves the
// same certificate, and a client trusting only Pebble's root accepts it
// through each.
func TestACMEThroughAnyGateway(t *testing.T) {
	pebbleBinary(t)
	certsDir := pebbleCerts(t)
	resolver, dnsAddr := startLoopbackDNS(t)

	// Pebble's config needs the gateways' ports and Control needs
	// Pebble's URL: Control starts first with a directory on a port
	// picked now, and orders nothing before a tunnel exists.
	c := &cluster{t: t, agents: map[string]*controlProc{}, apps: map[string]string{}}
	pebblePort := freePort(t)
	dirURL := fmt.Sprintf("https://localhost:%d/dir", pebblePort)
	c.control = newControl(t, "--certificates", "acme", "--acme-directory", dirURL, "--acme-email", "ops@example.com",
		"--acme-ca-file", filepath.Join(certsDir, "pebble.minica.pem"))
	c.token = c.control.adminToken()
	c.gwKey = c.apiKey("gateways", api.RoleGateway)
	c.agentKey = c.apiKey("agents", api.RoleAgent)
	for _, g := range []string{"gw1", "gw2", "gw3"} {
		c.addGateway(g)
	}
	c.addApp("app-a")
	c.addAgent("home")
	c.waitNodesReady(30 * time.Second)

	validator := c.gateways[2]
	_, httpPort, _ := net.SplitHostPort(validator.httpAddr)
	_, tlsPort, _ := net.SplitHostPort(validator.httpsAddr)
	var hp, tp int
	fmt.Sscan(httpPort, &hp)
	fmt.Sscan(tlsPort, &tp)
	_, mgmt, orders, _ := startPebble(t, pebblePort, dnsAddr, hp, tp, 0)

	const host = "acme-app.example.com"
	c.applyTunnel("web", host, "home", c.apps["app-a"])
	applied := time.Now()
	pool := pebbleRoot(t, mgmt)
	serials := map[string]string{}
	for _, g := range c.gateways {
		var last string
		for deadline := time.Now().Add(60 * time.Second); ; {
			code, body, err := get(trustingClient(g.httpsAddr, pool), "https://"+host+"/")
			if err == nil && code == 200 && strings.Contains(body, "Hello from app-a") {
				break
			}
			last = fmt.Sprintf("%d %v", code, err)
			if time.Now().After(deadline) {
				_, out := c.api("GET", "/certificates/"+api.CertificateName(host), "")
				t.Fatalf("%s: https://%s trusted by Pebble's root: got %s after 60s, want 200 from app-a; certificate: %s\ncontrol log:\n%s", g.name, host, last, out, c.control.logs())
			}
			time.Sleep(200 * time.Millisecond)
		}
		s, err := servedSerial(g.httpsAddr, host)
		if err != nil {
			t.Fatalf("%s: handshake: got %v, want a certificate", g.name, err)
		}
		serials[g.name] = s
	}
	t.Logf("ACME certificate served by all three gateways %v after the tunnel was created", time.Since(applied).Round(time.Millisecond))
	for name, s := range serials {
		if s != serials["gw1"] {
			t.Fatalf("serials: got %v, want one serial on every gateway (%s differs)", serials, name)
		}
	}
	if n := orders(); n != 1 {
		t.Errorf("orders at the CA: got %d, want exactly 1 for the whole fleet", n)
	}
	if resolver.count(host) == 0 {
		t.Errorf("DNS questions for %s: got none, want the CA to have looked it up to validate", host)
	}
	_, out := c.api("GET", "/certificates/"+api.CertificateName(host), "")
	var cert api.Certificate
	decodeJSON(t, out, &cert)
	if cert.Status.State != api.CertificateIssued || cert.Status.Serial != serials["gw1"] {
		t.Fatalf("Certificate status: got state %q serial %q, want Issued and %s", cert.Status.State, cert.Status.Serial, serials["gw1"])
	}
	// Names that are not a tunnel's never reach the CA: neither a TLS
	// handshake for one, nor a Certificate someone created by hand.
	if _, err := servedSerial(c.gateways[0].httpsAddr, "not-ours.example.org"); err != nil {
		t.Fatalf("handshake for a name not ours: got %v, want the gateway's fallback certificate", err)
	}
	evil := api.CertificateName("evil.example.org")
	body := fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Certificate","metadata":{"name":%q},"spec":{"hostname":"evil.example.org"}}`, evil)
	if code, out := c.api("POST", "/certificates", body); code != 201 {
		t.Fatalf("create a Certificate by hand: got %d %s, want 201", code, out)
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		if code, _ := c.api("GET", "/certificates/"+evil, ""); code == 404 {
			break // Control removed it
		}
		if time.Now().After(deadline) {
			t.Fatalf("a Certificate for a name no tunnel has: still there after 15s, want it removed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := orders(); n != 1 {
		t.Errorf("orders at the CA after requests for names not ours: got %d, want still 1", n)
	}
	if n := resolver.count("evil.example.org") + resolver.count("not-ours.example.org"); n != 0 {
		t.Errorf("CA lookups of names not ours: got %d, want 0", n)
	}

	// The challenge left the gateways once validated.
	code, _, err := get(gatewayClient(validator.httpAddr, 2*time.Second), "http://"+host+"/.well-known/acme-challenge/anything")
	if err != nil || code != 404 {
		t.Errorf("challenge path after issuance: got %d %v, want 404", code, err)
	}
}

// acmeCluster is Control in ACME mode against a Pebble validating at the
// third of three gateways, with an agent and an app.
func acmeCluster(t *testing.T, validity time.Duration) (c *cluster, mgmt string, orders func() int, stopCA func()) {
	t.Helper()
	p := startACMECluster(t, acmeOptions{validity: validity})
	return p.c, p.mgmt, p.orders, p.stopCA
}

// acmeOptions vary startACMECluster.
type acmeOptions struct {
	// validity, when not zero, is the lifetime of what Pebble issues.
	validity time.Duration
	// controlArgs are added to Control's command line.
	controlArgs []string
	// dnsAddr is the DNS server Pebble asks; "" starts a loopbackDNS.
	dnsAddr string
	// closedHTTP points Pebble's HTTP-01 port at a port nobody listens
	// on: only another challenge type can succeed.
	closedHTTP bool
}

// acmeRun is a started ACME cluster.
type acmeRun struct {
	c      *cluster
	mgmt   string
	orders func() int
	stopCA func()
	// log returns Pebble's log so far.
	log func() string
}

func startACMECluster(t *testing.T, o acmeOptions) acmeRun {
	t.Helper()
	pebbleBinary(t)
	certsDir := pebbleCerts(t)
	if o.dnsAddr == "" {
		_, o.dnsAddr = startLoopbackDNS(t)
	}
	c := &cluster{t: t, agents: map[string]*controlProc{}, apps: map[string]string{}}
	pebblePort := freePort(t)
	args := append([]string{"--certificates", "acme", "--acme-directory", fmt.Sprintf("https://localhost:%d/dir", pebblePort),
		"--acme-email", "ops@example.com", "--acme-ca-file", filepath.Join(certsDir, "pebble.minica.pem")}, o.controlArgs...)
	c.control = newControl(t, args...)
	c.token = c.control.adminToken()
	c.gwKey = c.apiKey("gateways", api.RoleGateway)
	c.agentKey = c.apiKey("agents", api.RoleAgent)
	for _, g := range []string{"gw1", "gw2", "gw3"} {
		c.addGateway(g)
	}
	c.addApp("app-a")
	c.addAgent("home")
	c.waitNodesReady(30 * time.Second)
	var hp, tp int
	_, p, _ := net.SplitHostPort(c.gateways[2].httpAddr)
	fmt.Sscan(p, &hp)
	_, p, _ = net.SplitHostPort(c.gateways[2].httpsAddr)
	fmt.Sscan(p, &tp)
	if o.closedHTTP {
		hp = freePort(t)
	}
	r := acmeRun{c: c}
	var logPath string
	_, r.mgmt, r.orders, r.stopCA, logPath = startPebbleLog(t, pebblePort, o.dnsAddr, hp, tp, o.validity)
	r.log = func() string { data, _ := os.ReadFile(logPath); return string(data) }
	return r
}

// waitSerial waits until gw serves host a certificate that pool trusts
// and whose serial is not one of old, and returns its serial.
func waitSerial(t *testing.T, c *cluster, gw *gatewayProc, host string, pool *x509.CertPool, within time.Duration, old ...string) string {
	t.Helper()
	var last string
	for deadline := time.Now().Add(within); ; {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", gw.httpsAddr, &tls.Config{ServerName: host, RootCAs: pool})
		if err == nil {
			s := fmt.Sprintf("%x", conn.ConnectionState().PeerCertificates[0].SerialNumber)
			conn.Close()
			fresh := true
			for _, o := range old {
				fresh = fresh && s != o
			}
			if fresh {
				return s
			}
			err = fmt.Errorf("still serial %s", s)
		}
		last = err.Error()
		if time.Now().After(deadline) {
			_, out := c.api("GET", "/certificates/"+api.CertificateName(host), "")
			t.Fatalf("%s: a new trusted certificate for %s: got %s after %v, want one; certificate: %s", gw.name, host, last, within, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestACMERenewalWithAGatewayDown: Pebble issues 45-second certificates;
// with one of three gateways stopped, Control renews in the last third
// of the lifetime and the others serve the new certificate, in one new
// order. Then the CA goes away: the next renewal fails, the status says
// CAUnreachable with a next attempt, and the gateways keep serving the
// certificate they have.
func TestACMERenewalWithAGatewayDown(t *testing.T) {
	c, mgmt, orders, stopCA := acmeCluster(t, 45*time.Second)
	const host = "renew.example.com"
	c.applyTunnel("web", host, "home", c.apps["app-a"])
	pool := pebbleRoot(t, mgmt)
	first := waitSerial(t, c, c.gateways[1], host, pool, 60*time.Second)
	if got := waitSerial(t, c, c.gateways[2], host, pool, 10*time.Second); got != first {
		t.Fatalf("serials: gw2 %s, gw3 %s, want the same", first, got)
	}
	issued := time.Now()
	c.gateways[0].stop()
	second := waitSerial(t, c, c.gateways[1], host, pool, 60*time.Second, first)
	if got := waitSerial(t, c, c.gateways[2], host, pool, 10*time.Second, first); got != second {
		t.Fatalf("renewed serials: gw2 %s, gw3 %s, want the same", second, got)
	}
	t.Logf("renewed %v after the first issuance with gw1 down", time.Since(issued).Round(time.Second))
	if n := orders(); n != 2 {
		t.Errorf("orders at the CA: got %d, want 2 (the first and one renewal)", n)
	}

	stopCA()
	var cert api.Certificate
	for deadline := time.Now().Add(45 * time.Second); ; {
		_, out := c.api("GET", "/certificates/"+api.CertificateName(host), "")
		decodeJSON(t, out, &cert)
		ready := api.FindCondition(cert.Status.Conditions, api.ConditionReady)
		if cert.Status.Failures > 0 && ready != nil && strings.Contains(ready.Message, api.ReasonCAUnreachable) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("certificate with the CA gone: got %s after 45s, want a failed renewal saying %s", out, api.ReasonCAUnreachable)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if cert.Status.State != api.CertificateIssued || cert.Status.Serial != second || cert.Status.NextAttempt == nil {
		t.Fatalf("status after a failed renewal: got %q %s next %v, want Issued, %s and a next attempt", cert.Status.State, cert.Status.Serial, cert.Status.NextAttempt, second)
	}
	for _, g := range c.gateways[1:] {
		if got := waitSerial(t, c, g, host, pool, 5*time.Second); got != second {
			t.Fatalf("%s with the CA gone: got serial %s, want %s still served", g.name, got, second)
		}
	}
}

// TestACMETLSALPNThroughAnyGateway: Control offers only TLS-ALPN-01, and
// Pebble's HTTP-01 port leads nowhere; Pebble validates on the HTTPS port
// of the third gateway, which Control never talks to: the challenge
// certificate reached it through the bridge, its TLS listener offered
// acme-tls/1, and one order gives every gateway a trusted certificate.
func TestACMETLSALPNThroughAnyGateway(t *testing.T) {
	r := startACMECluster(t, acmeOptions{controlArgs: []string{"--acme-challenges", "tls-alpn-01"}, closedHTTP: true})
	c := r.c
	const host = "alpn.example.com"
	c.applyTunnel("web", host, "home", c.apps["app-a"])
	pool := pebbleRoot(t, r.mgmt)
	first := waitSerial(t, c, c.gateways[0], host, pool, 60*time.Second)
	for _, g := range c.gateways[1:] {
		if got := waitSerial(t, c, g, host, pool, 10*time.Second); got != first {
			t.Fatalf("%s: serial %s, want %s as on gw1", g.name, got, first)
		}
	}
	if code, body, err := get(trustingClient(c.gateways[1].httpsAddr, pool), "https://"+host+"/"); err != nil || code != 200 || !strings.Contains(body, "Hello from app-a") {
		t.Fatalf("https://%s trusted by Pebble's root: got %d %v, want 200 from app-a", host, code, err)
	}
	if n := r.orders(); n != 1 {
		t.Errorf("orders at the CA: got %d, want 1 (a failed validation would have needed another)", n)
	}
	if strings.Contains(r.log(), "Attempting to validate w/ HTTP") {
		t.Errorf("pebble log: an HTTP-01 validation was attempted, want TLS-ALPN-01 only")
	}
	// Afterwards no gateway answers acme-tls/1 for the name any more.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", c.gateways[2].httpsAddr,
		&tls.Config{ServerName: host, NextProtos: []string{"acme-tls/1"}, InsecureSkipVerify: true})
	if err == nil {
		conn.Close()
		t.Errorf("acme-tls/1 handshake after issuance: got a certificate, want the challenge gone")
	}
}
