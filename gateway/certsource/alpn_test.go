package certsource

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"testing"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// TestTLSALPNChallengeAnswered does what a CA does for TLS-ALPN-01: an
// "acme-tls/1" handshake for the name must present the challenge
// certificate whose acmeIdentifier is the SHA-256 of the key
// authorization; an ordinary handshake still gets the ordinary one.
func TestTLSALPNChallengeAnswered(t *testing.T) {
	const host, keyAuth = "web.example.com", "token.thumbprint"
	chCert, err := acmez.TLSALPN01ChallengeCert(acme.Challenge{Identifier: acme.Identifier{Type: "dns", Value: host}, KeyAuthorization: keyAuth})
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509MarshalKey(chCert)
	if err != nil {
		t.Fatal(err)
	}
	sl := slice(makeCert(t, host, 7))
	sl[bridge.TLSALPNChallengeKey(host)] = bridge.Item{Key: bridge.TLSALPNChallengeKey(host), Challenge: &bridge.Challenge{
		Type: "tls-alpn-01", Hostname: host, Token: "alpn." + host,
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chCert.Certificate[0]})),
		KeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))}}
	s := New(Config{})
	if err := s.Apply(sl); err != nil {
		t.Fatalf("Apply: got %v, want nil", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: s.GetCertificate,
		NextProtos: []string{"h2", "http/1.1", ACMETLS1Protocol}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()

	dial := func(name string, protos ...string) (*tls.Conn, error) {
		return tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: name, NextProtos: protos, InsecureSkipVerify: true})
	}
	c, err := dial(host, ACMETLS1Protocol)
	if err != nil {
		t.Fatalf("acme-tls/1 handshake: got %v, want the challenge certificate", err)
	}
	leaf := c.ConnectionState().PeerCertificates[0]
	c.Close()
	want := sha256.Sum256([]byte(keyAuth))
	found := false
	for _, ext := range leaf.Extensions {
		if ext.Id.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}) {
			var got []byte
			if _, err := asn1.Unmarshal(ext.Value, &got); err == nil && bytes.Equal(got, want[:]) && ext.Critical {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("acme-tls/1 handshake: got a certificate without the critical acmeIdentifier of the key authorization, want it")
	}
	if _, err := dial("other.example.com", ACMETLS1Protocol); err == nil {
		t.Fatalf("acme-tls/1 handshake for a name with no challenge: got a certificate, want a failed handshake")
	}
	c, err = dial(host, "h2")
	if err != nil {
		t.Fatalf("ordinary handshake: got %v, want the served certificate", err)
	}
	if got := c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 7 {
		t.Fatalf("ordinary handshake: got serial %d, want 7 (not the challenge certificate)", got)
	}
	c.Close()
}

func x509MarshalKey(c *tls.Certificate) ([]byte, error) {
	return x509.MarshalPKCS8PrivateKey(c.PrivateKey)
}
