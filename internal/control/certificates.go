package control

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/certs"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

// Certificate modes of Config.Certificates.
const (
	// CertificatesInternal: Control's own CA, kept in the store, signs a
	// certificate for every enabled http tunnel hostname; clients trust
	// its root (api.CAPath). The default without an ACME email: it needs
	// no DNS and no public CA, so it works on laptops, in tests and in
	// closed networks.
	CertificatesInternal = "internal"
	// CertificatesACME: certificates come from an ACME CA (Let's Encrypt
	// by default) over HTTP-01, answered by whichever gateway the CA
	// reaches. The default when an ACME email is configured.
	CertificatesACME = "acme"
	// CertificatesOff: Control issues nothing; gateways serve their
	// --tls-cert-file or a self-signed certificate.
	CertificatesOff = "off"
)

// ACMESettings configure CertificatesACME.
type ACMESettings struct {
	// Directory is the ACME directory URL; "" means Let's Encrypt
	// production.
	Directory string
	// Email is the account's contact address; "" registers without one.
	// Setting it makes ACME the default mode.
	Email string
	// CAFile, when set, is a PEM bundle of the roots that sign the ACME
	// server's own HTTPS certificate (a private CA, or Pebble in tests);
	// "" means the system roots.
	CAFile string
	// TLSALPN also offers TLS-ALPN-01 challenges (HTTP-01 is always
	// offered). It needs gateways whose TLS listener offers "acme-tls/1".
	TLSALPN bool
}

func checkCertificateMode(mode string, acme ACMESettings) (string, error) {
	switch mode {
	case "":
		if acme.Email != "" {
			return CertificatesACME, nil
		}
		return CertificatesInternal, nil
	case CertificatesInternal, CertificatesOff, CertificatesACME:
		return mode, nil
	}
	return "", fmt.Errorf("control: --certificates %q: use internal, acme or off", mode)
}

// certificateSources are the bridge's sources for what gateways receive
// of certificates in each mode.
func certificateSources(mode string, st *store.Store) map[string]reconcile.ListerWatcher {
	switch mode {
	case CertificatesInternal:
		return map[string]reconcile.ListerWatcher{api.CertificateKeyPairKind: certs.KeyPairSource{Store: st}}
	case CertificatesACME:
		return map[string]reconcile.ListerWatcher{api.CertificateKeyPairKind: certs.KeyPairSource{Store: st},
			api.ACMEChallengeKind: certs.ChallengeSource{Store: st}}
	}
	return nil
}

// acmeIssuer builds the ACME issuer of cfg.
func acmeIssuer(cfg Config, st *store.Store) (*certs.ACMEIssuer, error) {
	var roots *x509.CertPool
	if f := cfg.ACME.CAFile; f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("control: --acme-ca-file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("control: --acme-ca-file %s: no PEM certificate in it", f)
		}
	}
	return certs.NewACMEIssuer(certs.ACMEConfig{Store: st, Directory: cfg.ACME.Directory, Email: cfg.ACME.Email,
		TrustedRoots: roots, Logger: cfg.Logger, TLSALPN: cfg.ACME.TLSALPN}), nil
}

// serveCA answers api.CAPath from the store.
func serveCA(st *store.Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		pem, err := certs.RootPEM(c.Request().Context(), st)
		if errors.Is(err, api.ErrNotFound) {
			st := api.StatusFromError(fmt.Errorf("%w: the internal CA does not exist (Control runs with --certificates acme or off, or has not created it yet)", api.ErrNotFound))
			return c.JSON(st.Code, st)
		}
		if err != nil {
			st := api.StatusFromError(err)
			return c.JSON(st.Code, st)
		}
		return c.Blob(http.StatusOK, "application/x-pem-file", pem)
	}
}
