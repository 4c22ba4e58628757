package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/store"
)

// CASecret is the store secret holding the internal CA's root and key.
const CASecret = "ca/internal"

// caLifetime is the root's validity: long, because every client that
// trusts it has to be told again when it changes.
const caLifetime = 10 * 365 * 24 * time.Hour

// internalCAName starts the common name of every internal CA root.
const internalCAName = "kakuremichi internal CA"

// CA is the internal certificate authority: an ECDSA P-256 key and its
// self-signed root, kept in the store so every Control replica and every
// restart signs with the same one.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	rootPEM []byte
}

// storedCA is the secret's encoding.
type storedCA struct {
	CertPEM string `json:"certPEM"`
	KeyPEM  string `json:"keyPEM"`
}

// LoadOrCreateCA reads the internal CA from the store, creating it on the
// first start. Replicas racing to create it agree on the first written.
func LoadOrCreateCA(ctx context.Context, st *store.Store, now time.Time) (*CA, error) {
	data, _, err := st.GetSecret(ctx, CASecret)
	if errors.Is(err, api.ErrNotFound) {
		fresh, err := newCA(now)
		if err != nil {
			return nil, fmt.Errorf("create internal CA: %w", err)
		}
		if err := st.CreateSecret(ctx, CASecret, fresh); err != nil && !errors.Is(err, api.ErrAlreadyExists) {
			return nil, fmt.Errorf("create internal CA: %w", err)
		}
		data, _, err = st.GetSecret(ctx, CASecret)
		if err != nil {
			return nil, fmt.Errorf("load internal CA: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("load internal CA: %w", err)
	}
	return parseCA(data)
}

func newCA(now time.Time) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: internalCAName + " " + hex.EncodeToString(serial.Bytes()[:4]), Organization: []string{"kakuremichi"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return json.Marshal(storedCA{
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		KeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
	})
}

func parseCA(data []byte) (*CA, error) {
	var s storedCA
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("decode internal CA: %w", err)
	}
	cb, _ := pem.Decode([]byte(s.CertPEM))
	kb, _ := pem.Decode([]byte(s.KeyPEM))
	if cb == nil || kb == nil {
		return nil, errors.New("decode internal CA: no PEM certificate or key")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("decode internal CA certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("decode internal CA key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("decode internal CA key: a %T, want ECDSA", k)
	}
	return &CA{cert: cert, key: key, rootPEM: []byte(s.CertPEM)}, nil
}

// RootPEM returns the root certificate, PEM encoded: what clients trust.
func (c *CA) RootPEM() []byte { return c.rootPEM }

// Subject returns the root's subject, the issuer of what it signs.
func (c *CA) Subject() string { return c.cert.Subject.String() }

// Issue makes a fresh key and a certificate for hostname valid for
// lifetime from now.
func (c *CA) Issue(hostname string, now time.Time, lifetime time.Duration) (*api.CertificateKeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", hostname, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", hostname, err)
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	// Back-dating a little absorbs clock skew between Control and clients.
	notBefore := now.Add(-time.Minute)
	skid := sha256.Sum256(elliptic.MarshalCompressed(elliptic.P256(), key.X, key.Y))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hostname},
		DNSNames:     []string{hostname},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		SubjectKeyId: skid[:20],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", hostname, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", hostname, err)
	}
	return &api.CertificateKeyPair{
		TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.CertificateKeyPairKind},
		Metadata: api.ObjectMeta{Name: hostname},
		Hostname: hostname,
		// The chain a client needs stops before the root it trusts.
		ChainPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		KeyPEM:   string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		Serial:   hex.EncodeToString(serial.Bytes()),
		NotAfter: notAfter.UTC(),
	}, nil
}

func randomSerial() (*big.Int, error) {
	// 128 random bits, positive and never starting with a zero byte so
	// that the hex form has a stable length.
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	b[0] = b[0]&0x7f | 0x40
	return new(big.Int).SetBytes(b), nil
}

// leaf parses the first certificate of a chain.
func leaf(chainPEM string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(chainPEM))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}
