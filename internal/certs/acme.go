package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/store"
)

// LetsEncryptDirectory is the default ACME directory.
const LetsEncryptDirectory = "https://acme-v02.api.letsencrypt.org/directory"

// ACMEConfig configures an ACMEIssuer.
type ACMEConfig struct {
	// Store keeps the account key (through Storage) and the pending
	// challenges the bridge delivers. Required.
	Store *store.Store
	// Directory is the ACME directory URL; "" means Let's Encrypt
	// production.
	Directory string
	// Email is the account's contact; "" registers without one.
	Email string
	// TrustedRoots, when not nil, replace the system roots for talking
	// to the CA (a private CA, or Pebble in tests).
	TrustedRoots *x509.CertPool
	// GatewayWait bounds how long a challenge waits for the connected
	// gateways to report it applied before the CA is told to validate;
	// zero means 30 s.
	GatewayWait time.Duration
	// Logger receives the issuer's logs; nil discards them.
	Logger *slog.Logger
	// TLSALPN also offers the CA TLS-ALPN-01 challenges, answered by
	// every gateway's certificate source. Off (HTTP-01 only) by default:
	// the gateways' TLS listener must offer the "acme-tls/1" protocol.
	TLSALPN bool
	// Challenges, when not empty, are the challenge types offered for a
	// tunnel hostname that is not a wildcard, replacing HTTP-01 (and
	// TLSALPN): any of acme.ChallengeTypeHTTP01, ChallengeTypeTLSALPN01
	// and, with DNS set, ChallengeTypeDNS01.
	Challenges []string
	// DNS, when set, answers DNS-01 challenges: always those of wildcard
	// names (which a CA validates only by DNS-01), and others when
	// Challenges names dns-01. Without it a wildcard cannot be ordered.
	DNS DNSProvider
	// ControlHostname is Control's own public name: its challenge is
	// answered by DNS-01 when DNS is set, else by TLS-ALPN-01 on
	// Control's own HTTPS listener (OwnCertificate), never by gateways.
	ControlHostname string
}

// ErrDNS01Failed marks a failed order that only DNS-01 could validate:
// the provider refused the record or the CA did not see it.
var ErrDNS01Failed = errors.New("dns-01")

// ErrWildcardNeedsDNS01 is why a wildcard cannot be ordered from an ACME
// CA without a DNS provider.
var ErrWildcardNeedsDNS01 = errors.New("an ACME CA validates a wildcard name only by DNS-01, and no DNS provider is configured (--acme-dns-provider)")

// ACMEIssuer obtains certificates from an ACME CA with HTTP-01: the
// challenge goes to every gateway through the bridge, and only once the
// connected gateways report the slice that carries it is the CA told to
// validate, so whichever gateway it reaches answers.
type ACMEIssuer struct {
	cfg     ACMEConfig
	storage *Storage
	// client orders tunnel hostnames, wildcard wildcards (DNS-01 only)
	// and self Control's own name. They share one account.
	client, wildcard, self acmez.Client

	// mu guards account.
	mu sync.Mutex
	// account is the registered account, once known.
	account *acme.Account
}

// NewACMEIssuer returns an issuer; nothing is contacted until Issue.
func NewACMEIssuer(cfg ACMEConfig) *ACMEIssuer {
	if cfg.Directory == "" {
		cfg.Directory = LetsEncryptDirectory
	}
	if cfg.GatewayWait == 0 {
		cfg.GatewayWait = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if cfg.TrustedRoots != nil {
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cfg.TrustedRoots, MinVersion: tls.VersionTLS12}}
	}
	i := &ACMEIssuer{cfg: cfg, storage: NewStorage(cfg.Store)}
	ac := &acme.Client{Directory: cfg.Directory, HTTPClient: hc, UserAgent: "kakuremichi"}
	solvers := map[string]acmez.Solver{
		acme.ChallengeTypeHTTP01:    httpSolver{issuer: i},
		acme.ChallengeTypeTLSALPN01: tlsALPNSolver{httpSolver{issuer: i}},
	}
	if cfg.DNS != nil {
		solvers[acme.ChallengeTypeDNS01] = dnsSolver{cfg.DNS}
	}
	types := cfg.Challenges
	if len(types) == 0 {
		types = []string{acme.ChallengeTypeHTTP01}
		if cfg.TLSALPN {
			types = append(types, acme.ChallengeTypeTLSALPN01)
		}
	}
	i.client = acmez.Client{Client: ac, ChallengeSolvers: map[string]acmez.Solver{}}
	for _, t := range types {
		if s := solvers[t]; s != nil {
			i.client.ChallengeSolvers[t] = s
		}
	}
	i.wildcard = acmez.Client{Client: ac, ChallengeSolvers: map[string]acmez.Solver{}}
	i.self = acmez.Client{Client: ac, ChallengeSolvers: map[string]acmez.Solver{acme.ChallengeTypeTLSALPN01: selfALPNSolver{issuer: i}}}
	if cfg.DNS != nil {
		// DNS-01 needs no port of Control's to be reachable: with a
		// provider it is the one way for Control's own name too.
		i.wildcard.ChallengeSolvers[acme.ChallengeTypeDNS01] = solvers[acme.ChallengeTypeDNS01]
		i.self.ChallengeSolvers = map[string]acmez.Solver{acme.ChallengeTypeDNS01: solvers[acme.ChallengeTypeDNS01]}
	}
	return i
}

