package control

import (
	"context"
	"log/slog"

	"github.com/kakuremichi/kakuremichi/controllers"
	"github.com/kakuremichi/kakuremichi/internal/certs"
	"github.com/kakuremichi/kakuremichi/store"
)

// components returns Control's long-running loops besides the API, by
// name.
func components(st *store.Store, cfg Config, log *slog.Logger) map[string]func(context.Context) error {
	mgr := controllers.New(controllers.Config{Store: storeAdapter{st: st}, Logger: log.With("component", "controllers"),
		OverlayPrefix: cfg.OverlayPrefix, NodeLease: cfg.NodeLease})
	out := map[string]func(context.Context) error{
		"controllers": mgr.Run,
	}
	var extra []string
	if ownCertificate(cfg) {
		extra = []string{cfg.PublicHostname}
	}
	switch cfg.Certificates {
	case CertificatesInternal:
		out["certificates"] = certs.New(certs.Config{Store: st, Logger: log.With("component", "certificates"),
			Lifetime: cfg.CertificateLifetime, Extra: extra}).Run
	case CertificatesACME:
		out["certificates"] = func(ctx context.Context) error {
			cfg.Logger = log.With("component", "acme")
			iss, err := acmeIssuer(cfg, st)
			if err != nil {
				return err
			}
			defer iss.Close()
			return certs.New(certs.Config{Store: st, Logger: log.With("component", "certificates"), Issuer: iss, Extra: extra}).Run(ctx)
		}
	}
	return out
}
