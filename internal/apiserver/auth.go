package apiserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

// Principal is the authenticated caller of a request.
type Principal struct {
	// Name is the token's name.
	Name string
	// Role is what the caller may do.
	Role api.Role
}

// verb is what a request does to a resource, for authorization.
type verb string

const (
	verbRead        verb = "read"         // get, list, watch
	verbWrite       verb = "write"        // create, update, patch, delete
	verbWriteStatus verb = "write-status" // update or patch status
)

// allowed is the whole authorization policy of the REST API: which role
// may do what to which kind. Tokens are admin-only because they grant
// access; API keys enrol nodes, so editors (who add agents) manage them but
// viewers do not see them. Node credentials have no REST access at all:
// nodes speak only the watch bridge.
func allowed(role api.Role, v verb, kind string) bool {
	if role == api.RoleAdmin {
		return true
	}
	switch kind {
	case "Token":
		return false
	case "APIKey":
		return role == api.RoleEditor && v != verbWriteStatus
	}
	switch v {
	case verbRead:
		return role == api.RoleEditor || role == api.RoleViewer
	case verbWrite:
		return role == api.RoleEditor
	default:
		return false
	}
}

const principalKey = "kakuremichi.principal"

func principalOf(c echo.Context) Principal {
	p, _ := c.Get(principalKey).(Principal)
	return p
}

// hashSecret returns the hex SHA-256 of a token secret. Secrets are 256
// random bits, so a fast hash is as safe as a slow one here.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// newSecret returns 256 random bits, base64url encoded.
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// authenticate resolves a bearer token to a principal.
func (s *Server) authenticate(ctx context.Context, header string) (Principal, error) {
	bearer, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || bearer == "" {
		return Principal{}, api.NewStatusError(api.ReasonUnauthorized, "a bearer token is required: log in with kakuremichictl login")
	}
	name, secret, ok := api.ParseToken(strings.TrimSpace(bearer))
	if !ok {
		return Principal{}, api.NewStatusError(api.ReasonUnauthorized, "the bearer token is malformed")
	}
	obj, err := s.store.Get(ctx, "Token", name)
	if errors.Is(err, api.ErrNotFound) {
		return Principal{}, api.NewStatusError(api.ReasonUnauthorized, "the token is unknown or revoked")
	}
	if err != nil {
		return Principal{}, err
	}
	tok := obj.(*api.Token)
	want := tok.Spec.SecretHash
	got := hashSecret(secret)
	if len(want) != len(got) || subtle.ConstantTimeCompare([]byte(want), []byte(got)) != 1 {
		return Principal{}, api.NewStatusError(api.ReasonUnauthorized, "the token is unknown or revoked")
	}
	if tok.Spec.ExpiresAt != nil && s.now().After(*tok.Spec.ExpiresAt) {
		return Principal{}, api.NewStatusError(api.ReasonUnauthorized, "the token expired at %s", tok.Spec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if tok.Metadata.DeletionTimestamp != nil {
		return Principal{}, api.NewStatusError(api.ReasonUnauthorized, "the token is being revoked")
	}
	return Principal{Name: name, Role: tok.Spec.Role}, nil
}

func (s *Server) authMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p, err := s.authenticate(c.Request().Context(), c.Request().Header.Get("Authorization"))
		if err != nil {
			if errors.Is(err, api.ErrUnauthorized) {
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="kakuremichi"`)
			}
			return err
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

// BootstrapTokenName names the admin token created on first start.
const BootstrapTokenName = "bootstrap"

// EnsureBootstrapToken creates a one-time admin token on the first start of
// an empty store and writes it, mode 0600, to path. It does nothing once any
// token exists, so it never resurrects a revoked bootstrap token. It
// reports whether it created one; the token itself is never logged.
func EnsureBootstrapToken(ctx context.Context, st *store.Store, path string) (bool, error) {
	toks, _, err := st.List(ctx, "Token", api.Selector{})
	if err != nil {
		return false, fmt.Errorf("bootstrap token: list tokens: %w", err)
	}
	if len(toks) > 0 {
		return false, nil
	}
	secret, err := newSecret()
	if err != nil {
		return false, err
	}
	obj := &api.Token{
		TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Token"},
		Metadata: api.ObjectMeta{Name: BootstrapTokenName},
		Spec: api.TokenSpec{Role: api.RoleAdmin, SecretHash: hashSecret(secret),
			Description: "created on first start; revoke it once you have made your own tokens"},
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("bootstrap token: %w", err)
	}
	// Write the file first: a token in the store that nobody can read
	// would lock the installation out for good.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(api.FormatToken(BootstrapTokenName, secret)+"\n"), 0o600); err != nil {
		return false, fmt.Errorf("bootstrap token: write %s: %w", tmp, err)
	}
	if _, err := st.Create(ctx, obj, store.WriteOptions{}); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("bootstrap token: store: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("bootstrap token: %w", err)
	}
	return true, nil
}
