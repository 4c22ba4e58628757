package certs

import (
	"errors"
	"fmt"
	"net"
	"testing"

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
	}
	for _, tt := range tests {
		reason, wait := classifyIssueError(tt.err)
		if reason != tt.reason || (wait > 0) != tt.atLeast {
			t.Errorf("%v: got %s wait %v, want %s (a minimum wait: %v)", tt.err, reason, wait, tt.reason, tt.atLeast)
		}
	}
}
