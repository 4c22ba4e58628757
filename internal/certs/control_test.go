package certs

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"
)

// TestOwnCertificateFollowsTheStore: Control's listener serves a
// stand-in until the key pair of its name exists, then that pair, then
// each renewal, with no restart; an acme-tls/1 handshake gets the
// challenge certificate from the store, and only for Control's name.
func TestOwnCertificateFollowsTheStore(t *testing.T) {
	st := openStore(t)
	ctx := testCtx(t)
	const host = "control.example.com"
	own, err := NewOwnCertificate(st, host, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- own.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	hello := &tls.ClientHelloInfo{ServerName: host}
	if c, err := own.GetCertificate(hello); err != nil || c == nil || own.Serial() != "" {
		t.Fatalf("before any key pair: got %v %v serial %q, want the stand-in", c, err, own.Serial())
	}
	ca, err := LoadOrCreateCA(ctx, st, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var want string
	for i := range 2 {
		kp, err := ca.Issue(host, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(kp)
		if err := st.PutSecret(ctx, controlKeyPairSecret, data, 0); err != nil {
			t.Fatal(err)
		}
		want = kp.Serial
		for deadline := time.Now().Add(10 * time.Second); own.Serial() != want; {
			if time.Now().After(deadline) {
				t.Fatalf("key pair %d: serving %q after 10s, want %s", i, own.Serial(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
		c, _ := own.GetCertificate(hello)
		if got := fmt.Sprintf("%x", c.Leaf.SerialNumber); got != want {
			t.Fatalf("key pair %d: handshake got serial %s, want %s", i, got, want)
		}
	}

	chal := acme.Challenge{Type: acme.ChallengeTypeTLSALPN01, Identifier: acme.Identifier{Type: "dns", Value: host},
		Token: "tok", KeyAuthorization: "tok.thumb"}
	iss := &ACMEIssuer{cfg: ACMEConfig{Store: st}}
	if err := (selfALPNSolver{issuer: iss}).Present(ctx, chal); err != nil {
		t.Fatalf("Present: got %v, want nil", err)
	}
	alpn := &tls.ClientHelloInfo{ServerName: host, SupportedProtos: []string{acmeTLS1}}
	c, err := own.GetCertificate(alpn)
	if err != nil || c == nil || fmt.Sprintf("%x", c.Leaf.SerialNumber) == want {
		t.Fatalf("acme-tls/1 handshake: got %v %v, want the challenge certificate", c, err)
	}
	if _, err := own.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.example.com", SupportedProtos: []string{acmeTLS1}}); err == nil {
		t.Fatalf("acme-tls/1 handshake for another name: got a certificate, want an error")
	}
	if err := (selfALPNSolver{issuer: iss}).CleanUp(ctx, chal); err != nil {
		t.Fatal(err)
	}
	if _, err := own.GetCertificate(alpn); err == nil {
		t.Fatalf("acme-tls/1 handshake after CleanUp: got a certificate, want an error")
	}
}
