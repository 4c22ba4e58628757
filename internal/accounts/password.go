package accounts

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// HashParams are argon2id's cost parameters.
type HashParams struct {
	// Memory is in KiB.
	Memory uint32
	// Time is the number of passes over the memory.
	Time uint32
	// Threads is the degree of parallelism.
	Threads uint8
}

// DefaultHashParams follow OWASP's first argon2id recommendation (46 MiB,
// one pass, one lane): slow enough to make a stolen store expensive to
// crack, cheap enough that a login takes tens of milliseconds.
var DefaultHashParams = HashParams{Memory: 46 * 1024, Time: 1, Threads: 1}

const (
	saltLen = 16
	keyLen  = 32
	// MinPasswordLen is the shortest password accepted.
	MinPasswordLen = 10
	// MaxPasswordLen bounds the work one request can ask of argon2.
	MaxPasswordLen = 1024
)

// HashPassword returns the PHC string of an argon2id hash of password
// with a fresh random salt.
func HashPassword(password string, p HashParams) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

var errBadHash = errors.New("not an argon2id hash")

// VerifyPassword reports, comparing in constant time, whether password
// matches a hash made by HashPassword. The hash's own parameters are used,
// so raising DefaultHashParams does not lock out existing users.
func VerifyPassword(hash, password string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, fmt.Errorf("verify password: %w", errBadHash)
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, fmt.Errorf("verify password: unsupported version %q: %w", parts[2], errBadHash)
	}
	var p HashParams
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return false, fmt.Errorf("verify password: parameters %q: %w", parts[3], errBadHash)
	}
	// Refuse parameters that would let a tampered hash exhaust memory.
	if p.Memory == 0 || p.Memory > 1<<20 || p.Time == 0 || p.Time > 16 || p.Threads == 0 {
		return false, fmt.Errorf("verify password: parameters %q out of range: %w", parts[3], errBadHash)
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, fmt.Errorf("verify password: salt: %w", errBadHash)
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, fmt.Errorf("verify password: key: %w", errBadHash)
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
