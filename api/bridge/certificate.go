package bridge

import "time"

// Certificate is a TLS certificate with its private key, delivered to
// gateways in the item "cert/<hostname>" so that every gateway serves the
// same certificate by SNI. Nodes keep their slice on disk (mode 0600), so
// a gateway restarted while Control is down still serves it.
type Certificate struct {
	// Hostname is the SNI name the certificate is served for.
	Hostname string `json:"hostname"`
	// ChainPEM is the leaf certificate followed by its intermediates.
	ChainPEM string `json:"chainPEM"`
	// KeyPEM is the leaf's private key.
	KeyPEM string `json:"keyPEM"`
	// Serial is the leaf's serial number in hex, reported back and shown
	// in status so that a user can see every gateway serves the same one.
	Serial string `json:"serial"`
	// NotAfter is when the leaf expires.
	NotAfter time.Time `json:"notAfter"`
	// RedirectHTTP makes plain-HTTP requests for Hostname answer 308 to
	// the same URL over HTTPS (ACME challenges excepted).
	RedirectHTTP bool `json:"redirectHTTP,omitempty"`
}

// CertificateKey is the slice key of the certificate of hostname.
func CertificateKey(hostname string) string { return "cert/" + hostname }

// Challenge is a pending ACME challenge, delivered to every gateway
// before the CA is told to validate, so that whichever gateway the CA
// reaches answers it: HTTP-01 in the item "acme-http/<token>", TLS-ALPN-01
// in "acme-tls/<hostname>".
type Challenge struct {
	// Type is "http-01" (also when empty) or "tls-alpn-01".
	Type string `json:"type,omitempty"`
	// CertPEM and KeyPEM are, for tls-alpn-01, the challenge certificate
	// served to "acme-tls/1" handshakes for Hostname.
	CertPEM string `json:"certPEM,omitempty"`
	KeyPEM  string `json:"keyPEM,omitempty"`
	// Hostname is the name being validated; only requests for it get the
	// answer.
	Hostname string `json:"hostname"`
	// Token is the last path segment of
	// /.well-known/acme-challenge/<token>.
	Token string `json:"token"`
	// KeyAuthorization is the body of the answer.
	KeyAuthorization string `json:"keyAuthorization"`
}

// ChallengeKey is the slice key of the HTTP-01 challenge with token.
func ChallengeKey(token string) string { return "acme-http/" + token }

// TLSALPNChallengeKey is the slice key of the TLS-ALPN-01 challenge of
// hostname.
func TLSALPNChallengeKey(hostname string) string { return "acme-tls/" + hostname }
