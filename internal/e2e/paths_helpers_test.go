package e2e

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/internal/demoapp"
	"github.com/kakuremichi/kakuremichi/internal/wgnet"
)

// pathsLongTests reports whether the long variants (1 GiB transfers) run.
func pathsLongTests() bool { return os.Getenv("KAKUREMICHI_LONG_TESTS") == "1" }

// pathsStateDir returns the --state-dir a node process was started with.
func pathsStateDir(t *testing.T, p *controlProc) string {
	t.Helper()
	for i, a := range p.args {
		if a == "--state-dir" && i+1 < len(p.args) {
			return p.args[i+1]
		}
	}
	t.Fatalf("process %v has no --state-dir", p.args)
	return ""
}

// pathsHTTP1Client talks to a gateway like gatewayClient, but offers only
// HTTP/1.1 over TLS: a WebSocket upgrade is an HTTP/1.1 request.
func pathsHTTP1Client(addr string) *http.Client {
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}}}
}

// pathsTarget is the demo app served by the test process itself, so that a
// test knows the moment a request reaches the target: every request to
// /slow is announced on arrived before it is handled.
type pathsTarget struct {
	url     string
	arrived chan string
}

func newPathsTarget(t *testing.T) *pathsTarget {
	t.Helper()
	pt := &pathsTarget{arrived: make(chan string, 16)}
	app := demoapp.Handler("target")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case pt.arrived <- r.URL.RawQuery:
			default:
			}
		}
		app.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	pt.url = srv.URL
	return pt
}

// waitArrival waits for a /slow request to reach the target.
func (pt *pathsTarget) waitArrival(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-pt.arrived:
	case <-time.After(within):
		t.Fatalf("no request reached the target within %v", within)
	}
}

// pathsSignal sends sig to a process without waiting for it to exit, and
// returns the channel closed when it has.
func pathsSignal(t *testing.T, p *controlProc, sig syscall.Signal) <-chan struct{} {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %v: %v", sig, p.args, err)
	}
	return done
}

// pathsSecrets returns every secret a cluster's processes hold: the admin
// token, the enrolment API keys, and each node's credential and WireGuard
// private key (base64 as stored, and hex as wireguard-go's UAPI spells
// it), read from the nodes' state directories.
func pathsSecrets(t *testing.T, c *cluster) map[string]string {
	t.Helper()
	secrets := map[string]string{"admin token": c.token, "gateway API key": c.gwKey, "agent API key": c.agentKey}
	nodes := map[string]*controlProc{}
	for _, g := range c.gateways {
		nodes["gateway "+g.name] = g.controlProc
	}
	for name, a := range c.agents {
		nodes["agent "+name] = a
	}
	for name, p := range nodes {
		dir := pathsStateDir(t, p)
		cred, err := os.ReadFile(filepath.Join(dir, "credential"))
		if err != nil {
			t.Fatalf("%s: read credential: %v", name, err)
		}
		secrets[name+" credential"] = strings.TrimSpace(string(cred))
		key, err := os.ReadFile(filepath.Join(dir, "wireguard.key"))
		if err != nil {
			t.Fatalf("%s: read wireguard key: %v", name, err)
		}
		pk, err := wgnet.ParsePrivateKey(strings.TrimSpace(string(key)))
		if err != nil {
			t.Fatalf("%s: parse wireguard key: %v", name, err)
		}
		secrets[name+" wireguard key"] = pk.Base64()
		secrets[name+" wireguard key (hex)"] = pathsKeyHex(t, pk.Base64())
	}
	// Tokens are "<id>.<secret>": the secret part alone must not leak
	// either.
	for name, s := range maps.Clone(secrets) {
		if i := strings.LastIndexByte(s, '.'); i > 0 && len(s)-i-1 >= 16 {
			secrets[name+" (secret part)"] = s[i+1:]
		}
	}
	for name, s := range secrets {
		// A short or empty "secret" would match anything or nothing and
		// prove nothing either way.
		if len(s) < 16 {
			t.Fatalf("%s: got %d characters, want a real secret of 16 or more", name, len(s))
		}
	}
	return secrets
}

// pathsKeyHex converts a base64 key to hex.
func pathsKeyHex(t *testing.T, b64 string) string {
	t.Helper()
	k, err := wgnet.ParseKey(b64)
	if err != nil {
		t.Fatalf("parse key: %v", err)
	}
	return hex.EncodeToString(k[:])
}

// pathsCheckNoSecrets holds quality.md 21 for a running cluster: no secret
// appears in any process's log or in the command line of a node, and every
// file in the nodes' state directories and Control's bootstrap token are
// mode 0600.
func pathsCheckNoSecrets(t *testing.T, c *cluster) {
	t.Helper()
	secrets := pathsSecrets(t, c)
	procs := map[string]*controlProc{"control": c.control}
	for _, g := range c.gateways {
		procs["gateway "+g.name] = g.controlProc
	}
	for name, a := range c.agents {
		procs["agent "+name] = a
	}
	for name, p := range procs {
		logs := p.logs()
		if len(logs) == 0 {
			t.Errorf("%s: log %s is empty; the scan would prove nothing", name, p.logPath)
		}
		for sname, s := range secrets {
			if strings.Contains(logs, s) {
				t.Errorf("%s's log contains the %s", name, sname)
			}
		}
		pid := p.pid()
		cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // the process was stopped by the test
			}
			t.Fatalf("%s: read cmdline: %v", name, err)
		}
		args := strings.ReplaceAll(string(cmdline), "\x00", " ")
		for sname, s := range secrets {
			if strings.Contains(args, s) {
				t.Errorf("%s's command line contains the %s", name, sname)
			}
		}
	}
	dirs := []string{}
	for _, g := range c.gateways {
		dirs = append(dirs, pathsStateDir(t, g.controlProc))
	}
	for _, a := range c.agents {
		dirs = append(dirs, pathsStateDir(t, a))
	}
	files := []string{filepath.Join(c.control.dataDir, "bootstrap-token")}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) < 3 {
			t.Errorf("state dir %s holds %d files, want the key, the credential and the slice", dir, len(entries))
		}
		for _, e := range entries {
			files = append(files, filepath.Join(dir, e.Name()))
		}
		st, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("state dir %s: got mode %v, want no access for group or others", dir, st.Mode().Perm())
		}
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: got mode %v, want 0600", f, st.Mode().Perm())
		}
	}
}
