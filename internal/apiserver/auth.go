package apiserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/credential"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

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

func principalOf(c echo.Context) credential.Principal {
	p, _ := c.Get(principalKey).(credential.Principal)
	return p
}

func (s *Server) authMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		// A bearer token wins over a cookie: programs send tokens, and a
		// stale browser cookie must not shadow them.
		if c.Request().Header.Get("Authorization") == "" {
			p, ok, err := s.sessionPrincipal(c)
			if err != nil {
				return err
			}
			if ok {
				c.Set(principalKey, p)
				SetActor(c, p.Name, p.Role)
				return next(c)
			}
		}
		p, err := credential.Authenticate(c.Request().Context(), s.store.Get, c.Request().Header.Get("Authorization"), s.now())
		if err != nil {
			if errors.Is(err, api.ErrUnauthorized) {
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="kakuremichi"`)
			}
			return err
		}
		c.Set(principalKey, p)
		SetActor(c, p.Name, p.Role)
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
	secret, err := credential.NewSecret()
	if err != nil {
		return false, err
	}
	obj := &api.Token{
		TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Token"},
		Metadata: api.ObjectMeta{Name: BootstrapTokenName},
		Spec: api.TokenSpec{Role: api.RoleAdmin, SecretHash: credential.Hash(secret),
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
