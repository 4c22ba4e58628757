package control

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

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
	// by default) over HTTP-01 or TLS-ALPN-01, answered by whichever
	// gateway the CA reaches, or DNS-01 through a DNS provider (the only
	// way for wildcards). The default when an ACME email is configured.
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
	// Challenges, when set, are the challenge types of tunnel hostnames
	// that are not wildcards (http-01, tls-alpn-01, dns-01), replacing
	// HTTP-01 and TLSALPN.
	Challenges []string
	// DNS configures DNS-01.
	DNS DNSSettings
}

// DNSSettings configure the DNS provider of DNS-01 challenges: the only
// way an ACME CA validates a wildcard name.
type DNSSettings struct {
	// Provider is "" (none) or "rfc2136".
	Provider string
	// Server is the host:port of the name server that takes updates.
	Server string
	// Zone is the zone to update; "" asks Server for each name's SOA.
	Zone string
	// TSIGKey is the TSIG key's name; TSIGSecretFile holds its base64
	// secret (never a flag value: process arguments are public).
	TSIGKey, TSIGSecretFile string
	// TSIGAlgorithm is hmac-sha256 (the default) or another HMAC.
	TSIGAlgorithm string
	// PropagationTimeout bounds the wait for the record to be visible
	// at Server; zero means two minutes.
	PropagationTimeout time.Duration
}

// ownCertificate reports whether Control obtains a certificate for its
// own name and serves HTTPS with it.
func ownCertificate(cfg Config) bool {
	return cfg.PublicHostname != "" && cfg.TLSCertFile == "" && cfg.TLSKeyFile == "" &&
		(cfg.Certificates == CertificatesInternal || cfg.Certificates == CertificatesACME)
}

// checkCertificateConfig checks the public hostname and the ACME
// settings at start, so that a mistake stops Control with the flag named
// instead of failing later in the certificates loop.
func checkCertificateConfig(cfg *Config) error {
	if h := cfg.PublicHostname; h != "" {
		cfg.PublicHostname = strings.ToLower(strings.TrimSuffix(h, "."))
		c := api.Certificate{Spec: api.CertificateSpec{Hostname: cfg.PublicHostname}}
		if errs := c.ValidateSpec(); len(errs) > 0 || strings.HasPrefix(cfg.PublicHostname, "*") {
			detail := "a wildcard cannot name one server"
			if len(errs) > 0 {
				detail = errs[0].Detail
			}
			return fmt.Errorf("control: --public-hostname %q: %s", h, strings.TrimPrefix(detail, fmt.Sprintf("%q ", cfg.PublicHostname)))
		}
	}
	if cfg.Certificates != CertificatesACME {
		return nil
	}
	p, err := dnsProvider(cfg.ACME.DNS)
	if err != nil {
		return err
	}
	if err := certs.CheckChallenges(cfg.ACME.Challenges, p != nil); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	return nil
}

// dnsProvider builds the DNS provider of s; nil when none is configured.
func dnsProvider(s DNSSettings) (certs.DNSProvider, error) {
	switch s.Provider {
	case "":
		if s.Server != "" || s.TSIGKey != "" || s.TSIGSecretFile != "" {
			return nil, errors.New("control: --acme-dns-server and --acme-dns-tsig-* need --acme-dns-provider rfc2136")
		}
		return nil, nil
	case "rfc2136":
	default:
		return nil, fmt.Errorf("control: --acme-dns-provider %q: the provider is rfc2136 (DNS UPDATE with TSIG: BIND, Knot, PowerDNS...)", s.Provider)
	}
	var secret string
	if s.TSIGSecretFile != "" {
		data, err := os.ReadFile(s.TSIGSecretFile)
		if err != nil {
			return nil, fmt.Errorf("control: --acme-dns-tsig-secret-file: %w", err)
		}
		secret = strings.TrimSpace(string(data))
		if secret == "" {
			return nil, fmt.Errorf("control: --acme-dns-tsig-secret-file %s: the file is empty", s.TSIGSecretFile)
		}
	}
	p, err := certs.NewRFC2136(certs.RFC2136Config{Server: s.Server, Zone: s.Zone, TSIGKey: s.TSIGKey, TSIGSecret: secret,
		TSIGAlgorithm: s.TSIGAlgorithm, PropagationTimeout: s.PropagationTimeout})
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	return p, nil
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
	dns, err := dnsProvider(cfg.ACME.DNS)
	if err != nil {
		return nil, err
	}
	acfg := certs.ACMEConfig{Store: st, Directory: cfg.ACME.Directory, Email: cfg.ACME.Email,
		TrustedRoots: roots, Logger: cfg.Logger, TLSALPN: cfg.ACME.TLSALPN, Challenges: cfg.ACME.Challenges}
	if dns != nil {
		// An interface holding a nil pointer would not be nil.
		acfg.DNS = dns
	}
	if ownCertificate(cfg) {
		acfg.ControlHostname = cfg.PublicHostname
	}
	return certs.NewACMEIssuer(acfg), nil
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

// withoutHostname hides from the bridge the tunnels that name hostname,
// Control's own public name: they are refused (HostnameReservedForControl
// in their status), so no gateway routes that name to an agent and no
// agent forwards it. A tunnel whose hostname changes to it leaves the
// gateways' slices as if deleted, and comes back when it changes again.
func withoutHostname(src reconcile.ListerWatcher, hostname string) reconcile.ListerWatcher {
	return hostnameFilter{src: src, hostname: hostname}
}

type hostnameFilter struct {
	src      reconcile.ListerWatcher
	hostname string
}

func (f hostnameFilter) reserved(obj api.Object) bool {
	t, ok := obj.(*api.Tunnel)
	return ok && t.Spec.Hostname == f.hostname
}

// List implements reconcile.ListerWatcher.
func (f hostnameFilter) List(ctx context.Context) ([]api.Object, int64, error) {
	objs, rev, err := f.src.List(ctx)
	if err != nil {
		return nil, 0, err
	}
	out := objs[:0:0]
	for _, o := range objs {
		if !f.reserved(o) {
			out = append(out, o)
		}
	}
	return out, rev, nil
}

// Watch implements reconcile.ListerWatcher: an upsert of a hidden tunnel
// becomes its deletion (a no-op for a watcher that never had it).
func (f hostnameFilter) Watch(ctx context.Context, fromRev int64) (<-chan reconcile.Event, error) {
	in, err := f.src.Watch(ctx, fromRev)
	if err != nil {
		return nil, err
	}
	return reconcile.Relay(ctx, in, func(ev reconcile.Event) (reconcile.Event, bool) {
		if (ev.Type == api.Added || ev.Type == api.Modified) && ev.Object != nil && f.reserved(ev.Object) {
			ev.Type = api.Deleted
		}
		return ev, true
	}), nil
}
