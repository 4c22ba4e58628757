// Command kakuremichi runs the components of kakuremichi: `kakuremichi
// control` (API, store and controllers), and the gateway and agent as they
// land. Run `kakuremichi help` for the list.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kakuremichi/kakuremichi/internal/buildinfo"
	"github.com/kakuremichi/kakuremichi/internal/control"
	"github.com/kakuremichi/kakuremichi/internal/flagenv"
	"github.com/kakuremichi/kakuremichi/internal/nodecmd"
	"github.com/kakuremichi/kakuremichi/store"
)

const envPrefix = nodecmd.EnvPrefix

// logFlags are the logging flags every subcommand shares.
type logFlags = nodecmd.LogFlags

var parseCommand = nodecmd.ParseCommand

const usage = `kakuremichi: a self-hosted tunnel that publishes apps behind NAT.

Usage:
  kakuremichi control [flags]   run Control: API, embedded etcd, controllers
  kakuremichi gateway [flags]   run a gateway: public entry node (:80, :443, WireGuard)
  kakuremichi agent [flags]     run an agent beside your apps (dials out only)
  kakuremichi demo [flags]      serve a small demo web app to publish
  kakuremichi version           print the version
  kakuremichi help              this text

Run "kakuremichi COMMAND --help" for a command's flags.`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	switch args[0] {
	case "control":
		return runControl(ctx, args[1:], stderr)
	case "agent":
		return nodecmd.RunAgent(ctx, args[1:], stderr)
	case "gateway":
		return nodecmd.RunGateway(ctx, args[1:], stderr)
	case "demo":
		return runDemo(ctx, args[1:], stderr)
	case "healthcheck": // the container image's HEALTHCHECK
		return nodecmd.RunHealthcheck(ctx, args[1:], stderr)
	case "init-keys": // docker-compose.yml's one-shot init service
		return runInitKeys(ctx, args[1:], stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "kakuremichi %s %s\n", buildinfo.Version(), buildinfo.Commit())
		return 0
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "error: unknown command %q\n\n%s\n", args[0], usage)
		return 2
	}
}

