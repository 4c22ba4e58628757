// Package control assembles Control: the store (embedded or external
// etcd), the REST API and Control's controllers, started and stopped
// together. It is what `kakuremichi control` runs.
package control

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/kakuremichi/kakuremichi/internal/apiserver"
	"github.com/kakuremichi/kakuremichi/internal/audit"
	"github.com/kakuremichi/kakuremichi/internal/bridgeserver"
	"github.com/kakuremichi/kakuremichi/internal/buildinfo"
	"github.com/kakuremichi/kakuremichi/internal/certs"
	"github.com/kakuremichi/kakuremichi/internal/ui"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/store"
)

// Config configures Control.
type Config struct {
	// DataDir holds the embedded etcd and the bootstrap token. Required.
	DataDir string
	// Listen is the address of the API (and later the UI); "" means
	// 127.0.0.1:7070.
	Listen string
	// Listener, when set, is used instead of listening on Listen. Tests
	// pass one bound to a random port.
	Listener net.Listener
	// TLSCertFile and TLSKeyFile, when both set, make the API serve HTTPS.
	TLSCertFile, TLSKeyFile string
	// Store configures etcd; its DataDir defaults to DataDir.
	Store store.Config
	// ShutdownGrace bounds how long in-flight requests may take to finish
	// on shutdown; zero means 10 seconds.
	ShutdownGrace time.Duration
	// Logger receives Control's logs; nil discards.
	Logger *slog.Logger
	// Gateway, when not nil, runs a gateway in Control's process.
	Gateway *LocalGateway
	// OverlayPrefix is the private network node addresses come from; the
	// zero value means 100.64.0.0/10.
	OverlayPrefix netip.Prefix
	// NodeLease is how long a node counts as connected after its last
	// heartbeat; zero means 40 s.
	NodeLease time.Duration
	// AuditRetention is how long the audit log keeps a change; zero means
	// 30 days.
	AuditRetention time.Duration
	// Ready, when set, is called once the API is serving, with its address.
	Ready func(addr net.Addr)
	// Certificates is how tunnel certificates are obtained:
	// CertificatesInternal (also the zero value) or CertificatesOff.
	Certificates string
	// CertificateLifetime is the validity of internal-CA certificates;
	// zero means 90 days. Tests shorten it to watch renewals.
	CertificateLifetime time.Duration
	// ACME configures CertificatesACME.
	ACME ACMESettings
	// PublicHostname is the name nodes and browsers reach Control by.
	// With certificates internal or acme and no TLSCertFile, Control
	// obtains and renews a certificate for it and serves HTTPS with it.
	PublicHostname string
}

// BootstrapTokenFile is the name of the file in the data directory that
// holds the first admin token.
const BootstrapTokenFile = "bootstrap-token"

// DefaultShutdownGrace is used when Config.ShutdownGrace is zero.
const DefaultShutdownGrace = 10 * time.Second

