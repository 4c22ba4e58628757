package api

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Registering here rather than in the table of kinds.go keeps the
// certificate work in files of its own; it still happens during package
// initialisation, before anything reads the table.
func init() {
	kinds = append(kinds, KindInfo{Kind: "Certificate", Plural: "certificates", Singular: "certificate",
		ShortNames: []string{"cert", "certs"},
		New:        func() Object { return &Certificate{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Certificate"}} }})
}

// Certificate is the TLS certificate of one tunnel hostname (a wildcard
// such as *.example.com included), obtained and renewed by Control and
// served by every gateway; or, under the name "control", the certificate
// of Control's own --public-hostname, which Control serves itself and no
// gateway ever receives. Control creates and deletes Certificates itself,
// one per hostname of an enabled http tunnel; the object carries no key,
// so anyone who may read tunnels may read it.
type Certificate struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta        `json:"metadata"`
	Spec     CertificateSpec   `json:"spec"`
	Status   CertificateStatus `json:"status,omitzero"`
}

// CertificateSpec says which name the certificate is for.
type CertificateSpec struct {
	// Hostname is the DNS name the certificate covers. Required.
	Hostname string `json:"hostname"`
}

// CertificateStatus is what Control knows of the certificate it holds.
type CertificateStatus struct {
	CommonStatus `json:",inline"`
	// State is Issued, Pending or Failed (the CertificateState constants).
	State string `json:"state,omitempty"`
	// Serial is the serial number of the current certificate, in hex.
	Serial string `json:"serial,omitempty"`
	// Issuer is the subject of the CA that signed it.
	Issuer string `json:"issuer,omitempty"`
	// NotBefore and NotAfter bound the current certificate's validity.
	NotBefore *time.Time `json:"notBefore,omitempty"`
	NotAfter  *time.Time `json:"notAfter,omitempty"`
	// RenewAfter is when Control starts renewing: the last third of the
	// certificate's lifetime.
	RenewAfter *time.Time `json:"renewAfter,omitempty"`
	// Failures counts the attempts that failed in a row; zero after a
	// success.
	Failures int `json:"failures,omitempty"`
	// NextAttempt is, after a failure, when Control tries again (the
	// wait doubles with each failure).
	NextAttempt *time.Time `json:"nextAttempt,omitempty"`
}

// Certificate states, the summary a user reads in `get certificates`.
const (
	// CertificateIssued: a valid certificate is held and delivered to
	// every gateway.
	CertificateIssued = "Issued"
	// CertificatePending: no certificate yet; Control is obtaining one.
	CertificatePending = "Pending"
	// CertificateFailed: the last attempt failed; the Ready condition
	// says why and Control retries with backoff.
	CertificateFailed = "Failed"
)

// Reasons of a Certificate's Ready condition.
const (
	// ReasonIssued: the certificate is valid and delivered.
	ReasonIssued = "Issued"
	// ReasonIssuing: the first certificate is being obtained.
	ReasonIssuing = "Issuing"
	// ReasonIssueFailed: issuing failed for a reason of our own (the
	// store, the internal CA); the message says why.
	ReasonIssueFailed = "IssueFailed"
	// ReasonCARefused: the ACME CA refused the order (a rejected or
	// CAA-forbidden name, a malformed request).
	ReasonCARefused = "CARefused"
	// ReasonRateLimited: the ACME CA rate limits us; Control waits at
	// least an hour before asking again.
	ReasonRateLimited = "RateLimited"
	// ReasonDNSNotPointingAtGateway: the CA could not fetch the
	// challenge: the hostname's DNS does not point at a gateway, or port
	// 80 of the address it points at is not a gateway's.
	ReasonDNSNotPointingAtGateway = "DNSNotPointingAtGateway"
	// ReasonCAUnreachable: Control could not reach the ACME CA.
	ReasonCAUnreachable = "CAUnreachable"
	// ReasonWildcardNeedsDNS01: a wildcard name is validated by an ACME
	// CA only through DNS-01, and Control has no DNS provider.
	ReasonWildcardNeedsDNS01 = "WildcardNeedsDNS01"
	// ReasonDNSChallengeFailed: a DNS-01 validation failed: the DNS
	// provider refused the TXT record, or the CA did not find it.
	ReasonDNSChallengeFailed = "DNSChallengeFailed"
)

// GetTypeMeta implements Object.
func (c *Certificate) GetTypeMeta() *TypeMeta { return &c.TypeMeta }

// GetMeta implements Object.
func (c *Certificate) GetMeta() *ObjectMeta { return &c.Metadata }

// GetStatus implements Object.
func (c *Certificate) GetStatus() *CommonStatus { return &c.Status.CommonStatus }

// Default implements Object.
func (c *Certificate) Default() {
	c.Spec.Hostname = strings.ToLower(strings.TrimSuffix(c.Spec.Hostname, "."))
}

// ValidateSpec implements Object.
func (c *Certificate) ValidateSpec() ErrorList {
	if c.Spec.Hostname == "" {
		return ErrorList{required("spec.hostname", "the DNS name the certificate covers")}
	}
	if msg := checkHostnameOrWildcard(c.Spec.Hostname); msg != "" {
		return ErrorList{invalid("spec.hostname", "%q %s", c.Spec.Hostname, msg)}
	}
	return nil
}

// CertificateName is the name of the Certificate of a hostname: readable,
// within the name limits, and distinct for distinct hostnames (the hash
// separates "a-b.c" from "a.b-c").
func CertificateName(hostname string) string {
	sum := sha256.Sum256([]byte(hostname))
	suffix := "-" + hex.EncodeToString(sum[:4])
	// "*.example.com" is named "wildcard-example-com-…".
	base := strings.ReplaceAll(strings.Replace(hostname, "*", "wildcard", 1), ".", "-")
	if max := maxNameLength - len(suffix); len(base) > max {
		base = strings.TrimRight(base[:max], "-")
	}
	return base + suffix
}

// CertificateKeyPair is a certificate chain with its private key, as
// Control keeps it for gateways. It is deliberately not a served kind:
// the REST API never shows it, it is stored apart from the resources, and
// only the watch bridge delivers it, and only to gateways. It implements
// Object so that the bridge's informers can cache it; its name is the
// hostname.
type CertificateKeyPair struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	// Hostname is the name the certificate covers.
	Hostname string `json:"hostname"`
	// ChainPEM is the leaf certificate followed by its intermediates.
	ChainPEM string `json:"chainPEM"`
	// KeyPEM is the leaf's private key (PKCS#8).
	KeyPEM string `json:"keyPEM"`
	// Serial is the leaf's serial number, in hex.
	Serial string `json:"serial"`
	// NotAfter is when the leaf expires.
	NotAfter time.Time `json:"notAfter"`

	// status is never set; it exists so GetStatus can return something.
	status CommonStatus
}

// CertificateKeyPairKind is the Kind of a CertificateKeyPair.
const CertificateKeyPairKind = "CertificateKeyPair"

// GetTypeMeta implements Object.
func (k *CertificateKeyPair) GetTypeMeta() *TypeMeta { return &k.TypeMeta }

// GetMeta implements Object.
func (k *CertificateKeyPair) GetMeta() *ObjectMeta { return &k.Metadata }

// GetStatus implements Object; a key pair has no status.
func (k *CertificateKeyPair) GetStatus() *CommonStatus { return &k.status }

// Default implements Object.
func (k *CertificateKeyPair) Default() {}

// ValidateSpec implements Object.
func (k *CertificateKeyPair) ValidateSpec() ErrorList { return nil }

// AnnotationHTTPRedirect on a Tunnel set to "false" keeps its hostname
// answering plain HTTP; by default, once the hostname has a certificate,
// gateways redirect http:// to https:// with 308. spec.httpRedirect says
// the same and wins when set; the annotation is kept for manifests that
// use it.
const AnnotationHTTPRedirect = "kakuremichi.io/http-redirect"

// CAPath is where Control serves the internal CA's root certificate
// (PEM), to anyone: a root is public by nature, and clients need it
// before they hold any credential.
const CAPath = "/certificates/v1/ca.pem"

// ACMEChallenge is a pending ACME HTTP-01 challenge as Control keeps it
// for the bridge; like CertificateKeyPair it is not a served kind. Its
// name is the token.
type ACMEChallenge struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	// Hostname is the name being validated.
	Hostname string `json:"hostname"`
	// Token names the challenge in its URL path.
	Token string `json:"token"`
	// KeyAuthorization is the answer.
	KeyAuthorization string `json:"keyAuthorization"`
	// Type is "http-01" (also when empty) or "tls-alpn-01"; Token is then
	// "alpn." + Hostname, which no ACME token (base64url) can be.
	Type string `json:"type,omitempty"`
	// CertPEM and KeyPEM are the tls-alpn-01 challenge certificate.
	CertPEM string `json:"certPEM,omitempty"`
	KeyPEM  string `json:"keyPEM,omitempty"`

	// status is never set; it exists so GetStatus can return something.
	status CommonStatus
}

// ACMEChallengeKind is the Kind of an ACMEChallenge.
const ACMEChallengeKind = "ACMEChallenge"

// GetTypeMeta implements Object.
func (c *ACMEChallenge) GetTypeMeta() *TypeMeta { return &c.TypeMeta }

// GetMeta implements Object.
func (c *ACMEChallenge) GetMeta() *ObjectMeta { return &c.Metadata }

// GetStatus implements Object; a challenge has no status.
func (c *ACMEChallenge) GetStatus() *CommonStatus { return &c.status }

// Default implements Object.
func (c *ACMEChallenge) Default() {}

// ValidateSpec implements Object.
func (c *ACMEChallenge) ValidateSpec() ErrorList { return nil }
