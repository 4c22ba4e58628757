package ctl

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/kakuremichi/kakuremichi/internal/apiserver"
	"github.com/kakuremichi/kakuremichi/internal/audit"
	"github.com/kakuremichi/kakuremichi/store"
)

// realServer is Control's API with accounts and the audit log on an
// embedded etcd, with alice (admin, by setup) and vic (viewer). It returns
// the URL and the bootstrap token.
func realServer(t *testing.T) (string, string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, store.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	acc, err := accounts.New(accounts.Config{Store: st, Hash: accounts.HashParams{Memory: 1024, Time: 1, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	al, err := audit.New(audit.Config{Client: st.Client()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(apiserver.New(apiserver.Config{Store: st, Accounts: acc, Audit: al}).Handler())
	t.Cleanup(ts.Close)
	path := filepath.Join(dir, "bootstrap-token")
	if _, err := apiserver.EnsureBootstrapToken(ctx, st, path); err != nil {
		t.Fatal(err)
	}
	boot, _ := os.ReadFile(path)
	if _, err := acc.Setup(ctx, strings.TrimSpace(string(boot)), accounts.NewUser{Name: "alice", Password: "a long passphrase"}); err != nil {
		t.Fatal(err)
	}
	if _, err := acc.CreateUser(ctx, accounts.NewUser{Name: "vic", Role: api.RoleViewer, Password: "vics passphrase"}, "alice"); err != nil {
		t.Fatal(err)
	}
	return ts.URL, strings.TrimSpace(string(boot))
}

// TestLoginWithAPassword runs login --username against a real API server
// with accounts: the password is traded for a token with the user's role,
// and only the token is saved.
func TestLoginWithAPassword(t *testing.T) {
	e := newTestEnv(t)
	server, _ := realServer(t)

	for _, tc := range []struct {
		name, stdin string
		args        []string
		wantCode    int
		wantErr     string
	}{
		{"wrong password", "not it\n", []string{"login", "--server", server, "--username", "vic"}, 1, "wrong username or password"},
		{"unknown user", "not it\n", []string{"login", "--server", server, "--username", "nobody"}, 1, "wrong username or password"},
		{"no password", "", []string{"login", "--server", server, "--username", "vic"}, 2, "no password"},
		{"token and username", "", []string{"login", "--server", server, "--username", "vic", "--token", "kkm_x.y"}, 2, "not both"},
		{"ttl alone", "", []string{"login", "--server", server, "--ttl", "1h", "--token", "kkm_x.y"}, 2, "--ttl goes with --username"},
	} {
		r := e.run(t, tc.stdin, tc.args...)
		if r.code != tc.wantCode || !strings.Contains(r.stderr, tc.wantErr) {
			t.Errorf("%s: got code %d, stderr %q; want %d mentioning %q", tc.name, r.code, r.stderr, tc.wantCode, tc.wantErr)
		}
	}
	r := e.run(t, "vics passphrase\n", "login", "--server", server, "--username", "vic", "--ttl", "2h")
	if r.code != 0 {
		t.Fatalf("login: got code %d, stderr %q, want 0", r.code, r.stderr)
	}
	cfg, err := os.ReadFile(filepath.Join(e.configDir, "kakuremichi", "config.yaml"))
	if err != nil {
		t.Fatalf("read the saved config: %v", err)
	}
	if strings.Contains(string(cfg), "vics passphrase") || !strings.Contains(string(cfg), api.TokenPrefix+"user-vic-") {
		t.Errorf("got config %q, want a token of vic and no password", cfg)
	}
	// The token has vic's role: reading works, writing does not.
	if r := e.run(t, "", "get", "tunnels"); r.code != 0 {
		t.Errorf("get tunnels as vic: got code %d, stderr %q", r.code, r.stderr)
	}
	if r := e.run(t, "", "create", "token", "mine", "--role", "viewer"); r.code == 0 || !strings.Contains(r.stderr, "forbidden") && !strings.Contains(strings.ToLower(r.stderr), "may not") {
		t.Errorf("create a token as vic: got code %d, stderr %q, want a refusal", r.code, r.stderr)
	}
}

func TestAuditShowsChanges(t *testing.T) {
	e := newTestEnv(t)
	url, boot := realServer(t)
	if r := e.run(t, "vics passphrase\n", "login", "--server", url, "--username", "vic"); r.code != 0 {
		t.Fatalf("login: got code %d, stderr %q", r.code, r.stderr)
	}
	if r := e.run(t, "", "audit"); r.code == 0 || !strings.Contains(r.stderr, "admin") {
		t.Errorf("audit as a viewer: got code %d, stderr %q, want a refusal naming the admin role", r.code, r.stderr)
	}
	r := e.run(t, "", "audit", "--token", boot, "--limit", "10")
	if r.code != 0 {
		t.Fatalf("audit as admin: got code %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"TIME", "USER", "POST /auth/token", "201", "127.0.0.1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("audit: got %q, want it to contain %q", r.stdout, want)
		}
	}
	if r := e.run(t, "", "audit", "--limit", "0"); r.code != 2 {
		t.Errorf("--limit 0: got code %d, want 2", r.code)
	}
}

func TestInvitesAndRegistration(t *testing.T) {
	e := newTestEnv(t)
	url, boot := realServer(t)
	if r := e.run(t, "", "login", "--server", url, "--token", boot); r.code != 0 {
		t.Fatalf("login: got code %d, stderr %q", r.code, r.stderr)
	}
	if r := e.run(t, "", "registration"); r.code != 0 || !strings.HasPrefix(r.stdout, "invite:") {
		t.Errorf("registration: got code %d, %q, want invite-only", r.code, r.stdout)
	}
	if r := e.run(t, "", "registration", "open"); r.code != 0 || !strings.HasPrefix(r.stdout, "open:") {
		t.Errorf("registration open: got code %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r := e.run(t, "", "registration", "sideways"); r.code != 2 {
		t.Errorf("registration sideways: got code %d, want 2", r.code)
	}
	if r := e.run(t, "", "invite", "--role", "root"); r.code != 1 || !strings.Contains(r.stderr, "role") {
		t.Errorf("invite --role root: got code %d, stderr %q, want a refusal naming role", r.code, r.stderr)
	}
	r := e.run(t, "", "invite", "--role", "editor", "--ttl", "48h")
	if r.code != 0 || !strings.HasPrefix(r.stdout, url+"/ui/signup?invite=kki_") || !strings.Contains(r.stderr, "shown only this once") {
		t.Fatalf("invite: got code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	id, _, _ := strings.Cut(strings.SplitN(r.stdout, "kki_", 2)[1], ".")
	if r := e.run(t, "", "invite", "list"); r.code != 0 || !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "editor") {
		t.Errorf("invite list: got code %d, %q, want invite %s", r.code, r.stdout, id)
	}
	if r := e.run(t, "", "invite", "revoke", id); r.code != 0 {
		t.Errorf("invite revoke: got code %d, stderr %q", r.code, r.stderr)
	}
	if r := e.run(t, "", "invite", "revoke", id); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("invite revoke again: got code %d, stderr %q, want not found", r.code, r.stderr)
	}
}
