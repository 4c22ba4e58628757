package nodecmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/agent"
	"github.com/kakuremichi/kakuremichi/api/bridge"
	"github.com/kakuremichi/kakuremichi/gateway"
	"github.com/kakuremichi/kakuremichi/gateway/certsource"
	"github.com/kakuremichi/kakuremichi/internal/buildinfo"
	"github.com/kakuremichi/kakuremichi/internal/flagenv"
	"github.com/kakuremichi/kakuremichi/internal/nodeclient"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// nodeFlags are the flags agents and gateways share. The Control URL, API
// key and node name also come from CONTROL_URL, API_KEY and NODE_NAME, the
// variables a compose file sets. The API key is never a flag: process
// arguments are visible to every user of the machine.
type nodeFlags struct {
	controlURL    string
	apiKeyFile    string
	name          string
	stateDir      string
	caFile        string
	insecure      bool
	shutdownGrace time.Duration
	log           LogFlags
}

func (n *nodeFlags) register(fs *flag.FlagSet, kind string) {
	host, _ := os.Hostname()
	fs.StringVar(&n.controlURL, "control-url", os.Getenv("CONTROL_URL"), "Control's URL (env CONTROL_URL)")
	fs.StringVar(&n.apiKeyFile, "api-key-file", "", "file holding the API key that enrols this node (or env API_KEY)")
	name := os.Getenv("NODE_NAME")
	if name == "" {
		name = sanitizeName(host)
	}
	fs.StringVar(&n.name, "name", name, "this node's name (env NODE_NAME; default: the host name)")
	fs.StringVar(&n.stateDir, "state-dir", "./kakuremichi-"+kind, "directory for the WireGuard key, the credential and the last configuration (0600 files)")
	fs.StringVar(&n.caFile, "control-ca-file", "", "CA bundle that verifies Control's HTTPS certificate")
	fs.BoolVar(&n.insecure, "control-insecure-skip-verify", false, "do not verify Control's HTTPS certificate (testing only)")
	fs.DurationVar(&n.shutdownGrace, "shutdown-grace", 10*time.Second, "how long in-flight requests may take on SIGTERM")
	n.log.Register(fs)
}

