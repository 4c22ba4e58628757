package certs

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/store"
)

// Defaults for zero Config fields.
const (
	// DefaultLifetime matches what public CAs issue, so internal mode
	// renews on the same rhythm as ACME would.
	DefaultLifetime = 90 * 24 * time.Hour
	// DefaultResync is how often every certificate is checked again even
	// when nothing changed.
	DefaultResync = time.Minute
)

// lockName names the etcd lock held while certificates are examined and
// issued: with several Control replicas, one issues and the others find
// its certificate when they get the lock.
const lockName = "certificates"

// Config configures a Controller.
type Config struct {
	// Store holds tunnels, Certificates, the CA and the key pairs.
	// Required.
	Store *store.Store
	// Logger receives the controller's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Lifetime is the validity of issued certificates; zero means
	// DefaultLifetime. Renewal starts when a third of it remains.
	Lifetime time.Duration
	// Resync is how often every certificate is checked even without a
	// change; zero means DefaultResync.
	Resync time.Duration
	// Issuer obtains certificates; nil means the internal CA, loaded
	// from (or created in) the store when Run starts.
	Issuer Issuer
	// ControlHostname is Control's own public name, "" for none: no
	// tunnel can cause a certificate for it (see WantedHostnames).
	ControlHostname string
	// IssueControlCertificate makes the controller keep a certificate
	// for ControlHostname too, for Control's listener: the Certificate
	// named ControlCertificate and a key pair in a secret of its own,
	// which the bridge never delivers. False when Control serves a
	// certificate from files.
	IssueControlCertificate bool
	// RetryBase is the wait after a first failed attempt for a hostname;
	// it doubles with each further failure up to MaxRetryWait. Zero
	// means DefaultRetryBase.
	RetryBase time.Duration
}

// DefaultRetryBase and MaxRetryWait bound the backoff of a hostname whose
// certificate cannot be obtained; a rate-limited one waits at least
// rateLimitWait.
const (
	DefaultRetryBase = time.Minute
	MaxRetryWait     = 6 * time.Hour
	rateLimitWait    = time.Hour
)

// Issuer obtains certificates for the controller.
type Issuer interface {
	// Issue obtains a certificate and its key for hostname.
	Issue(ctx context.Context, hostname string) (*api.CertificateKeyPair, error)
	// Issued reports whether leaf comes from this issuer: a certificate
	// of another one (after a change of mode) is replaced at once.
	Issued(leaf *x509.Certificate) bool
}

// caIssuer is the internal CA as an Issuer.
type caIssuer struct {
	ca       *CA
	now      func() time.Time
	lifetime time.Duration
}

func (i caIssuer) Issue(_ context.Context, hostname string) (*api.CertificateKeyPair, error) {
	return i.ca.Issue(hostname, i.now(), i.lifetime)
}

func (i caIssuer) Issued(leaf *x509.Certificate) bool {
	return leaf.CheckSignatureFrom(i.ca.cert) == nil
}

// InternalIssuer returns ca as an Issuer with the controller's clock and
// lifetime.
func (c *Controller) InternalIssuer(ca *CA) Issuer {
	return caIssuer{ca: ca, now: c.cfg.Now, lifetime: c.cfg.Lifetime}
}

// Controller keeps one certificate, signed by the internal CA, for every
// hostname of an enabled http tunnel: it creates the Certificate resource,
// issues and renews the key pair the bridge delivers to gateways, writes
// the status, and removes both when the tunnel goes. Each pass is
// level-triggered: it compares what is stored with what tunnels want and
// can be run again at any time.
type Controller struct {
	cfg Config
	log *slog.Logger
}

// New returns a Controller; nothing runs until Run.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	return &Controller{cfg: cfg, log: cfg.Logger}
}