func runControl(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kakuremichi control", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg control.Config
	var lf logFlags
	var endpoints string
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "directory for the embedded etcd and the bootstrap token")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7070", "address of the API")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "serve the API over HTTPS with this certificate (PEM)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key-file", "", "private key for --tls-cert-file (PEM)")
	fs.StringVar(&endpoints, "etcd-endpoints", "", "comma-separated URLs of an external etcd cluster (default: embedded etcd in --data-dir)")
	fs.StringVar(&cfg.Store.CAFile, "etcd-ca-file", "", "CA bundle to verify the external etcd cluster")
	fs.StringVar(&cfg.Store.CertFile, "etcd-cert-file", "", "client certificate for the external etcd cluster")
	fs.StringVar(&cfg.Store.KeyFile, "etcd-key-file", "", "client key for the external etcd cluster")
	fs.StringVar(&cfg.Store.Prefix, "etcd-prefix", "/kakuremichi/", "key prefix in etcd")
	fs.Int64Var(&cfg.Store.QuotaBackendBytes, "etcd-quota-bytes", 2<<30, "embedded etcd: size at which writes are refused (NOSPACE)")
	fs.StringVar(&cfg.Store.AutoCompactionRetention, "etcd-compaction-retention", store.DefaultAutoCompactionRetention, "embedded etcd: how much history watches can resume from")
	fs.Func("overlay-prefix", "private network node addresses are taken from (default 100.64.0.0/10)", func(v string) error {
		p, err := netip.ParsePrefix(v)
		if err != nil || !p.Addr().Is4() && !p.Addr().Is6() {
			return fmt.Errorf("%q is not a network such as 100.64.0.0/10", v)
		}
		cfg.OverlayPrefix = p.Masked()
		return nil
	})
	fs.StringVar(&cfg.Certificates, "certificates", "", "how tunnel certificates are obtained: internal (Control's own CA; trust its root from 'kakuremichictl get ca -o pem'), acme (Let's Encrypt or --acme-directory, HTTP-01 through the gateways) or off (gateways serve --tls-cert-file or self-signed); default acme when --acme-email is set, else internal")
	fs.StringVar(&cfg.ACME.Directory, "acme-directory", "", "ACME directory URL (default Let's Encrypt production; staging: https://acme-staging-v02.api.letsencrypt.org/directory)")
	fs.StringVar(&cfg.ACME.Email, "acme-email", "", "contact email of the ACME account; setting it makes --certificates default to acme and means you agree to the CA's terms of service")
	fs.StringVar(&cfg.ACME.CAFile, "acme-ca-file", "", "PEM roots that sign the ACME server's HTTPS certificate, for a private CA (default: system roots)")
	fs.BoolVar(&cfg.ACME.TLSALPN, "acme-tls-alpn", false, "also offer the CA TLS-ALPN-01 challenges on the gateways' port 443 (HTTP-01 on port 80 is always offered)")
	fs.Func("acme-challenges", "challenge types for tunnel hostnames that are not wildcards, comma separated: http-01, tls-alpn-01, dns-01 (default http-01, plus tls-alpn-01 with --acme-tls-alpn); wildcards always use dns-01", func(v string) error {
		cfg.ACME.Challenges = nil
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				cfg.ACME.Challenges = append(cfg.ACME.Challenges, t)
			}
		}
		return nil
	})
	fs.StringVar(&cfg.ACME.DNS.Provider, "acme-dns-provider", "", "DNS provider for DNS-01 challenges (needed for wildcard certificates): rfc2136 (DNS UPDATE signed with TSIG)")
	fs.StringVar(&cfg.ACME.DNS.Server, "acme-dns-server", "", "rfc2136: host:port of the primary name server that takes updates")
	fs.StringVar(&cfg.ACME.DNS.Zone, "acme-dns-zone", "", "rfc2136: zone to update (default: found from the server's SOA for each name)")
	fs.StringVar(&cfg.ACME.DNS.TSIGKey, "acme-dns-tsig-key", "", "rfc2136: name of the TSIG key that signs updates")
	fs.StringVar(&cfg.ACME.DNS.TSIGSecretFile, "acme-dns-tsig-secret-file", "", "rfc2136: file holding the TSIG key's base64 secret")
	fs.StringVar(&cfg.ACME.DNS.TSIGAlgorithm, "acme-dns-tsig-algorithm", "hmac-sha256", "rfc2136: TSIG algorithm (hmac-sha256, hmac-sha512, ...)")
	fs.DurationVar(&cfg.ACME.DNS.PropagationTimeout, "acme-dns-propagation-timeout", 2*time.Minute, "how long to wait for a DNS-01 record to be visible at the name server")
	fs.StringVar(&cfg.PublicHostname, "public-hostname", "", "the name nodes and browsers reach Control by; with --certificates internal or acme (and no --tls-cert-file) Control obtains a certificate for it and serves HTTPS")
	fs.DurationVar(&cfg.NodeLease, "node-lease", 40*time.Second, "a node counts as offline this long after its last heartbeat")
	fs.DurationVar(&cfg.AuditRetention, "audit-retention", 30*24*time.Hour, "how long the audit log keeps each change made through the API or the web UI")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", control.DefaultShutdownGrace, "how long in-flight requests may take on shutdown")
	var withGateway bool
	var lg control.LocalGateway
	var gwWireGuard string
	fs.BoolVar(&withGateway, "gateway", false, "also run a gateway in this process (single-server install)")
	fs.StringVar(&lg.Name, "gateway-name", "local", "name of the in-process gateway")
	fs.StringVar(&lg.PublicEndpoint, "gateway-public-endpoint", "", "host:port agents dial for the in-process gateway's WireGuard")
	fs.StringVar(&lg.HTTPListen, "gateway-http-listen", ":80", "in-process gateway: address of plain HTTP")
	fs.StringVar(&lg.HTTPSListen, "gateway-https-listen", ":443", "in-process gateway: address of HTTPS")
	fs.StringVar(&gwWireGuard, "gateway-wireguard-listen", ":51820", "in-process gateway: UDP address of WireGuard")
	fs.StringVar(&lg.TCPListenHost, "gateway-tcp-listen-host", "", "in-process gateway: host tcp tunnels' ports are bound on")
	lf.Register(fs)
	fs.Usage = flagenv.Usage(fs, envPrefix, "Usage: kakuremichi control [flags]\n\nRuns Control: the API, the store (embedded etcd unless --etcd-endpoints) and the controllers.")
	log, code := parseCommand(fs, args, &lf, stderr)
	if code >= 0 {
		return code
	}
	if endpoints != "" {
		for _, e := range strings.Split(endpoints, ",") {
			if e = strings.TrimSpace(e); e != "" {
				cfg.Store.Endpoints = append(cfg.Store.Endpoints, e)
			}
		}
	}
	if withGateway {
		_, portStr, err := net.SplitHostPort(gwWireGuard)
		port, perr := strconv.Atoi(portStr)
		if err != nil || perr != nil || port < 1 || port > 65535 {
			fmt.Fprintf(stderr, "error: --gateway-wireguard-listen: %q is not host:port with a port\n", gwWireGuard)
			return 2
		}
		lg.WireGuardPort = port
		cfg.Gateway = &lg
	}
	if p := os.Getenv("ETCD_PASSWORD"); p != "" {
		cfg.Store.Username, cfg.Store.Password = os.Getenv("ETCD_USERNAME"), p
	}
	cfg.Logger = log
	if err := control.Run(ctx, cfg); err != nil {
		log.Error("control stopped", "err", err)
		return 1
	}
	return 0
}
