package credential

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

func TestAuthenticate(t *testing.T) {
	secret, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	past := now.Add(-time.Hour)
	tokens := map[string]*api.Token{
		"alice":   {Metadata: api.ObjectMeta{Name: "alice", UID: "u1"}, Spec: api.TokenSpec{Role: api.RoleEditor, SecretHash: Hash(secret)}},
		"expired": {Metadata: api.ObjectMeta{Name: "expired"}, Spec: api.TokenSpec{Role: api.RoleAdmin, SecretHash: Hash(secret), ExpiresAt: &past}},
		"node":    {Metadata: api.ObjectMeta{Name: "node"}, Spec: api.TokenSpec{Role: api.RoleAgent, Node: "home", SecretHash: Hash(secret)}},
	}
	get := func(_ context.Context, kind, name string) (api.Object, error) {
		if tok, ok := tokens[name]; ok && kind == "Token" {
			return tok, nil
		}
		return nil, api.ErrNotFound
	}
	tests := []struct {
		name, header string
		wantRole     api.Role
		wantErr      string
	}{
		{"valid", "Bearer " + api.FormatToken("alice", secret), api.RoleEditor, ""},
		{"node credential", "Bearer " + api.FormatToken("node", secret), api.RoleAgent, ""},
		{"no header", "", "", "bearer token is required"},
		{"basic auth", "Basic abc", "", "bearer token is required"},
		{"malformed", "Bearer nonsense", "", "malformed"},
		{"wrong secret", "Bearer " + api.FormatToken("alice", secret+"x"), "", "unknown or revoked"},
		{"unknown name", "Bearer " + api.FormatToken("bob", secret), "", "unknown or revoked"},
		{"expired", "Bearer " + api.FormatToken("expired", secret), "", "expired"},
	}
	for _, tt := range tests {
		p, err := Authenticate(context.Background(), get, tt.header, now)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, api.ErrUnauthorized) {
				t.Errorf("%s: got %v, want an Unauthorized error containing %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || p.Role != tt.wantRole {
			t.Errorf("%s: got %+v %v, want role %s", tt.name, p, err, tt.wantRole)
		}
	}
	// Unknown names and wrong secrets must read the same.
	_, e1 := Authenticate(context.Background(), get, "Bearer "+api.FormatToken("bob", secret), now)
	_, e2 := Authenticate(context.Background(), get, "Bearer "+api.FormatToken("alice", "x"), now)
	if e1.Error() != e2.Error() {
		t.Errorf("got %q and %q, want one answer for an unknown token and a wrong secret", e1, e2)
	}
}

func TestSecretsAreRandomAndHashesMatch(t *testing.T) {
	a, _ := NewSecret()
	b, _ := NewSecret()
	if a == b || len(a) < 40 {
		t.Fatalf("got secrets %q and %q, want two distinct 256-bit values", a, b)
	}
	if !Matches(Hash(a), a) || Matches(Hash(a), b) || Matches("", a) {
		t.Fatal("Matches disagrees with Hash")
	}
}
