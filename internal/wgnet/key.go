package wgnet

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"

	"github.com/kakuremichi/kakuremichi/api"
)

// KeyLen is the length in bytes of WireGuard's Curve25519 keys.
const KeyLen = 32

// Key is a WireGuard public key. It is not secret: it names a peer. Its text
// form is standard base64, as printed by `wg pubkey`.
type Key [KeyLen]byte

// ParseKey parses a base64 public key.
func ParseKey(s string) (Key, error) {
	var k Key
	if err := decodeKey(k[:], s); err != nil {
		return Key{}, fmt.Errorf("parsing public key: %w", err)
	}
	return k, nil
}

// String returns the key in base64.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Short returns an abbreviation of the key (the form wireguard-go uses in
// its own messages), enough to tell peers apart in a log line.
func (k Key) Short() string {
	s := k.String()
	return s[:4] + "…" + s[39:43]
}

// IsZero reports whether the key is unset.
func (k Key) IsZero() bool { return k == Key{} }

// MarshalText encodes the key in base64, so a Key can sit in JSON or YAML.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes a base64 key.
func (k *Key) UnmarshalText(b []byte) error {
	p, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// hex returns the key in the hexadecimal form of wireguard-go's
// configuration protocol.
func (k Key) hex() string { return hex.EncodeToString(k[:]) }

// PrivateKey is a WireGuard private key. It is a struct with an unexported
// array so that it cannot be printed, logged or marshalled by accident: fmt
// (every verb), slog and String all show "[redacted]", and encoding/json and
// YAML see no exported field. The only way out is [PrivateKey.Base64], for
// writing the node's key file.
type PrivateKey struct {
	b [KeyLen]byte
}

// GeneratePrivateKey returns a new random private key, clamped as
// `wg genkey` does.
func GeneratePrivateKey() (PrivateKey, error) {
	var k PrivateKey
	if _, err := io.ReadFull(rand.Reader, k.b[:]); err != nil {
		return PrivateKey{}, fmt.Errorf("generating private key: %w", err)
	}
	k.b[0] &= 248
	k.b[31] = (k.b[31] & 127) | 64
	return k, nil
}

// ParsePrivateKey parses a base64 private key, as written by `wg genkey`
// or [PrivateKey.Base64]. The all-zero key is rejected.
func ParsePrivateKey(s string) (PrivateKey, error) {
	var k PrivateKey
	if err := decodeKey(k.b[:], s); err != nil {
		// The input is never echoed: it may be a real key with a typo.
		return PrivateKey{}, fmt.Errorf("parsing private key: %w", err)
	}
	if k.IsZero() {
		return PrivateKey{}, fmt.Errorf("parsing private key: all zero: %w", api.ErrInvalid)
	}
	return k, nil
}

// PublicKey returns the public key that peers know this key by.
func (k PrivateKey) PublicKey() Key {
	// X25519 clamps the scalar itself, so an unclamped key from elsewhere
	// yields the same public key wireguard-go computes.
	priv, err := ecdh.X25519().NewPrivateKey(k.b[:])
	if err != nil {
		// NewPrivateKey fails only on a wrong length, which the type rules out.
		panic("wgnet: X25519 rejected a 32-byte key: " + err.Error())
	}
	var pub Key
	copy(pub[:], priv.PublicKey().Bytes())
	return pub
}

// IsZero reports whether the key is unset.
func (k PrivateKey) IsZero() bool { return k.b == [KeyLen]byte{} }

// Base64 reveals the key in base64. Use it only to write the key file
// (mode 0600); never log its result.
func (k PrivateKey) Base64() string { return base64.StdEncoding.EncodeToString(k.b[:]) }

// String returns "[redacted]".
func (k PrivateKey) String() string { return redacted }

// Format makes every fmt verb, %x and %#v included, print "[redacted]".
func (k PrivateKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue makes slog print "[redacted]".
func (k PrivateKey) LogValue() slog.Value { return slog.StringValue(redacted) }

func (k PrivateKey) hex() string { return hex.EncodeToString(k.b[:]) }

const redacted = "[redacted]"

func decodeKey(dst []byte, s string) error {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("not base64: %w", api.ErrInvalid)
	}
	if len(b) != KeyLen {
		return fmt.Errorf("got %d bytes, want %d: %w", len(b), KeyLen, api.ErrInvalid)
	}
	copy(dst, b)
	return nil
}
