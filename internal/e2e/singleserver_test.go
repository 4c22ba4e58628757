package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestSingleServerInstall is the README's quick start: Control runs the
// gateway in its own process (--gateway); an agent at "home" enrols with
// an API key and its app is served through the built-in gateway.
func TestSingleServerInstall(t *testing.T) {
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	wg := freeUDPPort(t)
	ctrl := newControl(t, "--gateway", "--gateway-public-endpoint", fmt.Sprintf("127.0.0.1:%d", wg),
		"--gateway-http-listen", httpAddr, "--gateway-https-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--gateway-wireguard-listen", fmt.Sprintf(":%d", wg), "--gateway-tcp-listen-host", "127.0.0.1")
	c := &cluster{t: t, control: ctrl, token: ctrl.adminToken(), agents: map[string]*controlProc{}, apps: map[string]string{}}
	c.agentKey = c.apiKey("home", "agent")
	c.addApp("app")
	c.addAgent("home")
	c.applyTunnel("web", "fuga.sample.com", "home", c.apps["app"])
	took := waitServing(t, gatewayClient(httpAddr, 2*time.Second), "http://fuga.sample.com/", 200, "Hello from app", 30*time.Second)
	t.Logf("served through the in-process gateway %v after apply", took.Round(time.Millisecond))
	// Control restarts, and the gateway in it with a fresh WireGuard
	// device: agents reach it again within 30 s (quality.md 4).
	ctrl.stop()
	ctrl.start()
	took = waitServing(t, gatewayClient(httpAddr, 2*time.Second), "http://fuga.sample.com/", 200, "Hello from app", 30*time.Second)
	t.Logf("served again %v after Control (and its gateway) restarted", took.Round(time.Millisecond))
}
