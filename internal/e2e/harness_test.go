package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kakuremichi-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	// The binaries are built without -race: the packages' own tests run
	// under the race detector, and here the processes must be fast enough
	// to kill and restart many times.
	cmd := exec.Command("go", "build", "-o", dir+"/", "../../cmd/...")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// statSources looks, once per run, at every file of the module. The tests
// run binaries that a go command builds, and the test cache cannot see
// what that command reads: a change to, say, the gateway alone would leave
// this package's result cached and report tests of the old code as
// passed. A file a test stats is one the cache checks before it reuses a
// result, so any change in the module runs these tests again. Only what a
// test does is logged for the cache, not TestMain, so every process a test
// starts calls this.
var statSources = sync.OnceValue(func() error {
	return filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if err == nil && d.Type().IsRegular() {
			_, err = os.Stat(path)
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil // gone since the directory was read: another process's file
		}
		return err
	})
})

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// controlProc is a `kakuremichi control` process that can be killed and
// started again on the same data directory and port. The same type runs
// gateways, agents and demo apps (args and env set, readiness by URL).
type controlProc struct {
	t       testing.TB
	dataDir string
	addr    string
	logPath string
	extra   []string
	// args, when set, replace the control command line.
	args []string
	// env is added to the process environment.
	env []string
	// debugAddr is where the process serves its Go profiles, if it does.
	debugAddr string
	// readyURL is polled for 200 after start; "" = control's /readyz,
	// "-" = do not wait.
	readyURL string

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan struct{}
}

func newControl(t testing.TB, extra ...string) *controlProc {
	t.Helper()
	dir := t.TempDir()
	c := &controlProc{t: t, dataDir: filepath.Join(dir, "data"), addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		logPath: filepath.Join(dir, "control.log"), extra: extra}
	c.start()
	t.Cleanup(c.kill)
	return c
}

func (c *controlProc) url() string { return "http://" + c.addr }

func (c *controlProc) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd.Process.Pid
}

func (c *controlProc) start() {
	c.t.Helper()
	if err := statSources(); err != nil {
		c.t.Fatalf("look at the module's files: %v", err)
	}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	args := append([]string{"control", "--data-dir", c.dataDir, "--listen", c.addr}, c.extra...)
	// Most tests speak plain HTTP to the gateways, and once a hostname has
	// a certificate gateways redirect it to HTTPS: certificates are off
	// unless a test asks for a mode.
	if !slices.Contains(c.extra, "--certificates") {
		args = append(args, "--certificates", "off")
	}
	if c.args != nil {
		args = c.args
	}
	cmd := exec.Command(filepath.Join(binDir, "kakuremichi"), args...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()
	if c.readyURL != "-" {
		c.waitReady(30 * time.Second)
	}
}

func (c *controlProc) waitReady(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	u := c.readyURL
	if u == "" {
		u = c.url() + "/readyz"
	}
	for time.Now().Before(deadline) {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		c.mu.Lock()
		done := c.done
		c.mu.Unlock()
		select {
		case <-done:
			c.t.Fatalf("%v exited during start:\n%s", c.args, c.logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
	c.t.Fatalf("%v not ready after %v:\n%s", c.args, timeout, c.logs())
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *controlProc) kill() { c.signal(syscall.SIGKILL) }

// stop sends SIGTERM and waits for a clean exit.
func (c *controlProc) stop() { c.signal(syscall.SIGTERM) }

func (c *controlProc) signal(sig syscall.Signal) {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		c.t.Errorf("control did not exit within 30s of %v", sig)
	}
}

func (c *controlProc) logs() string {
	data, _ := os.ReadFile(c.logPath)
	return string(data)
}

func (c *controlProc) adminToken() string {
	data, err := os.ReadFile(filepath.Join(c.dataDir, "bootstrap-token"))
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// request does one API call; a transport error returns code 0.
func request(ctx context.Context, method, url, token, body string) (int, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if method == http.MethodPatch {
		req.Header.Set("Content-Type", "application/merge-patch+json")
	} else if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// ctl runs kakuremichictl with an isolated config directory.
func ctl(t *testing.T, cfgHome string, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kakuremichictl"), args...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+cfgHome, "HOME="+cfgHome,
		"KAKUREMICHI_SERVER=", "KAKUREMICHI_TOKEN=")
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

var jsonUnmarshal = json.Unmarshal

func decodeJSON(t testing.TB, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
}