// CheckChallenges reports whether types (for ACMEConfig.Challenges) are
// all known, dns-01 only with a provider; the error names the flag.
func CheckChallenges(types []string, haveDNS bool) error {
	for _, t := range types {
		switch t {
		case acme.ChallengeTypeHTTP01, acme.ChallengeTypeTLSALPN01:
		case acme.ChallengeTypeDNS01:
			if !haveDNS {
				return errors.New("--acme-challenges dns-01: needs a DNS provider (--acme-dns-provider)")
			}
		default:
			return fmt.Errorf("--acme-challenges %q: use http-01, tls-alpn-01 or dns-01, comma separated", t)
		}
	}
	return nil
}

// accountKeyName is where the account key is kept, per directory.
func (i *ACMEIssuer) accountKeyName() string {
	sum := sha256.Sum256([]byte(i.cfg.Directory))
	return "accounts/" + hex.EncodeToString(sum[:8]) + "/key.pem"
}

// ensureAccount registers (or finds again, by its key) the account. The
// key is created once for the fleet, under a lock.
func (i *ACMEIssuer) ensureAccount(ctx context.Context) (acme.Account, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.account != nil {
		return *i.account, nil
	}
	name := i.accountKeyName()
	if err := i.storage.Lock(ctx, name); err != nil {
		return acme.Account{}, err
	}
	defer i.storage.Unlock(context.WithoutCancel(ctx), name)
	keyPEM, err := i.storage.Load(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		key, gerr := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if gerr != nil {
			return acme.Account{}, gerr
		}
		der, _ := x509.MarshalPKCS8PrivateKey(key)
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		err = i.storage.Store(ctx, name, keyPEM)
	}
	if err != nil {
		return acme.Account{}, fmt.Errorf("acme account key: %w", err)
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return acme.Account{}, errors.New("acme account key: not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return acme.Account{}, fmt.Errorf("acme account key: %w", err)
	}
	signer, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return acme.Account{}, fmt.Errorf("acme account key: a %T, want ECDSA", k)
	}
	acct := acme.Account{TermsOfServiceAgreed: true, PrivateKey: signer}
	if i.cfg.Email != "" {
		acct.Contact = []string{"mailto:" + i.cfg.Email}
	}
	// For a key the CA knows, newAccount returns the existing account.
	acct, err = i.client.NewAccount(ctx, acct)
	if err != nil {
		return acme.Account{}, fmt.Errorf("register the acme account: %w", err)
	}
	i.account = &acct
	return acct, nil
}

