package ctl

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/client"
	"github.com/kakuremichi/kakuremichi/api/client/clienttest"
)

const (
	adminToken  = "kkm_admin.s3cret"
	editorToken = "kkm_editor.s3cret"
	viewerToken = "kkm_viewer.s3cret"
)

// testEnv is a server double and a clean environment: an empty config
// directory and no KAKUREMICHI_* variables.
type testEnv struct {
	srv       *clienttest.Server
	configDir string
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	srv := clienttest.New(clienttest.Config{Tokens: map[string]api.Role{
		adminToken: api.RoleAdmin, editorToken: api.RoleEditor, viewerToken: api.RoleViewer,
	}, BookmarkInterval: 50 * time.Millisecond})
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("HOME", dir)
	for _, v := range []string{envServer, envToken, envCAFile, envInsecure, envConfig} {
		t.Setenv(v, "")
	}
	return &testEnv{srv: srv, configDir: dir}
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs kakuremichictl with args as is.
func (e *testEnv) run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := Run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return result{out.String(), errOut.String(), code}
}

// as runs kakuremichictl against the server with a token, given by flags.
func (e *testEnv) as(t *testing.T, token, stdin string, args ...string) result {
	t.Helper()
	return e.run(t, stdin, append([]string{"--server", e.srv.URL, "--token", token}, args...)...)
}

func (e *testEnv) client(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Server: e.srv.URL, Token: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeFile writes a file under dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func tunnelYAML(name, target string, labels ...string) string {
	var lb strings.Builder
	if len(labels) > 0 {
		lb.WriteString("  labels:\n")
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			lb.WriteString("    " + k + ": " + v + "\n")
		}
	}
	port := ""
	if strings.HasPrefix(target, "tcp://") {
		port = "  publicPort: 15432\n"
	}
	return "apiVersion: kakuremichi.io/v1alpha1\nkind: Tunnel\nmetadata:\n  name: " + name + "\n" + lb.String() +
		"spec:\n  hostname: " + name + ".example.com\n  agent: home\n  target: " + target + "\n" + port
}

func seedTunnel(name string, created time.Time, labels map[string]string, conds ...api.Condition) *api.Tunnel {
	return &api.Tunnel{
		TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tunnel"},
		Metadata: api.ObjectMeta{Name: name, Labels: labels, CreationTimestamp: created},
		Spec:     api.TunnelSpec{Hostname: name + ".example.com", Agent: "home", Target: "http://localhost:8080", Enabled: ptr(true)},
		Status:   api.TunnelStatus{CommonStatus: api.CommonStatus{ObservedGeneration: 1, Conditions: conds}},
	}
}

func ptr[T any](v T) *T { return &v }

// syncBuffer is a bytes.Buffer safe for one writer and a polling reader.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls until cond holds or fails after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 10s waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// timeAgo returns a creation time d ago, to the second, as the server
// stores it.
func timeAgo(d time.Duration) time.Time {
	return time.Now().Add(-d).UTC().Truncate(time.Second)
}
