// Package certsource serves a gateway's certificates from its slice: the
// "cert/<hostname>" items Control delivers are parsed once, swapped in
// whole, and handed to TLS handshakes by SNI through
// gateway.Config.GetCertificate, so a new or renewed certificate is served
// from the next handshake on, with no restart. Because nodes keep their
// last slice on disk, a gateway restarted while Control is down serves the
// same certificates.
//
// It imports only the standard library and api/bridge.
package certsource

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// Config configures a Source.
type Config struct {
	// Logger receives the source's logs; nil discards them.
	Logger *slog.Logger
	// HTTPSPort is the port redirects to HTTPS name; zero (or 443)
	// leaves the port out of the URL.
	HTTPSPort int
}

// Source holds the certificates of the latest slice.
type Source struct {
	log *slog.Logger
	// httpsPort is Config.HTTPSPort.
	httpsPort int
	// certs is the current table, replaced whole by Apply and read
	// without locks by handshakes.
	certs atomic.Pointer[table]
}

// table maps a lower-case hostname to its parsed certificate, and keeps
// the item each came from so that an unchanged one is not parsed again.
type table struct {
	byHost map[string]*tls.Certificate
	items  map[string]bridge.Certificate
	// challenges are the pending ACME HTTP-01 challenges by token.
	challenges map[string]bridge.Challenge
	// alpn are the TLS-ALPN-01 challenge certificates by hostname.
	alpn map[string]*tls.Certificate
}

func newTable() *table {
	return &table{byHost: map[string]*tls.Certificate{}, items: map[string]bridge.Certificate{},
		challenges: map[string]bridge.Challenge{}, alpn: map[string]*tls.Certificate{}}
}

// New returns a Source that serves nothing until Apply.
func New(cfg Config) *Source {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{log: cfg.Logger, httpsPort: cfg.HTTPSPort}
	s.certs.Store(newTable())
	return s
}

// Apply takes the certificates of a slice; hostnames missing from it stop
// being served. A certificate that does not parse is skipped and reported
// in the error; the others are still applied.
func (s *Source) Apply(sl bridge.Slice) error {
	old := s.certs.Load()
	next := newTable()
	var errs []error
	for key, it := range sl {
		if ch := it.Challenge; ch != nil && strings.HasPrefix(key, "acme-http/") {
			next.challenges[ch.Token] = *ch
			continue
		}
		if ch := it.Challenge; ch != nil && strings.HasPrefix(key, "acme-tls/") {
			cert, err := tls.X509KeyPair([]byte(ch.CertPEM), []byte(ch.KeyPEM))
			if err != nil {
				errs = append(errs, fmt.Errorf("load tls-alpn-01 challenge of %s: %w", ch.Hostname, err))
				continue
			}
			next.alpn[strings.ToLower(ch.Hostname)] = &cert
			continue
		}
		c := it.Certificate
		if c == nil || !strings.HasPrefix(key, "cert/") {
			continue
		}
		host := strings.ToLower(c.Hostname)
		if prev, ok := old.items[host]; ok && prev == *c {
			next.byHost[host], next.items[host] = old.byHost[host], prev
			continue
		}
		cert, err := tls.X509KeyPair([]byte(c.ChainPEM), []byte(c.KeyPEM))
		if err != nil {
			errs = append(errs, fmt.Errorf("load certificate of %s: %w", host, err))
			continue
		}
		if err := cert.Leaf.VerifyHostname(host); err != nil {
			errs = append(errs, fmt.Errorf("load certificate of %s: %w", host, err))
			continue
		}
		next.byHost[host], next.items[host] = &cert, *c
		s.log.Info("certificate loaded", "hostname", host, "serial", c.Serial, "not_after", c.NotAfter)
	}
	s.certs.Store(next)
	return errors.Join(errs...)
}

// GetCertificate returns the certificate for the handshake's SNI name, or
// nil (and no error) when there is none, so that the gateway falls back to
// its own. A TLS-ALPN-01 validation (ALPN "acme-tls/1") gets the challenge
// certificate of its name, and nothing else.
func (s *Source) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	tbl := s.certs.Load()
	if slices.Contains(hello.SupportedProtos, ACMETLS1Protocol) {
		if c := tbl.alpn[name]; c != nil {
			return c, nil
		}
		return nil, fmt.Errorf("no tls-alpn-01 challenge pending for %q", name)
	}
	if name == "" {
		return nil, nil
	}
	if c := tbl.byHost[name]; c != nil {
		return c, nil
	}
	return tbl.byHost[wildcardOf(name)], nil
}

// wildcardOf returns the wildcard name that covers name ("*.example.com"
// for a.example.com), or "" when none can ("example.com").
func wildcardOf(name string) string {
	if _, parent, ok := strings.Cut(name, "."); ok && strings.Contains(parent, ".") {
		return "*." + parent
	}
	return ""
}

// ACMETLS1Protocol is the ALPN protocol of TLS-ALPN-01 validations (RFC
// 8737). The gateway's TLS configuration must offer it in NextProtos for
// such a handshake to reach GetCertificate at all.
const ACMETLS1Protocol = "acme-tls/1"

// Serial returns the serial of the certificate served for hostname, ""
// when there is none: what a gateway may report to show which certificate
// it holds.
func (s *Source) Serial(hostname string) string {
	return s.certs.Load().items[strings.ToLower(hostname)].Serial
}

// ListenPort returns the port of a listen address such as ":443", for
// Config.HTTPSPort; zero when it has none.
func ListenPort(listen string) int {
	_, p, err := net.SplitHostPort(listen)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// ApplyBoth returns a slice applier that gives each slice to s first and
// then to apply (the gateway's own), so a certificate is in place by the
// time its route is; both errors are returned.
func ApplyBoth(s *Source, apply func(bridge.Slice) error) func(bridge.Slice) error {
	return func(sl bridge.Slice) error {
		return errors.Join(s.Apply(sl), apply(sl))
	}
}

// challengePath is where ACME HTTP-01 validations ask (RFC 8555 8.3).
const challengePath = "/.well-known/acme-challenge/"

// WrapHTTP is for gateway.Config.WrapHTTP: it answers ACME HTTP-01
// challenges from the slice, whichever gateway the CA reaches; it
// redirects requests for a hostname that has a certificate to HTTPS with
// 308 (unless its tunnel opted out); and it hands every other request to
// next. A token is answered only for the hostname it was issued for.
func (s *Source) WrapHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := strings.ToLower(strings.TrimSuffix(r.Host, "."))
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = strings.TrimSuffix(h, ".")
		}
		tbl := s.certs.Load()
		token, isChallenge := strings.CutPrefix(r.URL.Path, challengePath)
		if !isChallenge {
			c, ok := tbl.items[host]
			if !ok {
				c, ok = tbl.items[wildcardOf(host)]
			}
			if ok && c.RedirectHTTP {
				target := "https://" + host
				if s.httpsPort != 0 && s.httpsPort != 443 {
					target += ":" + strconv.Itoa(s.httpsPort)
				}
				http.Redirect(w, r, target+r.URL.RequestURI(), http.StatusPermanentRedirect)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		ch, found := tbl.challenges[token]
		if !found || !strings.EqualFold(strings.TrimSuffix(host, "."), ch.Hostname) {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(ch.KeyAuthorization))
	})
}