// Issue implements Issuer: one order for hostname.
func (i *ACMEIssuer) Issue(ctx context.Context, hostname string) (*api.CertificateKeyPair, error) {
	wildcard := strings.HasPrefix(hostname, "*.")
	if wildcard && i.cfg.DNS == nil {
		// Known before the CA is asked: no order, no failed validation.
		return nil, fmt.Errorf("acme order for %s: %w", hostname, ErrWildcardNeedsDNS01)
	}
	acct, err := i.ensureAccount(ctx)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	client := &i.client
	switch {
	case wildcard:
		client = &i.wildcard
	case hostname == i.cfg.ControlHostname:
		client = &i.self
	}
	i.cfg.Logger.Info("ordering a certificate", "hostname", hostname, "directory", i.cfg.Directory)
	certs, err := client.ObtainCertificateForSANs(ctx, acct, key, []string{hostname})
	if err != nil && wildcard {
		return nil, fmt.Errorf("acme order for %s: %w: %w", hostname, ErrDNS01Failed, err)
	}
	if err != nil {
		return nil, fmt.Errorf("acme order for %s: %w", hostname, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("acme order for %s: the CA returned no certificate", hostname)
	}
	l, err := leaf(string(certs[0].ChainPEM))
	if err != nil {
		return nil, fmt.Errorf("acme order for %s: %w", hostname, err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	return &api.CertificateKeyPair{
		TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.CertificateKeyPairKind},
		Metadata: api.ObjectMeta{Name: hostname},
		Hostname: hostname,
		ChainPEM: string(certs[0].ChainPEM),
		KeyPEM:   string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		Serial:   fmt.Sprintf("%x", l.SerialNumber),
		NotAfter: l.NotAfter.UTC(),
	}, nil
}

// Issued implements Issuer: anything not from the internal CA came from
// an ACME CA.
func (i *ACMEIssuer) Issued(l *x509.Certificate) bool {
	return !strings.HasPrefix(l.Issuer.CommonName, internalCAName)
}

// Close releases the issuer's locks.
func (i *ACMEIssuer) Close() error { return i.storage.Close() }

// httpSolver publishes HTTP-01 challenges to the gateways.
type httpSolver struct{ issuer *ACMEIssuer }

func challengeSecret(token string) string { return challengePrefix + token }

// tlsALPNSolver publishes TLS-ALPN-01 challenge certificates to the
// gateways, under the id "alpn.<hostname>" (no ACME token has a dot).
type tlsALPNSolver struct{ http httpSolver }

func alpnID(chal acme.Challenge) string { return "alpn." + chal.Identifier.Value }

// alpnChallengeRecord is the stored form of a TLS-ALPN-01 challenge: the
// challenge certificate and its key, under the id alpnID.
func alpnChallengeRecord(chal acme.Challenge) ([]byte, error) {
	cert, err := acmez.TLSALPN01ChallengeCert(chal)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, err
	}
	return json.Marshal(api.ACMEChallenge{Type: acme.ChallengeTypeTLSALPN01, Hostname: chal.Identifier.Value, Token: alpnID(chal),
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})),
		KeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))})
}

// Present stores the challenge certificate and its key.
func (s tlsALPNSolver) Present(ctx context.Context, chal acme.Challenge) error {
	data, err := alpnChallengeRecord(chal)
	if err != nil {
		return err
	}
	return s.http.issuer.cfg.Store.PutSecret(ctx, challengeSecret(alpnID(chal)), data, 0)
}

// Wait waits for the gateways as for HTTP-01.
func (s tlsALPNSolver) Wait(ctx context.Context, chal acme.Challenge) error {
	return s.http.waitFor(ctx, alpnID(chal), chal.Identifier.Value)
}

// CleanUp removes the challenge certificate from every gateway.
func (s tlsALPNSolver) CleanUp(ctx context.Context, chal acme.Challenge) error {
	return s.http.issuer.cfg.Store.DeleteSecret(ctx, challengeSecret(alpnID(chal)))
}

// Present stores the challenge; the bridge delivers it to every gateway.
func (s httpSolver) Present(ctx context.Context, chal acme.Challenge) error {
	data, err := json.Marshal(api.ACMEChallenge{Hostname: chal.Identifier.Value, Token: chal.Token, KeyAuthorization: chal.KeyAuthorization})
	if err != nil {
		return err
	}
	return s.issuer.cfg.Store.PutSecret(ctx, challengeSecret(chal.Token), data, 0)
}

// heartbeatFresh is how recent a gateway's last heartbeat must be for a
// challenge to wait for it: nodes report every 10 s, so an older one is
// down (its Connected condition lags by the whole node lease).
const heartbeatFresh = 15 * time.Second

// Wait returns once every enabled gateway with a fresh heartbeat has
// reported a slice revision that includes the challenge (or GatewayWait
// passed: the gateways that confirmed are all the CA may reach anyway).
func (s httpSolver) Wait(ctx context.Context, chal acme.Challenge) error {
	return s.waitFor(ctx, chal.Token, chal.Identifier.Value)
}

func (s httpSolver) waitFor(ctx context.Context, id, hostname string) error {
	st := s.issuer.cfg.Store
	_, rev, err := st.GetSecret(ctx, challengeSecret(id))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(s.issuer.cfg.GatewayWait)
	for {
		objs, _, err := st.List(ctx, "Gateway", api.Selector{})
		if err != nil {
			return err
		}
		var behind []string
		for _, o := range objs {
			g := o.(*api.Gateway)
			hb := g.Status.LastHeartbeat
			if !g.Spec.IsEnabled() || !api.IsConditionTrue(g.Status.Conditions, api.NodeConnected) || hb == nil || time.Since(*hb) > heartbeatFresh {
				continue
			}
			if g.Status.Revision < rev {
				behind = append(behind, g.Metadata.Name)
			}
		}
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			s.issuer.cfg.Logger.Warn("acme: gateways have not confirmed the challenge; asking the CA to validate anyway",
				"hostname", hostname, "gateways", behind)
			return nil
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// CleanUp removes the challenge from every gateway.
func (s httpSolver) CleanUp(ctx context.Context, chal acme.Challenge) error {
	return s.issuer.cfg.Store.DeleteSecret(ctx, challengeSecret(chal.Token))
}
