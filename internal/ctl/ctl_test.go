package ctl

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

func TestCreateTokenPrintsOnlyTheSecret(t *testing.T) {
	e := newTestEnv(t)
	r := e.as(t, adminToken, "", "create", "token", "ci", "--role", "viewer", "--expires", "30d", "--description", "CI pipeline")
	if r.code != 0 {
		t.Fatalf("create token: got code %d stderr %q", r.code, r.stderr)
	}
	secret := strings.TrimSuffix(r.stdout, "\n")
	if name, _, ok := api.ParseToken(secret); !ok || name != "ci" || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("got stdout %q, want only the token's secret on one line", r.stdout)
	}
	if strings.Contains(r.stderr, secret) || !strings.Contains(r.stderr, "token/ci created (role viewer, expires ") {
		t.Fatalf("got stderr %q, want the explanation without the secret", r.stderr)
	}
	stored, _ := e.srv.Get("Token", "ci")
	tok := stored.(*api.Token)
	if tok.Spec.ExpiresAt == nil || time.Until(*tok.Spec.ExpiresAt) < 29*24*time.Hour || tok.Spec.Description != "CI pipeline" {
		t.Fatalf("stored token: got expiry %v description %q, want about 30 days and CI pipeline", tok.Spec.ExpiresAt, tok.Spec.Description)
	}
	// The secret works as a viewer's credential.
	if r := e.as(t, secret, "", "get", "tunnels"); r.code != 0 {
		t.Fatalf("get with the new token: got code %d stderr %q", r.code, r.stderr)
	}

	r = e.as(t, editorToken, "", "create", "apikey", "home-agents", "--role", "agent", "--max-uses", "3")
	if r.code != 0 || !strings.HasPrefix(r.stdout, api.APIKeyPrefix+"home-agents.") || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("create apikey: got code %d stdout %q stderr %q, want only the key", r.code, r.stdout, r.stderr)
	}

	tests := []struct {
		name string
		args []string
		code int
	}{
		{"no role", []string{"create", "token", "x"}, 2},
		{"node role", []string{"create", "token", "x", "--role", "agent"}, 2},
		{"bad expiry", []string{"create", "token", "x", "--role", "viewer", "--expires", "soon"}, 2},
		{"other kind", []string{"create", "tunnel", "x"}, 2},
		{"two names", []string{"create", "token", "x", "y", "--role", "viewer"}, 2},
		{"editor may not", []string{"--token", editorToken, "create", "token", "x", "--role", "viewer"}, 1},
		{"exists", []string{"create", "token", "ci", "--role", "viewer"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.as(t, adminToken, "", tt.args...)
			if r.code != tt.code || r.stdout != "" {
				t.Fatalf("got code %d stdout %q stderr %q, want code %d and no stdout", r.code, r.stdout, r.stderr, tt.code)
			}
		})
	}
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := saveConfig(cfgPath, fileConfig{Server: "https://file.example:8443", Token: "file-token", CAFile: "/file/ca.pem"}); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(dir, "tok")
	if err := os.WriteFile(tokFile, []byte("  tokenfile-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                    string
		flags                   globalFlags
		env                     map[string]string
		server, token, ca, fail string
	}{
		{name: "config file", server: "https://file.example:8443", token: "file-token", ca: "/file/ca.pem"},
		{name: "env over file", env: map[string]string{envServer: "https://env.example", envToken: "env-token"},
			server: "https://env.example", token: "env-token"},
		{name: "env token, file server", env: map[string]string{envToken: "env-token"},
			server: "https://file.example:8443", token: "env-token", ca: "/file/ca.pem"},
		{name: "flags over env", flags: globalFlags{server: "https://flag.example", token: "flag-token"},
			env:    map[string]string{envServer: "https://env.example", envToken: "env-token"},
			server: "https://flag.example", token: "flag-token"},
		{name: "token file", flags: globalFlags{tokenFile: tokFile}, env: map[string]string{envToken: "env-token"},
			server: "https://file.example:8443", token: "tokenfile-token", ca: "/file/ca.pem"},
		{name: "same server with a slash keeps the saved token", flags: globalFlags{server: "https://file.example:8443/"},
			server: "https://file.example:8443/", token: "file-token", ca: "/file/ca.pem"},
		{name: "saved token never goes to another server", flags: globalFlags{server: "https://other.example"},
			fail: "the token saved in " + cfgPath + " is for https://file.example:8443"},
		{name: "no server anywhere", flags: globalFlags{configPath: filepath.Join(dir, "none.yaml")}, fail: "no server given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.flags
			if g.configPath == "" {
				g.configPath = cfgPath
			}
			c := &cli{stderr: &bytes.Buffer{}, global: g, lookupEnv: func(k string) (string, bool) {
				v, ok := tt.env[k]
				return v, ok
			}}
			cfg, err := c.connection()
			if tt.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fail) {
					t.Fatalf("got %+v, %v; want an error containing %q", cfg, err, tt.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Server != tt.server || cfg.Token != tt.token || cfg.CAFile != tt.ca {
				t.Fatalf("got server %q token %q ca %q, want %q %q %q", cfg.Server, cfg.Token, cfg.CAFile, tt.server, tt.token, tt.ca)
			}
		})
	}
}

