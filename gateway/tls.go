package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"sync"
	"time"
)

// fallbackName is the subject of the self-signed certificate shown to a
// client that names no routed hostname (an IP address, or no SNI at all).
const fallbackName = "kakuremichi-gateway.invalid"

// certificates chooses the certificate for each TLS handshake: the plugged
// in source first, then the default certificate, then a self-signed one.
type certificates struct {
	// hook is Config.GetCertificate; nil when unset.
	hook func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// def is the certificate of Config.CertFile/KeyFile; nil when unset.
	def *tls.Certificate
	// routed reports whether a hostname is an http route, so that
	// self-signed certificates are made only for names the gateway serves
	// and random SNI names cannot fill memory.
	routed func(host string) bool

	// mu guards selfSigned.
	mu sync.Mutex
	// selfSigned holds the generated certificates by hostname; "" is the
	// fallback for names that are not routed.
	selfSigned map[string]*tls.Certificate
}

func (c *certificates) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c.hook != nil {
		cert, err := c.hook(hello)
		if err != nil || cert != nil {
			return cert, err
		}
	}
	if c.def != nil {
		return c.def, nil
	}
	name := normalizeHost(hello.ServerName)
	if name == "" || !c.routed(name) {
		name = ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cert, ok := c.selfSigned[name]; ok && time.Now().Before(cert.Leaf.NotAfter) {
		return cert, nil
	}
	// Generating under the lock makes concurrent handshakes for one new
	// name share a certificate; it takes well under a millisecond.
	cert, err := selfSignedCertificate(name)
	if err != nil {
		return nil, err
	}
	c.selfSigned[name] = cert
	return cert, nil
}

// prune forgets the self-signed certificates of hostnames no longer routed.
func (c *certificates) prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range c.selfSigned {
		if name != "" && !c.routed(name) {
			delete(c.selfSigned, name)
		}
	}
}

// selfSignedCertificate makes a certificate for host ("" for the fallback
// name), valid for a year.
func selfSignedCertificate(host string) (*tls.Certificate, error) {
	if host == "" {
		host = fallbackName
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a self-signed certificate for %s: %w", host, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating a self-signed certificate for %s: %w", host, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host, Organization: []string{"kakuremichi self-signed"}},
		DNSNames:              []string{host},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("generating a self-signed certificate for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("generating a self-signed certificate for %s: %w", host, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
