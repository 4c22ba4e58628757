package certs

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/store"
)

// selfChallengePrefix keeps the TLS-ALPN-01 challenges of Control's own
// name apart from the gateways' (the bridge never lists them): Control's
// listener answers them, whichever replica the CA reaches, by reading
// the store.
const selfChallengePrefix = "challenges/control/"

// selfALPNSolver publishes the TLS-ALPN-01 challenge of Control's own
// name for Control's listeners.
type selfALPNSolver struct{ issuer *ACMEIssuer }

// Present stores the challenge certificate; every replica reads it at
// the CA's handshake, so there is nothing to wait for.
func (s selfALPNSolver) Present(ctx context.Context, chal acme.Challenge) error {
	data, err := alpnChallengeRecord(chal)
	if err != nil {
		return err
	}
	return s.issuer.cfg.Store.PutSecret(ctx, selfChallengePrefix+alpnID(chal), data, 0)
}

// CleanUp removes the challenge.
func (s selfALPNSolver) CleanUp(ctx context.Context, chal acme.Challenge) error {
	return s.issuer.cfg.Store.DeleteSecret(ctx, selfChallengePrefix+alpnID(chal))
}

// OwnCertificate is Control's certificate for its own public hostname,
// for its HTTPS listener: the key pair the certificates controller keeps
// for that name (from the internal CA or ACME) in a secret of its own,
// which no gateway ever receives, reloaded whenever it changes, and a
// self-signed stand-in until the first one exists.
type OwnCertificate struct {
	st       *store.Store
	host     string
	log      *slog.Logger
	cur      atomic.Pointer[tls.Certificate]
	fallback *tls.Certificate
}

// NewOwnCertificate returns the certificate source of hostname; Run
// loads and follows it.
func NewOwnCertificate(st *store.Store, hostname string, log *slog.Logger) (*OwnCertificate, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ca, err := newCA(time.Now())
	if err != nil {
		return nil, err
	}
	self, err := parseCA(ca)
	if err != nil {
		return nil, err
	}
	kp, err := self.Issue(hostname, time.Now(), 7*24*time.Hour)
	if err != nil {
		return nil, err
	}
	fb, err := tls.X509KeyPair([]byte(kp.ChainPEM), []byte(kp.KeyPEM))
	if err != nil {
		return nil, err
	}
	return &OwnCertificate{st: st, host: hostname, log: log, fallback: &fb}, nil
}

// TLSConfig returns a server configuration that serves the certificate
// and answers TLS-ALPN-01 validations of the hostname.
func (o *OwnCertificate) TLSConfig() *tls.Config {
	return &tls.Config{GetCertificate: o.GetCertificate, MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1", acmeTLS1}}
}

// acmeTLS1 is the ALPN protocol of TLS-ALPN-01 validations (RFC 8737).
const acmeTLS1 = "acme-tls/1"

// GetCertificate is for tls.Config.GetCertificate.
func (o *OwnCertificate) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if slices.Contains(hello.SupportedProtos, acmeTLS1) {
		name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
		if name != o.host {
			return nil, fmt.Errorf("no tls-alpn-01 challenge for %q", name)
		}
		ctx := hello.Context()
		if ctx == nil {
			ctx = context.Background()
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		data, _, err := o.st.GetSecret(ctx, selfChallengePrefix+"alpn."+name)
		if err != nil {
			return nil, fmt.Errorf("tls-alpn-01 challenge of %s: %w", name, err)
		}
		var ch api.ACMEChallenge
		if err := json.Unmarshal(data, &ch); err != nil {
			return nil, fmt.Errorf("tls-alpn-01 challenge of %s: %w", name, err)
		}
		cert, err := tls.X509KeyPair([]byte(ch.CertPEM), []byte(ch.KeyPEM))
		if err != nil {
			return nil, fmt.Errorf("tls-alpn-01 challenge of %s: %w", name, err)
		}
		return &cert, nil
	}
	if c := o.cur.Load(); c != nil {
		return c, nil
	}
	return o.fallback, nil
}

// Serial returns the serial (hex) of the certificate being served, ""
// while it is the stand-in.
func (o *OwnCertificate) Serial() string {
	if c := o.cur.Load(); c != nil {
		return fmt.Sprintf("%x", c.Leaf.SerialNumber)
	}
	return ""
}

// Run loads the key pair and follows its changes until ctx is done.
func (o *OwnCertificate) Run(ctx context.Context) error {
	name := controlKeyPairSecret
	for ctx.Err() == nil {
		// Watch from the store's revision read before the value, not
		// from the value's own (long compacted for a certificate that
		// has not changed in weeks): nothing is missed, and a change
		// seen twice is loaded once.
		rev, err := o.st.Revision(ctx)
		if err == nil {
			var data []byte
			data, _, err = o.st.GetSecret(ctx, name)
			if err == nil {
				o.load(data)
			} else if errors.Is(err, api.ErrNotFound) {
				err = nil
			}
		}
		if err != nil {
			o.log.Warn("control certificate: cannot read it yet", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		ch, err := o.st.WatchSecrets(wctx, name, rev+1)
		if err == nil {
			for ev := range ch {
				if ev.Type == api.Error {
					break
				}
				if ev.Name == name && ev.Type != api.Deleted {
					o.load(ev.Value)
				}
			}
		}
		cancel()
		sleep(ctx, time.Second)
	}
	return ctx.Err()
}

func (o *OwnCertificate) load(data []byte) {
	var kp api.CertificateKeyPair
	if err := json.Unmarshal(data, &kp); err != nil {
		o.log.Warn("control certificate: cannot decode it", "err", err)
		return
	}
	if kp.Hostname != o.host {
		// Left by a run with another --public-hostname; the controller
		// replaces it.
		o.log.Info("control certificate: the stored one is for another name; waiting for a new one", "stored", kp.Hostname, "hostname", o.host)
		return
	}
	cert, err := tls.X509KeyPair([]byte(kp.ChainPEM), []byte(kp.KeyPEM))
	if err != nil {
		o.log.Warn("control certificate: cannot load it", "err", err)
		return
	}
	if prev := o.cur.Load(); prev != nil && prev.Leaf.SerialNumber.Cmp(cert.Leaf.SerialNumber) == 0 {
		return
	}
	o.cur.Store(&cert)
	o.log.Info("control certificate loaded", "hostname", o.host, "serial", kp.Serial, "not_after", kp.NotAfter)
}