func TestLoginSavesConfig(t *testing.T) {
	e := newTestEnv(t)
	r := e.run(t, "wrong\n", "login", "--server", e.srv.URL)
	if r.code != 1 || !strings.Contains(r.stderr, "refused the token") {
		t.Fatalf("login with a bad token: got code %d stderr %q, want refused", r.code, r.stderr)
	}
	path := filepath.Join(e.configDir, "kakuremichi", "config.yaml")
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after a refused login: got config file (err %v), want none", err)
	}

	r = e.run(t, viewerToken+"\n", "login", "--server", e.srv.URL)
	if r.code != 0 || strings.Contains(r.stdout+r.stderr, viewerToken) {
		t.Fatalf("login: got code %d stdout %q stderr %q, want success without the token printed", r.code, r.stdout, r.stderr)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file: got %v (err %v), want mode 0600", fi, err)
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("config dir: got %v (err %v), want mode 0700", di, err)
	}
	// Now commands need no flags at all.
	e.srv.Seed(seedTunnel("web", timeAgo(time.Minute), nil))
	if r := e.run(t, "", "get", "tunnel", "-o", "name"); r.code != 0 || r.stdout != "tunnel/web\n" {
		t.Fatalf("get after login: got code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// The environment overrides the saved token: a wrong one is refused.
	t.Setenv(envToken, "wrong")
	if r := e.run(t, "", "get", "tunnels"); r.code != 1 || !strings.Contains(r.stderr, "not valid") {
		t.Fatalf("get with KAKUREMICHI_TOKEN=wrong: got code %d stderr %q, want refused", r.code, r.stderr)
	}
	// And a flag overrides the environment.
	if r := e.run(t, "", "--token", viewerToken, "get", "tunnels"); r.code != 0 {
		t.Fatalf("get with --token: got code %d stderr %q", r.code, r.stderr)
	}
}

func TestDelete(t *testing.T) {
	e := newTestEnv(t)
	doomed := seedTunnel("guarded", timeAgo(time.Hour), nil)
	doomed.Metadata.Finalizers = []string{"kakuremichi.io/cleanup"}
	e.srv.Seed(seedTunnel("a", timeAgo(time.Hour), nil), seedTunnel("b", timeAgo(time.Hour), nil), doomed)

	r := e.as(t, editorToken, "", "delete", "tunnel", "a", "missing")
	if r.code != 1 || r.stdout != "tunnel/a deleted\n" || !strings.Contains(r.stderr, `error: tunnel "missing" not found`) {
		t.Fatalf("delete a missing: got code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = e.as(t, editorToken, "", "delete", "tunnels", "missing", "--ignore-not-found")
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("delete --ignore-not-found: got code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = e.as(t, editorToken, "", "delete", "tunnel", "guarded")
	if r.code != 0 || r.stdout != "tunnel/guarded marked for deletion, waiting for finalizers: kakuremichi.io/cleanup\n" {
		t.Fatalf("delete with finalizers: got code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// delete -f needs only kind and name: a spec the server would refuse
	// does not stand in the way.
	r = e.as(t, editorToken, tunnelYAML("b", "ftp://x:1"), "delete", "-f", "-", "--dry-run")
	if r.code != 0 || r.stdout != "tunnel/b deleted (dry run)\n" {
		t.Fatalf("delete -f --dry-run: got code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if _, ok := e.srv.Get("Tunnel", "b"); !ok {
		t.Fatal("dry-run delete removed tunnel/b, want it kept")
	}
	r = e.as(t, editorToken, tunnelYAML("b", "ftp://x:1"), "delete", "-f", "-")
	if _, ok := e.srv.Get("Tunnel", "b"); r.code != 0 || ok {
		t.Fatalf("delete -f: got code %d stderr %q, present=%v; want deleted", r.code, r.stderr, ok)
	}
	if r := e.as(t, editorToken, "", "delete", "tunnel"); r.code != 2 {
		t.Fatalf("delete without names: got code %d, want 2", r.code)
	}
}

func TestDescribe(t *testing.T) {
	e := newTestEnv(t)
	tn := seedTunnel("web", timeAgo(2*time.Hour), map[string]string{"app": "web"},
		api.Condition{Type: api.TunnelHostnameAvailable, Status: api.ConditionFalse, Reason: api.ReasonHostnameConflict,
			Message: "web.example.com is owned by tunnel/older", LastTransitionTime: timeAgo(3 * time.Minute)},
		api.Condition{Type: api.ConditionReady, Status: api.ConditionFalse, Reason: api.ReasonHostnameConflict,
			Message: "the hostname belongs to another tunnel", LastTransitionTime: timeAgo(3 * time.Minute)})
	tn.Metadata.Generation = 3
	tn.Status.ObservedGeneration = 2
	e.srv.Seed(tn)

	r := e.as(t, viewerToken, "", "describe", "tunnel", "web")
	if r.code != 0 {
		t.Fatalf("describe: got code %d stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{
		"Name:         web\n",
		"Labels:       app=web\n",
		"Annotations:  <none>\n",
		"Generation:   3 (status describes generation 2: Control has not caught up)\n",
		"Hostname:     web.example.com is owned by tunnel/older (HostnameConflict)\n",
		"Ready:        False (HostnameConflict): the hostname belongs to another tunnel\n",
		"Spec:\n  agent: home\n  enabled: true\n  hostname: web.example.com\n  target: http://localhost:8080\n",
		"Conditions:\n  TYPE               STATUS  REASON            AGE  MESSAGE\n",
		"  HostnameAvailable  False   HostnameConflict  3m   web.example.com is owned by tunnel/older\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("got\n%s\nwant it to contain\n%s", r.stdout, want)
		}
	}
	if r := e.as(t, viewerToken, "", "describe", "tunnel", "nope"); r.code != 1 {
		t.Fatalf("describe a missing object: got code %d, want 1", r.code)
	}
}

func TestUsageAndDispatch(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"nothing", nil, 2, "", "Usage:"},
		{"help", []string{"help"}, 0, "Usage:", ""},
		{"--help", []string{"--help"}, 0, "Usage:", ""},
		{"command help", []string{"get", "--help"}, 0, "Usage: kakuremichictl get", ""},
		{"unknown command", []string{"frobnicate"}, 2, "", `error: unknown command "frobnicate"`},
		{"unknown flag", []string{"get", "tunnels", "--colour"}, 2, "", "flag provided but not defined: -colour"},
		{"apply without files", []string{"apply"}, 2, "", "no manifests given"},
		{"apply with arguments", []string{"apply", "x.yaml"}, 2, "", "apply takes manifests with -f"},
		{"-l without --prune", []string{"apply", "-f", "x.yaml", "-l", "a=b"}, 2, "", "-l is used only with --prune"},
		{"bad selector", []string{"get", "tunnels", "-l", "a=b=c"}, 2, "", "-l: "},
		{"no server", []string{"get", "tunnels"}, 1, "", "error: no server given"},
		{"version without a server", []string{"version"}, 0, "Client: ", "no server version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.run(t, "", tt.args...)
			if r.code != tt.code || !strings.Contains(r.stdout, tt.stdout) || !strings.Contains(r.stderr, tt.stderr) {
				t.Fatalf("got code %d stdout %q stderr %q, want code %d, stdout with %q, stderr with %q",
					r.code, r.stdout, r.stderr, tt.code, tt.stdout, tt.stderr)
			}
		})
	}
	// Global flags work before and after the command.
	for _, args := range [][]string{
		{"--server", e.srv.URL, "--token", viewerToken, "version"},
		{"version", "--server", e.srv.URL, "--token", viewerToken},
	} {
		r := e.run(t, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Server: test (") {
			t.Fatalf("%q: got code %d stdout %q stderr %q, want the server's version", args, r.code, r.stdout, r.stderr)
		}
	}
}

func TestPrintErrorListsCauses(t *testing.T) {
	var buf bytes.Buffer
	c := &cli{stderr: &buf}
	err := &api.StatusError{Status: api.Status{Code: 422, Reason: api.ReasonInvalid, Message: `Tunnel "web" is invalid`,
		Details: &api.StatusDetails{Causes: []api.FieldError{
			{Field: "spec.target", Detail: `unsupported scheme "ftp"`},
			{Field: "spec.agent", Detail: "required"},
		}}}}
	c.printError(err)
	want := "error: Tunnel \"web\" is invalid\n  spec.target: unsupported scheme \"ftp\"\n  spec.agent: required\n"
	if buf.String() != want {
		t.Fatalf("got %q, want %q", buf.String(), want)
	}
}

func TestFormatAge(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{5 * time.Second, "5s"},
		{59 * time.Second, "59s"},
		{3*time.Minute + 59*time.Second, "3m"},
		{2*time.Hour + 59*time.Minute, "2h"},
		{4*24*time.Hour + 23*time.Hour, "4d"},
		{800 * 24 * time.Hour, "2y"},
	}
	for _, tt := range tests {
		if got := formatAge(tt.d); got != tt.want {
			t.Errorf("formatAge(%v): got %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestParseArgsIntersperses(t *testing.T) {
	tests := []struct {
		args    []string
		pos     string
		o       string
		watch   bool
		wantErr bool
	}{
		{args: []string{"tunnels", "-o", "yaml", "web"}, pos: "tunnels web", o: "yaml"},
		{args: []string{"-w", "tunnels"}, pos: "tunnels", watch: true},
		{args: []string{"tunnels", "--", "-o"}, pos: "tunnels -o"},
		{args: []string{"tunnels", "-o"}, wantErr: true},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(&bytes.Buffer{})
		o := fs.String("o", "", "")
		w := fs.Bool("w", false, "")
		pos, err := parseArgs(fs, tt.args)
		if (err != nil) != tt.wantErr {
			t.Fatalf("%q: got error %v, want error=%v", tt.args, err, tt.wantErr)
		}
		if err == nil && (strings.Join(pos, " ") != tt.pos || *o != tt.o || *w != tt.watch) {
			t.Errorf("%q: got %q o=%q w=%v, want %q o=%q w=%v", tt.args, pos, *o, *w, tt.pos, tt.o, tt.watch)
		}
	}
}
