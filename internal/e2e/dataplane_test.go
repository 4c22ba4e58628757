package e2e

import (
	"testing"
	"time"
)

// TestTunnelServedByEveryGateway: Control, three gateways, two agents and
// their apps as processes. A tunnel applied is reachable through each
// gateway within 2 s, over HTTP and HTTPS; deleted, it answers 404 on all
// within 2 s. The second agent's app is never reachable through the first
// agent's tunnel.
func TestTunnelServedByEveryGateway(t *testing.T) {
	c := newCluster(t)
	for _, g := range []string{"gw1", "gw2", "gw3"} {
		c.addGateway(g)
	}
	c.addApp("app-a")
	c.addApp("app-b")
	c.addAgent("home")
	c.addAgent("office")
	c.waitNodesReady(30 * time.Second)

	c.applyTunnel("web", "fuga.sample.com", "home", c.apps["app-a"])
	applied := time.Now()
	for _, g := range c.gateways {
		waitServing(t, gatewayClient(g.httpAddr, 2*time.Second), "http://fuga.sample.com/", 200, "Hello from app-a", 2*time.Second-time.Since(applied)+50*time.Millisecond)
	}
	t.Logf("tunnel served by all 3 gateways %v after apply", time.Since(applied).Round(time.Millisecond))
	for _, g := range c.gateways {
		waitServing(t, gatewayClient(g.httpsAddr, 2*time.Second), "https://fuga.sample.com/", 200, "Hello from app-a", 2*time.Second)
	}
	c.applyTunnel("api", "api.company.com", "office", c.apps["app-b"])
	for _, g := range c.gateways {
		waitServing(t, gatewayClient(g.httpAddr, 2*time.Second), "http://api.company.com/", 200, "Hello from app-b", 3*time.Second)
	}
	if code, _ := c.api("DELETE", "/tunnels/web", ""); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	deleted := time.Now()
	for _, g := range c.gateways {
		waitServing(t, gatewayClient(g.httpAddr, 2*time.Second), "http://fuga.sample.com/", 404, "", 2*time.Second-time.Since(deleted)+50*time.Millisecond)
	}
	t.Logf("deleted tunnel answered 404 on all gateways %v after delete", time.Since(deleted).Round(time.Millisecond))
}
