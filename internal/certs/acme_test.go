package certs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/kakuremichi/kakuremichi/api"
)

// TestUnreachableCAIsReportedAsSuch points the ACME issuer at a port
// nothing listens on: the error must say CAUnreachable, so that a user
// looks at Control's outbound HTTPS and not at DNS.
func TestUnreachableCAIsReportedAsSuch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	iss := NewACMEIssuer(ACMEConfig{Store: openStore(t), Directory: fmt.Sprintf("https://%s/dir", addr)})
	defer iss.Close()
	_, err = iss.Issue(testCtx(t), "web.example.com")
	if err == nil {
		t.Fatalf("Issue against a closed port: got nil, want an error")
	}
	if reason, _ := classifyIssueError(err); reason != api.ReasonCAUnreachable {
		t.Fatalf("reason: got %s for %v, want %s", reason, err, api.ReasonCAUnreachable)
	}
}

func TestClassifyIssueError(t *testing.T) {
	tests := []struct {
		err     error
		reason  string
		atLeast bool
	}{
		{errors.New("HTTP 429 urn:ietf:params:acme:error:rateLimited - too many certificates"), api.ReasonRateLimited, true},
		{errors.New("HTTP 400 urn:ietf:params:acme:error:dns - NXDOMAIN"), api.ReasonDNSNotPointingAtGateway, false},
		{errors.New("HTTP 403 urn:ietf:params:acme:error:unauthorized - wrong key authorization"), api.ReasonDNSNotPointingAtGateway, false},
		{errors.New("HTTP 403 urn:ietf:params:acme:error:caa - CAA forbids"), api.ReasonCARefused, false},
		{errors.New("write to store: etcdserver: no leader"), api.ReasonIssueFailed, false},
		{fmt.Errorf("acme order for *.example.com: %w", ErrWildcardNeedsDNS01), api.ReasonWildcardNeedsDNS01, false},
		{fmt.Errorf("acme order: %w: %w", ErrDNS01Failed, errors.New("HTTP 403 urn:ietf:params:acme:error:unauthorized - incorrect TXT record")), api.ReasonDNSChallengeFailed, false},
		{fmt.Errorf("acme order: %w: presenting for challenge: %w", ErrDNS01Failed, providerErr(&net.OpError{Op: "dial", Err: errors.New("connection refused")})), api.ReasonDNSChallengeFailed, false},
		{fmt.Errorf("acme order: %w: %w", ErrDNS01Failed, errors.New("HTTP 429 urn:ietf:params:acme:error:rateLimited - slow down")), api.ReasonRateLimited, true},
	}
	for _, tt := range tests {
		reason, wait := classifyIssueError(tt.err)
		if reason != tt.reason || (wait > 0) != tt.atLeast {
			t.Errorf("%v: got %s wait %v, want %s (a minimum wait: %v)", tt.err, reason, wait, tt.reason, tt.atLeast)
		}
	}
}

// TestChallengesArePublishedForTheBridge presents one challenge of each
// type as acmez would and reads them back through the bridge's source.
func TestChallengesArePublishedForTheBridge(t *testing.T) {
	st := openStore(t)
	iss := NewACMEIssuer(ACMEConfig{Store: st, TLSALPN: true})
	defer iss.Close()
	ctx := testCtx(t)
	chal := acme.Challenge{Identifier: acme.Identifier{Type: "dns", Value: "web.example.com"}, Token: "tok_-1", KeyAuthorization: "tok_-1.thumb"}
	solvers := []acmez.Solver{iss.client.ChallengeSolvers[acme.ChallengeTypeHTTP01], iss.client.ChallengeSolvers[acme.ChallengeTypeTLSALPN01]}
	for _, s := range solvers {
		if err := s.Present(ctx, chal); err != nil {
			t.Fatalf("Present: got %v, want nil", err)
		}
	}
	objs, _, err := ChallengeSource{Store: st}.List(ctx)
	if err != nil {
		t.Fatalf("List: got %v, want nil", err)
	}
	got := map[string]*api.ACMEChallenge{}
	for _, o := range objs {
		c := o.(*api.ACMEChallenge)
		got[c.Type] = c
	}
	if h := got[""]; h == nil || h.Token != "tok_-1" || h.KeyAuthorization != "tok_-1.thumb" || h.Hostname != "web.example.com" {
		t.Fatalf("http-01 challenge: got %+v, want token, key authorization and hostname", h)
	}
	a := got[acme.ChallengeTypeTLSALPN01]
	if a == nil || a.Hostname != "web.example.com" {
		t.Fatalf("tls-alpn-01 challenge: got %+v, want one for web.example.com", a)
	}
	if _, err := tls.X509KeyPair([]byte(a.CertPEM), []byte(a.KeyPEM)); err != nil {
		t.Fatalf("tls-alpn-01 certificate: got %v, want a key pair", err)
	}
	for _, s := range solvers {
		if err := s.CleanUp(ctx, chal); err != nil {
			t.Fatalf("CleanUp: got %v, want nil", err)
		}
	}
	if objs, _, _ := (ChallengeSource{Store: st}).List(ctx); len(objs) != 0 {
		t.Fatalf("after CleanUp: got %d challenges, want none", len(objs))
	}
}