// sanitizeName turns a host name into a valid object name.
func sanitizeName(h string) string {
	h = strings.ToLower(strings.Split(h, ".")[0])
	var b strings.Builder
	for _, r := range h {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

func (n *nodeFlags) apiKey() (string, error) {
	if n.apiKeyFile != "" {
		data, err := os.ReadFile(n.apiKeyFile)
		if err != nil {
			return "", fmt.Errorf("--api-key-file: %w", err)
		}
		return strings.TrimSpace(string(data)), nil
	}
	return strings.TrimSpace(os.Getenv("API_KEY")), nil
}

// parseNodeFlags parses args and returns a logger, or an exit code.
func parseNodeFlags(fs *flag.FlagSet, args []string, n *nodeFlags, stderr io.Writer) (*slog.Logger, int) {
	log, code := ParseCommand(fs, args, &n.log, stderr)
	if code >= 0 {
		return nil, code
	}
	if n.controlURL == "" {
		fmt.Fprintln(stderr, "error: the Control URL is required: set CONTROL_URL or --control-url")
		return nil, 2
	}
	return log, -1
}

// runNode runs a node core and its bridge client together until ctx is
// done; the core drains in-flight requests after the client stops.
func runNode(ctx context.Context, log *slog.Logger, n *nodeFlags, kind, publicEndpoint string, pub wgnet.Key,
	run func(context.Context) error, apply func(bridge.Slice) error, status func() bridge.NodeStatus) int {
	key, err := n.apiKey()
	if err != nil {
		log.Error("read API key", "err", err)
		return 2
	}
	client, err := nodeclient.New(nodeclient.Config{ControlURL: n.controlURL, APIKey: key, Kind: kind, Name: n.name,
		PublicEndpoint: publicEndpoint, PublicKey: pub, StateDir: n.stateDir, Version: buildinfo.Version(),
		CAFile: n.caFile, InsecureSkipVerify: n.insecure, Apply: apply, Status: status,
		Logger: log.With("component", "bridge")})
	if err != nil {
		log.Error("start", "err", err)
		return 2
	}
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := run(cctx); err != nil {
			errc <- fmt.Errorf("%s: %w", strings.ToLower(kind), err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := client.Run(cctx); err != nil {
			errc <- fmt.Errorf("bridge: %w", err)
		}
	}()
	trimTicker := time.NewTicker(trimInterval)
	defer trimTicker.Stop()
	go trimAfterBursts(cctx, status, trimTicker.C, trimMinBytes, freeMemory)
	log.Info("started", "kind", kind, "name", n.name, "control", n.controlURL, "public_key", pub.String())
	code := 0
	select {
	case <-ctx.Done():
		log.Info("stopping: draining in-flight requests")
	case err := <-errc:
		log.Error("stopping", "err", err)
		code = 1
	}
	cancel()
	wg.Wait()
	return code
}

// RunAgent runs `kakuremichi agent` with args and returns its exit code.
func RunAgent(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kakuremichi agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var n nodeFlags
	var wgPort int
	n.register(fs, "agent")
	fs.IntVar(&wgPort, "wireguard-port", 0, "local UDP port of WireGuard (0: random; the agent only dials out)")
	fs.Usage = flagenv.Usage(fs, EnvPrefix, "Usage: CONTROL_URL=... API_KEY=... kakuremichi agent [flags]\n\nRuns an agent beside your apps: it dials out to every gateway over WireGuard and forwards its tunnels to their targets.")
	log, code := parseNodeFlags(fs, args, &n, stderr)
	if code >= 0 {
		return code
	}
	pk, err := nodeclient.LoadOrCreateKey(n.stateDir)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	a, err := agent.New(agent.Config{PrivateKey: pk, ListenPort: wgPort, ShutdownGrace: n.shutdownGrace, Logger: log.With("component", "agent")})
	if err != nil {
		log.Error("start", "err", err)
		return 2
	}
	return runNode(ctx, log, &n, "Agent", "", pk.PublicKey(), a.Run, a.Apply, a.Status)
}

// RunGateway runs `kakuremichi gateway` with args and returns its exit code.
func RunGateway(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kakuremichi gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var n nodeFlags
	var httpListen, httpsListen, wgListen, endpoint, certFile, keyFile, tcpHost, wgBackend, wgInterface string
	n.register(fs, "gateway")
	fs.StringVar(&httpListen, "http-listen", ":80", "address of plain HTTP")
	fs.StringVar(&httpsListen, "https-listen", ":443", "address of HTTPS")
	fs.StringVar(&wgListen, "wireguard-listen", ":51820", "UDP address agents send WireGuard to")
	fs.StringVar(&wgBackend, "wireguard-backend", string(wgnet.BackendNetstack), "WireGuard data path: netstack (no privilege) or tun (the kernel's TCP/IP; needs CAP_NET_ADMIN and /dev/net/tun)")
	fs.StringVar(&wgInterface, "wireguard-interface", wgnet.DefaultInterface, "name of the TUN interface of --wireguard-backend tun")
	fs.StringVar(&endpoint, "public-endpoint", "", "host:port agents dial for WireGuard, as seen from the internet (required)")
	fs.StringVar(&certFile, "tls-cert-file", "", "default certificate (PEM); without one a self-signed certificate is served")
	fs.StringVar(&keyFile, "tls-key-file", "", "key of --tls-cert-file (PEM)")
	fs.StringVar(&tcpHost, "tcp-listen-host", "", "host that tcp tunnels' public ports are bound on (default: all addresses)")
	fs.Usage = flagenv.Usage(fs, EnvPrefix, "Usage: CONTROL_URL=... API_KEY=... kakuremichi gateway --public-endpoint HOST:PORT [flags]\n\nRuns a gateway: a public entry node that serves every tunnel and reaches every agent over WireGuard.")
	log, code := parseNodeFlags(fs, args, &n, stderr)
	if code >= 0 {
		return code
	}
	if endpoint == "" {
		fmt.Fprintln(stderr, "error: --public-endpoint is required: the host:port agents dial, e.g. gw1.example.com:51820")
		return 2
	}
	_, portStr, err := net.SplitHostPort(wgListen)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil || port < 1 || port > 65535 {
		fmt.Fprintf(stderr, "error: --wireguard-listen: %q is not host:port with a port\n", wgListen)
		return 2
	}
	backend, err := wgnet.ParseBackend(wgBackend)
	if err != nil {
		fmt.Fprintf(stderr, "error: --wireguard-backend: %v\n", err)
		return 2
	}
	pk, err := nodeclient.LoadOrCreateKey(n.stateDir)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	certs := certsource.New(certsource.Config{Logger: log.With("component", "certificates"), HTTPSPort: certsource.ListenPort(httpsListen)})
	g, err := gateway.New(gateway.Config{PrivateKey: pk, WireGuardPort: port, WireGuardBackend: backend, WireGuardInterface: wgInterface, HTTPListen: httpListen, HTTPSListen: httpsListen,
		TCPListenHost: tcpHost, CertFile: certFile, KeyFile: keyFile, ShutdownGrace: n.shutdownGrace, Logger: log.With("component", "gateway"),
		GetCertificate: certs.GetCertificate, WrapHTTP: certs.WrapHTTP})
	if err != nil {
		log.Error("start", "err", err)
		return 2
	}
	return runNode(ctx, log, &n, "Gateway", endpoint, pk.PublicKey(), g.Run, certsource.ApplyBoth(certs, g.Apply), g.Status)
}
