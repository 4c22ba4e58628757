// Package credential generates, hashes and checks the secrets of bearer
// tokens and API keys, and resolves a bearer token to the principal it
// names. Control's REST API and its watch bridge both authenticate through
// it. It imports api and the standard library; objects are read through
// the Getter it is given.
package credential

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// NewSecret returns 256 random bits, base64url encoded.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Hash returns the hex SHA-256 of a secret. Secrets are 256 random bits,
// so a fast hash is as safe as a slow one here (passwords are another
// matter).
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Matches reports, in constant time, whether secret hashes to hash.
func Matches(hash, secret string) bool {
	got := Hash(secret)
	return len(hash) == len(got) && subtle.ConstantTimeCompare([]byte(hash), []byte(got)) == 1
}

// Principal is an authenticated caller.
type Principal struct {
	// Name is the token's name.
	Name string
	// Role is what the caller may do.
	Role api.Role
	// Node is the Agent or Gateway a node credential belongs to.
	Node string
	// UID is the token object's uid, so a connection can notice that its
	// token was revoked and re-created under the same name.
	UID string
}

// Getter reads one object; the store and an informer cache both do.
type Getter func(ctx context.Context, kind, name string) (api.Object, error)

// Authenticate resolves an Authorization header value to a principal.
// Every failure is a *api.StatusError with reason Unauthorized (the same
// answer for an unknown token and a wrong secret), except a failure to
// read the store.
func Authenticate(ctx context.Context, get Getter, header string, now time.Time) (Principal, error) {
	bearer, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || strings.TrimSpace(bearer) == "" {
		return Principal{}, api.NewStatusError(api.ReasonUnauthorized, "a bearer token is required: log in with kakuremichictl login")
	}
	name, secret, ok := api.ParseToken(strings.TrimSpace(bearer))
	if !ok {
		return Principal{}, api.NewStatusError(api.ReasonUnauthorized, "the bearer token is malformed")
	}
	obj, err := get(ctx, "Token", name)
	if errors.Is(err, api.ErrNotFound) {
		return Principal{}, api.NewStatusError(api.ReasonUnauthorized, "the token is unknown or revoked")
	}
	if err != nil {
		return Principal{}, err
	}
	tok, ok := obj.(*api.Token)
	if !ok || !Matches(tok.Spec.SecretHash, secret) {
		return Principal{}, api.NewStatusError(api.ReasonUnauthorized, "the token is unknown or revoked")
	}
	if tok.Spec.ExpiresAt != nil && now.After(*tok.Spec.ExpiresAt) {
		return Principal{}, api.NewStatusError(api.ReasonUnauthorized, "the token expired at %s", tok.Spec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if tok.Metadata.DeletionTimestamp != nil {
		return Principal{}, api.NewStatusError(api.ReasonUnauthorized, "the token is being revoked")
	}
	return Principal{Name: name, Role: tok.Spec.Role, Node: tok.Spec.Node, UID: tok.Metadata.UID}, nil
}
