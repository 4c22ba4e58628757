package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIWalkthrough is the README's first steps with the real binaries:
// login, apply the examples, get, change and re-apply, diff is empty,
// prune, delete; and a Control restart loses nothing.
func TestCLIWalkthrough(t *testing.T) {
	c := newControl(t)
	home := t.TempDir()
	tokenFile := filepath.Join(c.dataDir, "bootstrap-token")
	run := func(stdin string, args ...string) (string, string, int) {
		t.Helper()
		return ctl(t, home, stdin, args...)
	}
	mustRun := func(args ...string) string {
		t.Helper()
		out, errOut, code := run("", args...)
		if code != 0 {
			t.Fatalf("kakuremichictl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	mustRun("login", "--server", c.url(), "--token-file", tokenFile)
	cfg, err := os.ReadFile(filepath.Join(home, "kakuremichi", "config.yaml"))
	if err != nil {
		t.Fatalf("config file: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(home, "kakuremichi", "config.yaml")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file mode: got %v, want 0600", fi.Mode().Perm())
	}
	_ = cfg
	out := mustRun("apply", "-f", "../../manifests/examples/")
	for _, want := range []string{"tunnel/web created", "tunnel/db created", "agent/agent-home created", "gateway/gw-tokyo created"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output %q lacks %q", out, want)
		}
	}
	out = mustRun("get", "tunnels")
	if !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "fuga.sample.com") || !strings.Contains(out, "HOSTNAME") {
		t.Errorf("get tunnels: got\n%s", out)
	}
	// Apply again: unchanged. Change a field: configured, then diff is empty.
	if out := mustRun("apply", "-f", "../../manifests/examples/tunnel-web.yaml"); !strings.Contains(out, "tunnel/web unchanged") {
		t.Errorf("re-apply: got %q, want unchanged", out)
	}
	dir := t.TempDir()
	src, _ := os.ReadFile("../../manifests/examples/tunnel-web.yaml")
	changed := strings.Replace(string(src), "http://localhost:8080", "http://localhost:9090", 1)
	f := filepath.Join(dir, "web.yaml")
	os.WriteFile(f, []byte(changed), 0o644)
	if _, _, code := run("", "diff", "-f", f); code != 1 {
		t.Errorf("diff before apply: got exit %d, want 1", code)
	}
	if out := mustRun("apply", "-f", f); !strings.Contains(out, "tunnel/web configured") {
		t.Errorf("apply change: got %q, want configured", out)
	}
	if out, errOut, code := run("", "diff", "-f", f); code != 0 {
		t.Errorf("diff after apply: got exit %d, want 0\n%s%s", code, out, errOut)
	}
	// A bad manifest names the file, the document and the field, and
	// changes nothing.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(changed, "http://localhost:9090", "ftp://localhost:21", 1)), 0o644)
	_, errOut, code := run("", "apply", "-f", bad)
	if code == 0 || !strings.Contains(errOut, "bad.yaml") || !strings.Contains(errOut, "spec.target") || !strings.Contains(errOut, `unsupported scheme "ftp"`) {
		t.Errorf("bad apply: exit %d, stderr %q; want an error naming bad.yaml and spec.target", code, errOut)
	}
	if out := mustRun("get", "tunnel", "web", "-o", "yaml"); !strings.Contains(out, "http://localhost:9090") {
		t.Errorf("after a refused apply: got\n%s\nwant the stored target unchanged", out)
	}
	// Restart Control: everything is still there.
	c.stop()
	c.start()
	out = mustRun("get", "tunnels", "-o", "name")
	for _, want := range []string{"tunnel/web", "tunnel/api", "tunnel/admin", "tunnel/db"} {
		if !strings.Contains(out, want) {
			t.Errorf("after restart: got %q, want %s", out, want)
		}
	}
	// GitOps prune: only labelled objects missing from the files go.
	out = mustRun("apply", "-f", f, "--prune", "-l", "app=company")
	if !strings.Contains(out, "tunnel/api pruned") || !strings.Contains(out, "tunnel/db pruned") || strings.Contains(out, "tunnel/web pruned") {
		t.Errorf("prune: got %q", out)
	}
	// A token created for a viewer can read but not write.
	secret := mustRun("create", "token", "reader", "--role", "viewer")
	secret = strings.TrimSpace(secret)
	if !strings.HasPrefix(secret, "kkm_reader.") || strings.Contains(secret, "\n") {
		t.Fatalf("create token printed %q, want only the token", secret)
	}
	if _, _, code := run("", "--token", secret, "get", "tunnels"); code != 0 {
		t.Errorf("viewer get: exit %d", code)
	}
	if _, errOut, code := run("", "--token", secret, "delete", "tunnel", "web"); code == 0 || !strings.Contains(strings.ToLower(errOut), "forbidden") && !strings.Contains(errOut, "may not") {
		t.Errorf("viewer delete: exit %d %q, want refused", code, errOut)
	}
	mustRun("delete", "-f", f)
	if _, _, code := run("", "get", "tunnel", "web"); code == 0 {
		t.Errorf("get after delete: exit 0, want an error")
	}
	// No secret in Control's logs (quality.md 21).
	tok, _ := os.ReadFile(tokenFile)
	if strings.Contains(c.logs(), strings.TrimSpace(string(tok))) || strings.Contains(c.logs(), secret) {
		t.Errorf("Control's log contains a token")
	}
}
