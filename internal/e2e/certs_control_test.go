package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/internal/certs"
)

// TestTunnelCannotTakeControlsHostname: Control serves its API with a
// certificate for --public-hostname, and a gateway is connected. A tunnel
// created for that very name is refused in its status
// (HostnameReservedForControl, naming the hostname), gets no certificate,
// and the slice the gateway keeps on disk never holds Control's key nor
// a route for that name, while another tunnel's certificate arrives there (so the slice read is
// one made after both tunnels existed). Control keeps serving the
// certificate it had.
func TestTunnelCannotTakeControlsHostname(t *testing.T) {
	const hostname = "control.example.test"
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp := startHTTPSControl(t, addr, "--certificates", "internal", "--public-hostname", hostname)
	insecure := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	code, rootPEM, err := get(insecure, "https://"+addr+api.CAPath)
	pool := x509.NewCertPool()
	if err != nil || code != 200 || !pool.AppendCertsFromPEM([]byte(rootPEM)) {
		t.Fatalf("GET %s: got %d %v, want 200 and a PEM root", api.CAPath, code, err)
	}
	serial, client := waitControlTrusted(t, cp, hostname, pool, 15*time.Second)
	ctlKey := servedPublicKey(t, addr, hostname, pool)
	_, port, _ := net.SplitHostPort(addr)
	base := "https://" + hostname + ":" + port + prefix
	call := func(method, path, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+cp.adminToken())
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}

	code, out := call("POST", "/apikeys", `{"apiVersion":"kakuremichi.io/v1alpha1","kind":"APIKey","metadata":{"name":"gateways"},"spec":{"role":"gateway"}}`)
	if code != 201 {
		t.Fatalf("create apikey: %d %s", code, out)
	}
	var key api.APIKey
	decodeJSON(t, out, &key)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	wg := freeUDPPort(t)
	state := filepath.Join(t.TempDir(), "state")
	dir := t.TempDir()
	gw := &controlProc{t: t, dataDir: dir, logPath: filepath.Join(dir, "gateway.log"), readyURL: "http://" + httpAddr + "/healthz",
		env: []string{"API_KEY=" + key.Status.Secret},
		args: []string{"gateway", "--name", "gw1", "--state-dir", state, "--control-url", "https://" + addr, "--control-insecure-skip-verify",
			"--http-listen", httpAddr, "--https-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			"--wireguard-listen", fmt.Sprintf("127.0.0.1:%d", wg), "--public-endpoint", fmt.Sprintf("127.0.0.1:%d", wg), "--shutdown-grace", "5s"}}
	gw.start()
	t.Cleanup(gw.kill)

	for _, tn := range []struct{ name, host string }{{"hijack", hostname}, {"web", "web.example.test"}} {
		body := fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":%q},"spec":{"hostname":%q,"agent":"home","target":"http://127.0.0.1:9"}}`, tn.name, tn.host)
		if code, out := call("POST", "/tunnels", body); code != 201 {
			t.Fatalf("create tunnel %s: %d %s", tn.name, code, out)
		}
	}

	// The gateway's slice on disk: wait for web's certificate, then look
	// for Control's key in all of it.
	var items []bridge.Item
	for deadline := time.Now().Add(20 * time.Second); ; {
		items = savedSliceItems(t, filepath.Join(state, "slice.json"))
		if hasCertificate(items, "web.example.test") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway slice: no certificate for web.example.test after 20s; items %v\ngateway log:\n%s", itemKeys(items), gw.logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, it := range items {
		if it.Route != nil && it.Route.Hostname == hostname {
			t.Errorf("gateway slice: got route %s to tunnel %s, want none: a refused tunnel is not served", it.Key, it.Route.Tunnel)
		}
		c := it.Certificate
		if c == nil {
			continue
		}
		if c.Hostname == hostname {
			t.Errorf("gateway slice: got a certificate and key for %s (item %s), want none: it is Control's name", hostname, it.Key)
		}
		pair, err := tls.X509KeyPair([]byte(c.ChainPEM), []byte(c.KeyPEM))
		if err != nil {
			t.Fatalf("gateway slice: certificate %s: %v", it.Key, err)
		}
		if pub, _ := x509.MarshalPKIXPublicKey(pair.Leaf.PublicKey); bytes.Equal(pub, ctlKey) {
			t.Errorf("gateway slice: item %s holds Control's key pair, want Control's key never on a gateway", it.Key)
		}
	}

	var tun api.Tunnel
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, out := call("GET", "/tunnels/hijack", "")
		decodeJSON(t, out, &tun)
		c := api.FindCondition(tun.Status.Conditions, api.ConditionReady)
		if c != nil && c.Status == api.ConditionFalse && c.Reason == api.ReasonHostnameReservedForControl && strings.Contains(c.Message, hostname) {
			t.Logf("tunnel hijack: Ready=False %s: %s", c.Reason, c.Message)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tunnel hijack: got conditions %+v after 10s, want Ready=False %s naming %s", tun.Status.Conditions, api.ReasonHostnameReservedForControl, hostname)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, out = call("GET", "/certificates", "")
	var list api.List
	decodeJSON(t, out, &list)
	var names []string
	for _, raw := range list.Items {
		obj, err := api.DecodeObject(raw)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, obj.GetMeta().Name+"="+obj.(*api.Certificate).Spec.Hostname)
	}
	if want := []string{certs.ControlCertificate + "=" + hostname, api.CertificateName("web.example.test") + "=web.example.test"}; strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("certificates: got %v, want %v (none for the tunnel hijack)", names, want)
	}
	if got, _ := waitControlTrusted(t, cp, hostname, pool, 5*time.Second); got != serial {
		t.Errorf("Control's certificate after the tunnel: serial %s, want still %s", got, serial)
	}
}

// servedPublicKey returns the public key (PKIX DER) of the certificate
// Control presents for hostname at addr, verified against pool.
func servedPublicKey(t *testing.T, addr, hostname string, pool *x509.CertPool) []byte {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, &tls.Config{ServerName: hostname, RootCAs: pool})
	if err != nil {
		t.Fatalf("handshake with %s: %v", hostname, err)
	}
	defer conn.Close()
	pub, err := x509.MarshalPKIXPublicKey(conn.ConnectionState().PeerCertificates[0].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// savedSliceItems reads the slice a node keeps in its state directory;
// none while the file does not exist yet.
func savedSliceItems(t *testing.T, path string) []bridge.Item {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var saved struct {
		Items []bridge.Item `json:"items"`
	}
	if err := json.Unmarshal(data, &saved); err != nil {
		// Should a read ever catch a write half done, the next read
		// settles it.
		return nil
	}
	return saved.Items
}

func hasCertificate(items []bridge.Item, hostname string) bool {
	for _, it := range items {
		if it.Certificate != nil && it.Certificate.Hostname == hostname {
			return true
		}
	}
	return false
}

func itemKeys(items []bridge.Item) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, it.Key)
	}
	return out
}
