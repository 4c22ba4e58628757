package control

import (
	"context"
	"log/slog"
	"time"

	"github.com/kakuremichi/kakuremichi/controllers"
	"github.com/kakuremichi/kakuremichi/internal/certs"
	"github.com/kakuremichi/kakuremichi/internal/secretsource"
	"github.com/kakuremichi/kakuremichi/store"
)

// components returns Control's long-running loops besides the API, by
// name.
func components(st *store.Store, cfg Config, log *slog.Logger) map[string]func(context.Context) error {
	mgr := controllers.New(controllers.Config{Store: storeAdapter{st: st}, Logger: log.With("component", "controllers"),
		OverlayPrefix: cfg.OverlayPrefix, NodeLease: nodeLease(cfg), ControlHostname: cfg.PublicHostname,
		Leases: secretsource.Leases(st)})
	out := map[string]func(context.Context) error{
		"controllers": mgr.Run,
	}
	// Control's public name is never a tunnel's, even when its own
	// certificate comes from files.
	ctlHost, ctlCert := cfg.PublicHostname, ownCertificate(cfg)
	switch cfg.Certificates {
	case CertificatesInternal:
		out["certificates"] = certs.New(certs.Config{Store: st, Logger: log.With("component", "certificates"),
			Lifetime: cfg.CertificateLifetime, ControlHostname: ctlHost, IssueControlCertificate: ctlCert}).Run
	case CertificatesACME:
		out["certificates"] = func(ctx context.Context) error {
			cfg.Logger = log.With("component", "acme")
			iss, err := acmeIssuer(cfg, st)
			if err != nil {
				return err
			}
			defer iss.Close()
			return certs.New(certs.Config{Store: st, Logger: log.With("component", "certificates"), Issuer: iss, ControlHostname: ctlHost, IssueControlCertificate: ctlCert}).Run(ctx)
		}
	}
	return out
}

// nodeLease is how long a node counts as connected after its last
// heartbeat.
func nodeLease(cfg Config) time.Duration {
	if cfg.NodeLease > 0 {
		return cfg.NodeLease
	}
	return controllers.DefaultNodeLease
}
