package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// cluster is Control, gateways, agents and demo apps as real processes on
// loopback.
type cluster struct {
	t        testing.TB
	control  *controlProc
	token    string
	gateways []*gatewayProc
	agents   map[string]*controlProc
	apps     map[string]string // name -> http://addr
	gwKey    string
	agentKey string
	// debug starts each gateway and agent added after it is set with
	// --debug-listen on a port of its own (controlProc.debugAddr).
	debug bool
}

type gatewayProc struct {
	*controlProc
	name      string
	httpAddr  string
	httpsAddr string
	wgPort    int
}

func newCluster(t testing.TB, controlArgs ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, control: newControl(t, controlArgs...), agents: map[string]*controlProc{}, apps: map[string]string{}}
	c.token = c.control.adminToken()
	c.gwKey = c.apiKey("gateways", api.RoleGateway)
	c.agentKey = c.apiKey("agents", api.RoleAgent)
	return c
}

func (c *cluster) api(method, path, body string) (int, []byte) {
	c.t.Helper()
	code, out, err := request(context.Background(), method, c.control.url()+prefix+path, c.token, body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return code, out
}

func (c *cluster) apiKey(name string, role api.Role) string {
	c.t.Helper()
	code, out := c.api("POST", "/apikeys", fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"APIKey","metadata":{"name":%q},"spec":{"role":%q}}`, name, role))
	if code != 201 {
		c.t.Fatalf("create apikey: %d %s", code, out)
	}
	var k api.APIKey
	decodeJSON(c.t, out, &k)
	return k.Status.Secret
}

// proc starts a kakuremichi subcommand as a process.
func (c *cluster) proc(name string, args, env []string, readyURL string) *controlProc {
	c.t.Helper()
	dir := c.t.TempDir()
	p := &controlProc{t: c.t, dataDir: dir, logPath: filepath.Join(dir, name+".log"), args: args, env: env, readyURL: readyURL}
	if c.debug && len(args) > 0 && (args[0] == "gateway" || args[0] == "agent") {
		p.debugAddr = fmt.Sprintf("127.0.0.1:%d", freePort(c.t))
		p.args = append(slices.Clip(args), "--debug-listen", p.debugAddr)
	}
	p.start()
	c.t.Cleanup(p.kill)
	return p
}

func (c *cluster) addGateway(name string) *gatewayProc {
	c.t.Helper()
	g := &gatewayProc{name: name, httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(c.t)),
		httpsAddr: fmt.Sprintf("127.0.0.1:%d", freePort(c.t)), wgPort: freeUDPPort(c.t)}
	state := filepath.Join(c.t.TempDir(), "state")
	g.controlProc = c.proc("gateway-"+name, []string{"gateway", "--name", name, "--state-dir", state,
		"--control-url", c.control.url(), "--http-listen", g.httpAddr, "--https-listen", g.httpsAddr,
		"--wireguard-listen", fmt.Sprintf("127.0.0.1:%d", g.wgPort), "--public-endpoint", fmt.Sprintf("127.0.0.1:%d", g.wgPort),
		"--tcp-listen-host", "127.0.0.1", "--shutdown-grace", "5s"},
		[]string{"API_KEY=" + c.gwKey}, "http://"+g.httpAddr+"/healthz")
	c.gateways = append(c.gateways, g)
	return g
}

func (c *cluster) addAgent(name string) *controlProc {
	c.t.Helper()
	state := filepath.Join(c.t.TempDir(), "state")
	a := c.proc("agent-"+name, []string{"agent", "--name", name, "--state-dir", state, "--control-url", c.control.url(), "--shutdown-grace", "5s"},
		[]string{"API_KEY=" + c.agentKey}, "-")
	c.agents[name] = a
	return a
}

func (c *cluster) addApp(name string) string {
	c.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(c.t))
	c.proc("app-"+name, []string{"demo", "--listen", addr, "--name", name}, nil, "http://"+addr+"/healthz")
	c.apps[name] = "http://" + addr
	return "http://" + addr
}

func freeUDPPort(t testing.TB) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// waitReady waits until every node reports Ready=True.
func (c *cluster) waitNodesReady(within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		notReady := []string{}
		for _, kind := range []string{"agents", "gateways"} {
			_, out := c.api("GET", "/"+kind, "")
			var list api.List
			decodeJSON(c.t, out, &list)
			for _, raw := range list.Items {
				obj, _ := api.DecodeObject(raw)
				if !api.IsConditionTrue(obj.GetStatus().Conditions, api.ConditionReady) {
					notReady = append(notReady, obj.GetMeta().Name)
				}
				// Every gateway must have reached every agent through
				// WireGuard, not just one of them.
				if g, ok := obj.(*api.Gateway); ok {
					probed := map[string]bool{}
					for _, a := range g.Status.Agents {
						probed[a.Name] = a.Probe == "ok"
					}
					for name := range c.agents {
						if !probed[name] {
							notReady = append(notReady, g.Metadata.Name+"->"+name)
						}
					}
				}
			}
		}
		if len(notReady) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nodes not Ready after %v: %v", within, notReady)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *cluster) applyTunnel(name, host, agent, target string) {
	c.t.Helper()
	body := fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":%q},"spec":{"hostname":%q,"agent":%q,"target":%q}}`, name, host, agent, target)
	if code, out := c.api("POST", "/tunnels", body); code != 201 {
		c.t.Fatalf("create tunnel: %d %s", code, out)
	}
}

// httpClient talks to gateways: every request to any name goes to the
// gateway's address, like DNS pointing at it.
func gatewayClient(addr string, timeout time.Duration) *http.Client {
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dial,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}}
}

func get(client *http.Client, url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitServing polls a gateway until url answers want, and returns how long
// it took.
func waitServing(t testing.TB, client *http.Client, url string, want int, contains string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < within {
		code, body, err := get(client, url)
		if err == nil && code == want && strings.Contains(body, contains) {
			return time.Since(start)
		}
		last = fmt.Sprintf("%d %v %.200s", code, err, body)
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: got %s, want %d containing %q within %v", url, last, want, contains, within)
	return 0
}

var _ = json.Marshal
