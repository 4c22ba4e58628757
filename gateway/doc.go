// Package gateway is the core of a public entry node: it terminates HTTP and
// HTTPS from the internet, routes each request by its Host to the agent that
// serves the tunnel, and relays it through a userspace WireGuard device; raw
// TCP tunnels get a public port each.
//
// A Gateway is driven by the node's bridge client through three calls: Apply
// converges the gateway to a slice of the desired state (level-triggered and
// idempotent), Status reports what is installed and what the probes through
// the data path found, and Run serves until its context ends and then drains.
//
// # How a request travels
//
// The routing table is rebuilt whole from each slice and swapped in
// atomically, so a request sees either the old table or the new one, never
// half of each. A request whose Host names no route is answered 404 here and
// never reaches an agent: the gateway dials only what a route names. For a
// routed Host, an httputil.ReverseProxy sends the request to the URL
// http://<tunnel>.tunnel, which is only a connection-pool key: the proxy's
// transport resolves <tunnel> to its agent's overlay address when it opens a
// connection, dials agentAddress:7000 through WireGuard, names the tunnel in
// the stream preamble (package bridge) and, once the agent answers OK, speaks
// HTTP/1.1 over the stream. A refusal or a dial that times out becomes an
// error page a person understands (HTML, or JSON when the client prefers
// it), with the reason in the X-Kakuremichi-Error response header.
//
// A tcp route is a listener on its public port; each accepted connection is
// relayed the same way, byte for byte, to the tunnel's target.
//
// # Health
//
// The gateway's own health is served at /.well-known/kakuremichi/healthz on
// every Host, and at /healthz when the Host is not a routed hostname (a
// load balancer probing the gateway by its IP address): a routed hostname's
// /healthz belongs to the application behind the tunnel.
//
// # Hooks for certificates
//
// TLS certificates come from Config.GetCertificate when set (the automatic
// certificate source plugs in there), else from Config.CertFile/KeyFile,
// else from a self-signed certificate generated in memory for each routed
// hostname. Config.WrapHTTP wraps the plain-HTTP handler, where ACME HTTP-01
// challenges and the HTTP-to-HTTPS redirect will go.
//
// It imports the standard library, package api (reasons and sentinel
// errors), package api/bridge (the slice and the stream preamble) and
// internal/wgnet (the WireGuard device); never the store, etcd or echo.
package gateway
