package certs

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// failingIssuer is the internal CA with failures switched on and off, to
// stand for an ACME CA that refuses, rate limits or cannot validate.
type failingIssuer struct {
	Issuer
	mu    sync.Mutex // guards fail and calls
	fail  error
	calls int
}

func (f *failingIssuer) Issue(ctx context.Context, host string) (*api.CertificateKeyPair, error) {
	f.mu.Lock()
	f.calls++
	err := f.fail
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return f.Issuer.Issue(ctx, host)
}

func (f *failingIssuer) set(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

func (f *failingIssuer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func TestFailuresBackOffPerHostnameAndKeepTheOldCertificate(t *testing.T) {
	st := openStore(t)
	start := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	now := start
	create(t, st, tunnel("web", "web.example.com", "http://localhost:8080", true))
	ca, err := LoadOrCreateCA(testCtx(t), st, now)
	if err != nil {
		t.Fatalf("LoadOrCreateCA: got %v, want nil", err)
	}
	c := New(Config{Store: st, Now: func() time.Time { return now }, Lifetime: 90 * time.Hour, RetryBase: time.Minute})
	iss := &failingIssuer{Issuer: c.InternalIssuer(ca)}
	refused := errors.New("acme order: HTTP 400 urn:ietf:params:acme:error:rejectedIdentifier - no")
	limited := errors.New("acme order: HTTP 429 urn:ietf:params:acme:error:rateLimited - too many")
	noDNS := errors.New("acme order: HTTP 400 urn:ietf:params:acme:error:connection - connection refused")

	steps := []struct {
		name      string
		at        time.Duration // since start
		fail      error
		calls     int // total Issue calls after the pass
		state     string
		reason    string
		failures  int
		nextAfter time.Duration // NextAttempt - now, at least; 0 = none expected
	}{
		{"refused", 0, refused, 1, api.CertificateFailed, api.ReasonCARefused, 1, time.Minute},
		{"within backoff", 30 * time.Second, refused, 1, api.CertificateFailed, api.ReasonCARefused, 1, 0},
		{"after backoff", 61 * time.Second, refused, 2, api.CertificateFailed, api.ReasonCARefused, 2, 2 * time.Minute},
		{"rate limited", 4 * time.Minute, limited, 3, api.CertificateFailed, api.ReasonRateLimited, 3, time.Hour},
		{"still limited", 30 * time.Minute, nil, 3, api.CertificateFailed, api.ReasonRateLimited, 3, 0},
		{"issued", 65 * time.Minute, nil, 4, api.CertificateIssued, api.ReasonIssued, 0, 0},
	}
	for _, s := range steps {
		now = start.Add(s.at)
		iss.set(s.fail)
		if _, err := c.Pass(testCtx(t), iss); err != nil {
			t.Fatalf("%s: Pass got %v, want nil (CA errors go to status)", s.name, err)
		}
		cs := certificates(t, st)["web.example.com"].Status
		ready := api.FindCondition(cs.Conditions, api.ConditionReady)
		if iss.count() != s.calls || cs.State != s.state || ready == nil || ready.Reason != s.reason || cs.Failures != s.failures {
			t.Fatalf("%s: got calls %d state %q reason %v failures %d, want %d %q %q %d",
				s.name, iss.count(), cs.State, ready, cs.Failures, s.calls, s.state, s.reason, s.failures)
		}
		if s.nextAfter > 0 && (cs.NextAttempt == nil || cs.NextAttempt.Sub(now) < s.nextAfter) {
			t.Fatalf("%s: next attempt got %v, want at least %v after %v", s.name, cs.NextAttempt, s.nextAfter, now)
		}
	}
	issued := pairs(t, st)["web.example.com"]

	// Renewal time comes while the CA cannot validate: the stored
	// certificate stays, and so does Issued.
	now = issued.NotAfter.Add(-20 * time.Hour)
	iss.set(noDNS)
	if _, err := c.Pass(testCtx(t), iss); err != nil {
		t.Fatalf("renewal: Pass got %v, want nil", err)
	}
	cs := certificates(t, st)["web.example.com"].Status
	if got := pairs(t, st)["web.example.com"].Serial; got != issued.Serial {
		t.Fatalf("key pair after a failed renewal: got serial %s, want the old %s kept", got, issued.Serial)
	}
	if cs.State != api.CertificateIssued || cs.Serial != issued.Serial || cs.Failures != 1 || cs.NextAttempt == nil {
		t.Fatalf("status after a failed renewal: got %q %s failures %d next %v, want Issued, %s, 1 and a next attempt",
			cs.State, cs.Serial, cs.Failures, cs.NextAttempt, issued.Serial)
	}
	if msg := api.FindCondition(cs.Conditions, api.ConditionReady).Message; !strings.Contains(msg, api.ReasonDNSNotPointingAtGateway) {
		t.Fatalf("Ready message after a failed renewal: got %q, want it to say %s", msg, api.ReasonDNSNotPointingAtGateway)
	}
}