// Run starts Control and blocks until ctx is done, then stops everything
// in order: the API stops taking requests, controllers stop, the store
// closes.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir == "" {
		return errors.New("control: a data directory is required (--data-dir)")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("control: create data directory: %w", err)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:7070"
	}
	if cfg.Gateway != nil && cfg.Gateway.PublicEndpoint == "" {
		return errors.New("control: the in-process gateway needs its public endpoint (--gateway-public-endpoint), the host:port agents dial")
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	certMode, err := checkCertificateMode(cfg.Certificates, cfg.ACME)
	if err != nil {
		return err
	}
	cfg.Certificates = certMode
	if err := checkCertificateConfig(&cfg); err != nil {
		return err
	}
	scfg := cfg.Store
	if scfg.DataDir == "" {
		scfg.DataDir = cfg.DataDir
	}
	if scfg.Logger == nil {
		scfg.Logger = log.With("component", "store")
	}
	var tlsConfig *tls.Config
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("control: load TLS certificate: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	st, err := store.Open(ctx, scfg)
	if err != nil {
		return fmt.Errorf("control: open store: %w", err)
	}
	defer st.Close()
	var own *certs.OwnCertificate
	if tlsConfig == nil && ownCertificate(cfg) {
		if own, err = certs.NewOwnCertificate(st, cfg.PublicHostname, log.With("component", "control-certificate")); err != nil {
			return fmt.Errorf("control: %w", err)
		}
		tlsConfig = own.TLSConfig()
	}

	tokenPath := filepath.Join(cfg.DataDir, BootstrapTokenFile)
	created, err := apiserver.EnsureBootstrapToken(ctx, st, tokenPath)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if created {
		log.Info("first start: wrote a one-time admin token; log in with it, create your own tokens, then revoke it",
			"file", tokenPath, "login", "kakuremichictl login --server URL --token-file "+tokenPath)
	}

	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("control: listen: %w", err)
		}
	}
	acc, err := accounts.New(accounts.Config{Store: st, Prefix: accountsPrefix(scfg.Prefix), Logger: log.With("component", "accounts")})
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	auditLog, err := audit.New(audit.Config{Client: st.Client(), Prefix: strings.TrimSuffix(accountsPrefix(scfg.Prefix), "accounts/") + "audit/",
		Retention: cfg.AuditRetention})
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	srv := apiserver.New(apiserver.Config{Store: st, Logger: log.With("component", "api"),
		Version: buildinfo.Version(), Commit: buildinfo.Commit(), Accounts: acc, Audit: auditLog})
	adapter := storeAdapter{st: st}
	sources := map[string]reconcile.ListerWatcher{}
	for _, k := range api.Kinds() {
		sources[k.Kind] = source{a: adapter, kind: k.Kind}
	}
	for kind, src := range certificateSources(cfg.Certificates, st) {
		sources[kind] = src
	}
	if cfg.PublicHostname != "" {
		sources["Tunnel"] = withoutHostname(sources["Tunnel"], cfg.PublicHostname)
	}
	// The bridge renews a node's lease at most five times per lease:
	// with the default 40 s, on every heartbeat (10 s apart), so that
	// three may be lost.
	br := bridgeserver.New(bridgeserver.Config{Store: st, Sources: sources, Logger: log.With("component", "bridge"),
		LeaseInterval: nodeLease(cfg) / 5})
	br.Register(srv.Echo())
	srv.Echo().GET(api.CAPath, serveCA(st))
	web, err := ui.New(ui.Config{Store: st, Accounts: acc, Audit: auditLog, Logger: log.With("component", "ui")})
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	web.Register(srv.Echo())
	httpSrv := apiserver.NewHTTPServer(srv.Handler(), tlsConfig, log)
	httpSrv.RegisterOnShutdown(srv.StopWatches)
	httpSrv.RegisterOnShutdown(web.Stop)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	start := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(runCtx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	start("api", func(ctx context.Context) error {
		return apiserver.Serve(ctx, httpSrv, ln, cfg.ShutdownGrace)
	})
	start("bridge", br.Run)
	if cfg.Gateway != nil {
		scheme := "http"
		if tlsConfig != nil {
			scheme = "https"
		}
		self := scheme + "://" + loopbackAddr(ln.Addr())
		start("gateway", func(ctx context.Context) error { return runLocalGateway(ctx, cfg, br, self, log) })
	}
	if own != nil {
		start("control-certificate", own.Run)
	}
	for name, fn := range components(st, cfg, log) {
		start(name, fn)
	}
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
	}
	log.Info("control is serving", "url", fmt.Sprintf("%s://%s", scheme, ln.Addr()), "version", buildinfo.Version())
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		log.Error("control: a component failed; stopping", "err", runErr)
	}
	cancel()
	wg.Wait()
	return runErr
}

// accountsPrefix keeps users and sessions under the store's own prefix,
// beside the kinds, so installations sharing an etcd cluster stay apart.
func accountsPrefix(storePrefix string) string {
	if storePrefix == "" {
		storePrefix = store.DefaultPrefix
	}
	return strings.TrimSuffix(storePrefix, "/") + "/accounts/"
}

// loopbackAddr turns a listener's address into one this process can dial:
// a wildcard host becomes the loopback address.
func loopbackAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if ip != nil && ip.To4() == nil {
			host = "::1"
		} else {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port)
}