// Run loads (or creates) the CA, then reconciles on every change to
// tunnels or certificates, at each renewal time and every Resync, until
// ctx is done. Passes that fail are retried with backoff.
func (c *Controller) Run(ctx context.Context) error {
	iss := c.cfg.Issuer
	backoff := newBackoff()
	for iss == nil {
		ca, err := LoadOrCreateCA(ctx, c.cfg.Store, c.cfg.Now())
		if err != nil {
			c.log.Warn("certificates: cannot load the internal CA yet; retrying", "err", err)
			if !sleep(ctx, backoff.next()) {
				return ctx.Err()
			}
			continue
		}
		iss = c.InternalIssuer(ca)
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	trigger := make(chan struct{}, 1)
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	wg.Add(4)
	go func() { defer wg.Done(); c.watchKind(runCtx, "Tunnel", poke) }()
	// A Certificate created or changed by hand is set right at once.
	go func() { defer wg.Done(); c.watchKind(runCtx, "Certificate", poke) }()
	go func() { defer wg.Done(); c.watchSecrets(runCtx, keyPairPrefix, poke) }()
	go func() { defer wg.Done(); c.watchSecrets(runCtx, controlKeyPairSecret, poke) }()

	backoff = newBackoff()
	var session *concurrency.Session
	defer func() {
		if session != nil {
			session.Close()
		}
	}()
	for {
		wait := c.cfg.Resync
		next, err := func() (time.Time, error) {
			if session != nil {
				select {
				case <-session.Done():
					session = nil
				default:
				}
			}
			if session == nil {
				s, err := concurrency.NewSession(c.cfg.Store.Client(), concurrency.WithTTL(15), concurrency.WithContext(runCtx))
				if err != nil {
					return time.Time{}, fmt.Errorf("open a lock session: %w", err)
				}
				session = s
			}
			return c.passLocked(runCtx, concurrency.NewMutex(session, c.cfg.Store.LockKey(lockName)), iss)
		}()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			wait = backoff.next()
			c.log.Warn("certificates: pass failed; retrying", "err", err, "in", wait)
		default:
			backoff = newBackoff()
			if !next.IsZero() {
				if d := next.Sub(c.cfg.Now()); d < wait {
					wait = max(d, time.Second)
				}
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-trigger:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (c *Controller) passLocked(ctx context.Context, mu *concurrency.Mutex, iss Issuer) (time.Time, error) {
	if err := mu.Lock(ctx); err != nil {
		return time.Time{}, fmt.Errorf("take the certificates lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := mu.Unlock(uctx); err != nil {
			c.log.Warn("certificates: release the lock", "err", err)
		}
	}()
	return c.Pass(ctx, iss)
}

// watchKind pokes on every change to objects of kind, re-watching after
// errors, until ctx is done.
func (c *Controller) watchKind(ctx context.Context, kind string, poke func()) {
	for ctx.Err() == nil {
		ch, err := c.cfg.Store.Watch(ctx, kind, 0)
		if err == nil {
			poke() // changes between two watches are caught by this pass
			for range ch {
				poke()
			}
		}
		sleep(ctx, time.Second)
	}
}

// watchSecrets pokes when a key pair under prefix changes, so that a
// pair deleted by hand is issued again at once.
func (c *Controller) watchSecrets(ctx context.Context, prefix string, poke func()) {
	for ctx.Err() == nil {
		ch, err := c.cfg.Store.WatchSecrets(ctx, prefix, 0)
		if err == nil {
			poke()
			for range ch {
				poke()
			}
		}
		sleep(ctx, time.Second)
	}
}

// Pass runs one reconcile of every certificate with iss as the issuer and
// returns the earliest time a certificate needs renewing (zero: none).
// The caller holds the lock, so that only one replica orders at a time
// and finds what another one already obtained.
func (c *Controller) Pass(ctx context.Context, iss Issuer) (time.Time, error) {
	st := c.cfg.Store
	now := c.cfg.Now()
	tunnels, _, err := st.List(ctx, "Tunnel", api.Selector{})
	if err != nil {
		return time.Time{}, err
	}
	ctlHost := c.cfg.ControlHostname
	want := WantedHostnames(tunnels, ctlHost)
	objs, _, err := st.List(ctx, "Certificate", api.Selector{})
	if err != nil {
		return time.Time{}, err
	}
	certs := map[string]*api.Certificate{}
	var ctlCert *api.Certificate
	var errs []error
	for _, o := range objs {
		cert := o.(*api.Certificate)
		h := cert.Spec.Hostname
		if cert.Metadata.Name == ControlCertificate && c.cfg.IssueControlCertificate && h == ctlHost {
			ctlCert = cert
			continue
		}
		if !want[h] || cert.Metadata.Name != api.CertificateName(h) || certs[h] != nil {
			if _, err := st.Delete(ctx, "Certificate", cert.Metadata.Name, store.DeleteOptions{ResourceVersion: cert.Metadata.ResourceVersion}); err != nil && !errors.Is(err, api.ErrNotFound) {
				errs = append(errs, err)
			}
			continue
		}
		certs[h] = cert
	}
	secrets, _, err := st.ListSecrets(ctx, keyPairPrefix)
	if err != nil {
		return time.Time{}, err
	}
	pairs := map[string]store.Secret{}
	for _, s := range secrets {
		host := strings.TrimPrefix(s.Name, keyPairPrefix)
		if !want[host] {
			// The tunnel is gone or disabled: its key leaves every
			// gateway with the next slice. (So does a pair of Control's
			// own name kept here by an older version: the gateways had
			// it, so Control gets a new key of its own.)
			if err := st.DeleteSecret(ctx, s.Name); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		pairs[host] = s
	}
	hosts := make([]string, 0, len(want))
	for h := range want {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	var earliest time.Time
	note := func(renew time.Time, err error) {
		if err != nil {
			errs = append(errs, err)
		}
		if !renew.IsZero() && (earliest.IsZero() || renew.Before(earliest)) {
			earliest = renew
		}
	}
	for _, h := range hosts {
		note(c.reconcileHost(ctx, iss, target{host: h, cert: api.CertificateName(h), secret: keyPairSecret(h)}, certs[h], pairs[h], now))
	}
	ctlPair, err := c.controlPair(ctx)
	if err != nil {
		return earliest, errors.Join(append(errs, err)...)
	}
	if c.cfg.IssueControlCertificate && ctlHost != "" {
		note(c.reconcileHost(ctx, iss, target{host: ctlHost, cert: ControlCertificate, secret: controlKeyPairSecret}, ctlCert, ctlPair, now))
	} else if ctlPair.Name != "" {
		// Control no longer obtains its own certificate: the old key
		// goes.
		if err := st.DeleteSecret(ctx, controlKeyPairSecret); err != nil {
			errs = append(errs, err)
		}
	}
	return earliest, errors.Join(errs...)
}

// controlPair reads Control's own key pair; a zero Secret when there is
// none.
func (c *Controller) controlPair(ctx context.Context) (store.Secret, error) {
	data, rev, err := c.cfg.Store.GetSecret(ctx, controlKeyPairSecret)
	switch {
	case errors.Is(err, api.ErrNotFound):
		return store.Secret{}, nil
	case err != nil:
		return store.Secret{}, err
	}
	return store.Secret{Name: controlKeyPairSecret, Value: data, Revision: rev}, nil
}

// target is what reconcileHost keeps for one hostname: the name of its
// Certificate and of the secret holding its key pair.
type target struct{ host, cert, secret string }

// reconcileHost makes sure tg.host has its Certificate and a current key
// pair, and returns when the pair is due for renewal.
func (c *Controller) reconcileHost(ctx context.Context, iss Issuer, tg target, cert *api.Certificate, sec store.Secret, now time.Time) (time.Time, error) {
	st := c.cfg.Store
	host := tg.host
	if cert == nil {
		created, err := st.Create(ctx, &api.Certificate{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Certificate"},
			Metadata: api.ObjectMeta{Name: tg.cert}, Spec: api.CertificateSpec{Hostname: host}}, store.WriteOptions{})
		if errors.Is(err, api.ErrAlreadyExists) {
			var obj api.Object
			if obj, err = st.Get(ctx, "Certificate", tg.cert); err == nil {
				created = obj
			}
		}
		if err != nil {
			return time.Time{}, fmt.Errorf("create the certificate of %s: %w", host, err)
		}
		cert = created.(*api.Certificate)
	}
	// prev is the stored leaf, l the one to describe in status: prev
	// while it is current, else the new one.
	var l, prev *x509.Certificate
	if sec.Name != "" {
		if obj, err := decodeKeyPair(host, sec.Value, sec.Revision); err == nil {
			if prev, err = leaf(obj.(*api.CertificateKeyPair).ChainPEM); err == nil && current(prev, iss, now) {
				l = prev
			}
		}
	}
	if l == nil && cert.Status.NextAttempt != nil && now.Before(*cert.Status.NextAttempt) {
		// Backing off after a failure: the status already says why.
		return *cert.Status.NextAttempt, nil
	}
	var issueErr error
	if l == nil {
		kp, err := iss.Issue(ctx, host)
		if err == nil {
			var data []byte
			if data, err = json.Marshal(kp); err == nil {
				if sec.Name == "" {
					err = st.CreateSecret(ctx, tg.secret, data)
				} else {
					err = st.PutSecret(ctx, tg.secret, data, sec.Revision)
				}
			}
			if err == nil {
				l, err = leaf(kp.ChainPEM)
			}
		}
		if err != nil {
			issueErr = fmt.Errorf("issue the certificate of %s: %w", host, err)
		} else {
			c.log.Info("certificate issued", "hostname", host, "serial", kp.Serial, "not_after", kp.NotAfter)
		}
	}
	next := cert.Status
	next.ObservedGeneration = cert.Metadata.Generation
	if issueErr != nil && prev != nil && now.Before(prev.NotAfter) {
		// Renewal failed but the stored certificate is still valid:
		// gateways keep serving it (the key pair was not touched).
		l = prev
	}
	ready := api.Condition{Type: api.ConditionReady, ObservedGeneration: cert.Metadata.Generation}
	var renew time.Time
	reason := ""
	if issueErr != nil {
		var atLeast time.Duration
		reason, atLeast = classifyIssueError(issueErr)
		next.Failures = cert.Status.Failures + 1
		wait := c.cfg.RetryBase << min(next.Failures-1, 20)
		if wait > MaxRetryWait || wait <= 0 {
			wait = MaxRetryWait
		}
		wait = max(wait, atLeast)
		at := now.Add(wait).UTC().Truncate(time.Second)
		next.NextAttempt = &at
		c.log.Warn("certificates: obtaining a certificate failed; retrying later", "hostname", host, "reason", reason,
			"failures", next.Failures, "next_attempt", at, "err", issueErr)
	} else if l != nil {
		next.Failures, next.NextAttempt = 0, nil
	}
	switch {
	case l != nil:
		renew = renewAt(l)
		nb, na := l.NotBefore.UTC(), l.NotAfter.UTC()
		next.State, next.Serial, next.Issuer = api.CertificateIssued, fmt.Sprintf("%x", l.SerialNumber), l.Issuer.String()
		next.NotBefore, next.NotAfter, next.RenewAfter = &nb, &na, &renew
		ready.Status, ready.Reason = api.ConditionTrue, api.ReasonIssued
		ready.Message = fmt.Sprintf("valid until %s, served by every gateway", na.Format(time.RFC3339))
		if issueErr != nil {
			// The old certificate is still good: keep serving it, and
			// wake up for the next attempt.
			ready.Message += fmt.Sprintf("; renewal failed (%s), next attempt at %s: %v", reason, next.NextAttempt.Format(time.RFC3339), issueErr)
			renew = *next.NextAttempt
		}
	case issueErr != nil:
		next.State = api.CertificateFailed
		ready.Status, ready.Reason = api.ConditionFalse, reason
		ready.Message = fmt.Sprintf("%v; next attempt at %s", issueErr, next.NextAttempt.Format(time.RFC3339))
		renew = *next.NextAttempt
	default:
		next.State = api.CertificatePending
		ready.Status, ready.Reason = api.ConditionFalse, api.ReasonIssuing
	}
	conds := append([]api.Condition(nil), cert.Status.Conditions...)
	api.SetCondition(&conds, ready, now)
	next.Conditions = conds
	if !sameStatus(cert.Status, next) {
		upd := api.Clone(cert)
		upd.Status = next
		if _, err := st.UpdateStatus(ctx, upd, store.WriteOptions{}); err != nil {
			return renew, fmt.Errorf("write the status of certificate %s: %w", host, err)
		}
	}
	// A CA's refusal is in the status and retried on its own schedule;
	// it is not a failure of the pass.
	return renew, nil
}

// classifyIssueError turns an issuance error into a condition reason and
// the least wait the CA asks for.
func classifyIssueError(err error) (string, time.Duration) {
	msg := err.Error()
	var nerr net.Error
	switch {
	case errors.Is(err, ErrWildcardNeedsDNS01):
		return api.ReasonWildcardNeedsDNS01, 0
	case strings.Contains(msg, "urn:ietf:params:acme:error:rateLimited"):
		return api.ReasonRateLimited, rateLimitWait
	case errors.Is(err, ErrDNSProvider):
		return api.ReasonDNSChallengeFailed, 0
	case strings.Contains(msg, "urn:ietf:params:acme:error:connection"), strings.Contains(msg, "urn:ietf:params:acme:error:dns"),
		strings.Contains(msg, "urn:ietf:params:acme:error:unauthorized"), strings.Contains(msg, "urn:ietf:params:acme:error:incorrectResponse"):
		if errors.Is(err, ErrDNS01Failed) {
			// The CA looked for the TXT record, not at a gateway.
			return api.ReasonDNSChallengeFailed, 0
		}
		return api.ReasonDNSNotPointingAtGateway, 0
	case strings.Contains(msg, "urn:ietf:params:acme:error:"):
		return api.ReasonCARefused, 0
	case errors.As(err, &nerr):
		return api.ReasonCAUnreachable, 0
	}
	return api.ReasonIssueFailed, 0
}

func sameStatus(a, b api.CertificateStatus) bool {
	da, _ := json.Marshal(a)
	db, _ := json.Marshal(b)
	return string(da) == string(db)
}

// current reports whether l comes from iss and is not yet due for
// renewal.
func current(l *x509.Certificate, iss Issuer, now time.Time) bool {
	if !iss.Issued(l) {
		return false
	}
	return now.Before(renewAt(l))
}

// renewAt is the start of the last third of l's lifetime.
func renewAt(l *x509.Certificate) time.Time {
	life := l.NotAfter.Sub(l.NotBefore)
	return l.NotAfter.Add(-life / 3)
}

// WantedHostnames returns the tunnel hostnames that may have a
// certificate: those of enabled http tunnels that own their hostname (the
// older tunnel wins a contested one, as everywhere else) and are not
// being deleted. controlHostname, Control's own public name, is never one
// of them: it is reserved for Control, whose key no gateway may hold.
// Nothing else can ever cause an issuance.
func WantedHostnames(tunnels []api.Object, controlHostname string) map[string]bool {
	sorted := make([]*api.Tunnel, 0, len(tunnels))
	for _, o := range tunnels {
		sorted = append(sorted, o.(*api.Tunnel))
	}
	sort.Slice(sorted, func(i, j int) bool {
		a, b := sorted[i].Metadata, sorted[j].Metadata
		if !a.CreationTimestamp.Equal(b.CreationTimestamp) {
			return a.CreationTimestamp.Before(b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	claimed := map[string]bool{}
	want := map[string]bool{}
	for _, t := range sorted {
		h := t.Spec.Hostname
		if claimed[h] {
			continue
		}
		claimed[h] = true
		if h != controlHostname && t.Spec.IsEnabled() && t.Metadata.DeletionTimestamp == nil && !strings.HasPrefix(t.Spec.Target, "tcp://") {
			want[h] = true
		}
	}
	return want
}

// backoff doubles from one second to five minutes.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) next() time.Duration {
	if b.d == 0 {
		b.d = time.Second
	} else if b.d *= 2; b.d > 5*time.Minute {
		b.d = 5 * time.Minute
	}
	return b.d
}

// sleep waits d or until ctx is done, reporting whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// RootPEM returns the internal CA's root certificate, PEM encoded, or an
// error wrapping api.ErrNotFound before Control created it.
func RootPEM(ctx context.Context, st *store.Store) ([]byte, error) {
	data, _, err := st.GetSecret(ctx, CASecret)
	if err != nil {
		return nil, fmt.Errorf("read the internal CA: %w", err)
	}
	ca, err := parseCA(data)
	if err != nil {
		return nil, err
	}
	return ca.RootPEM(), nil
}
