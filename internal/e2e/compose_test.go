package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The compose test runs docker-compose.yml as a user would, from the image
// hack/image.sh builds, and holds it to the fault promises across real
// containers: a gateway killed and started, Control stopped, nodes
// restarted while Control is down, the agent's network changed under it.

// repoRoot is where docker-compose.yml and hack/ are, seen from this
// package's directory (go test runs tests there).
const repoRoot = "../.."

// composeHost is the tunnel hostname of manifests/compose/tunnel-app.yaml.
const composeHost = "app.localhost"

// composeWant is what the demo app's page says through the tunnel.
const composeWant = "Hello from app"

// composeProject is one `docker-compose -p NAME` run of docker-compose.yml
// with its own image tag and loopback ports.
type composeProject struct {
	t       *testing.T
	name    string
	image   string
	command []string // docker-compose, or docker compose
	env     []string

	controlPort, gw1HTTPS, gw2HTTPS int
}

// composeCommand returns how compose is run here, or nil when docker or
// compose cannot be used.
func composeCommand() []string {
	if err := exec.Command("docker", "info").Run(); err != nil {
		return nil
	}
	if err := exec.Command("docker-compose", "version").Run(); err == nil {
		return []string{"docker-compose"}
	}
	if err := exec.Command("docker", "compose", "version").Run(); err == nil {
		return []string{"docker", "compose"}
	}
	return nil
}

func newComposeProject(t *testing.T) *composeProject {
	t.Helper()
	command := composeCommand()
	if command == nil {
		t.Skip("docker with compose is not usable here")
	}
	var b [4]byte
	rand.Read(b[:])
	name := "kme2e" + hex.EncodeToString(b[:])
	p := &composeProject{t: t, name: name, image: "kakuremichi:" + name, command: command,
		controlPort: freePort(t), gw1HTTPS: freePort(t), gw2HTTPS: freePort(t)}
	p.env = append(os.Environ(),
		"KAKUREMICHI_IMAGE="+p.image,
		fmt.Sprintf("KAKUREMICHI_CONTROL_PORT=%d", p.controlPort),
		fmt.Sprintf("KAKUREMICHI_GW1_HTTP_PORT=%d", freePort(t)),
		fmt.Sprintf("KAKUREMICHI_GW1_HTTPS_PORT=%d", p.gw1HTTPS),
		fmt.Sprintf("KAKUREMICHI_GW2_HTTP_PORT=%d", freePort(t)),
		fmt.Sprintf("KAKUREMICHI_GW2_HTTPS_PORT=%d", p.gw2HTTPS),
	)

	// Cleanup is registered before anything is made, so a failure at any
	// step still removes what the steps before it made.
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := p.compose("logs", "--no-color", "--tail=60")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := p.compose("down", "-v", "--remove-orphans", "--timeout", "5"); err != nil {
			t.Errorf("cleanup: compose down: %v\n%s", err, out)
		}
		if out, err := run(context.Background(), nil, "docker", "rmi", "--force", p.image); err != nil && !strings.Contains(out, "No such image") {
			t.Errorf("cleanup: docker rmi %s: %v\n%s", p.image, err, out)
		}
	})

	start := time.Now()
	env := append(os.Environ(), "IMAGE="+p.image)
	if out, err := run(context.Background(), env, "hack/image.sh"); err != nil {
		t.Fatalf("hack/image.sh: %v\n%s", err, out)
	}
	t.Logf("image %s built in %v", p.image, time.Since(start).Round(time.Second))
	return p
}

// run runs a command with env (nil: this process's) in the repository
// root and returns its combined output.
func run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = repoRoot
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (p *composeProject) compose(args ...string) (string, error) {
	full := append(append(p.command[1:], "-p", p.name, "-f", "docker-compose.yml"), args...)
	return run(context.Background(), p.env, p.command[0], full...)
}

// mustCompose runs a compose command that has to succeed.
func (p *composeProject) mustCompose(args ...string) string {
	p.t.Helper()
	out, err := p.compose(args...)
	if err != nil {
		p.t.Fatalf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// docker runs a docker command that has to succeed.
func (p *composeProject) docker(args ...string) string {
	p.t.Helper()
	out, err := run(context.Background(), nil, "docker", args...)
	if err != nil {
		p.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

// container returns the ID of a service's container.
func (p *composeProject) container(service string) string {
	p.t.Helper()
	id := strings.TrimSpace(p.mustCompose("ps", "-q", service))
	if id == "" || strings.Contains(id, "\n") {
		p.t.Fatalf("compose ps -q %s: got %q, want one container ID", service, id)
	}
	return id
}

// waitHealthy waits until each service's container reports healthy.
func (p *composeProject) waitHealthy(within time.Duration, services ...string) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for _, s := range services {
		id := p.container(s)
		for {
			state := p.docker("inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", id)
			if state == "running healthy" {
				break
			}
			if time.Now().After(deadline) {
				p.t.Fatalf("%s: got state %q after %v, want running healthy", s, state, within)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}

// bootstrapToken reads Control's bootstrap token out of its volume: the
// image has no shell for `exec cat`, so it is copied out as a tar stream.
func (p *composeProject) bootstrapToken() string {
	p.t.Helper()
	cmd := exec.Command("docker", "cp", p.container("control")+":/data/bootstrap-token", "-")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		p.t.Fatalf("docker cp bootstrap-token: %v %s", err, stderr.String())
	}
	tr := tar.NewReader(&stdout)
	if _, err := tr.Next(); err != nil {
		p.t.Fatalf("docker cp bootstrap-token: read tar: %v", err)
	}
	data, err := io.ReadAll(io.LimitReader(tr, 4096))
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		p.t.Fatalf("docker cp bootstrap-token: got %q %v, want a token", data, err)
	}
	return strings.TrimSpace(string(data))
}

// projectResources lists what docker still holds of the project.
func (p *composeProject) projectResources() string {
	p.t.Helper()
	label := "label=com.docker.compose.project=" + p.name
	var left []string
	for _, kind := range [][]string{{"ps", "-a"}, {"volume", "ls"}, {"network", "ls"}} {
		out := p.docker(append(kind, "-q", "--filter", label)...)
		if out != "" {
			left = append(left, strings.Join(kind, " ")+": "+strings.ReplaceAll(out, "\n", " "))
		}
	}
	return strings.Join(left, "; ")
}

// composeLoad sends requests through gateways one after another until
// stopped, and counts what failed.
type composeLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex // guards firstErr
	firstErr   string
	stop       chan struct{}
	done       sync.WaitGroup
}

// startLoad runs one sender per client until the returned load's finish.
func startLoad(clients map[string]*http.Client) *composeLoad {
	l := &composeLoad{stop: make(chan struct{})}
	for name, c := range clients {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			for i := 0; i < 100000; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				code, body, err := get(c, "https://"+composeHost+"/")
				if err == nil && code == 200 && strings.Contains(body, composeWant) {
					l.ok.Add(1)
					continue
				}
				l.failed.Add(1)
				l.mu.Lock()
				if l.firstErr == "" {
					l.firstErr = fmt.Sprintf("%s: %d %v %.120s", name, code, err, body)
				}
				l.mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return l
}

// finish stops the load and fails the test if any request failed.
func (l *composeLoad) finish(t *testing.T, what string) {
	t.Helper()
	close(l.stop)
	l.done.Wait()
	if l.failed.Load() > 0 || l.ok.Load() == 0 {
		t.Fatalf("%s: got %d failed of %d requests (first: %s), want 0 failed", what, l.failed.Load(),
			l.failed.Load()+l.ok.Load(), l.firstErr)
	}
	t.Logf("%s: %d requests, none failed", what, l.ok.Load())
}

// TestCompose: `docker-compose up -d` of the repository's compose file
// from a freshly built image; a tunnel applied with kakuremichictl reaches
// the demo app over HTTPS through each gateway with the internal root
// trusted; then the fault promises, across containers.
func TestCompose(t *testing.T) {
	p := newComposeProject(t)
	start := time.Now()
	p.mustCompose("up", "-d")
	p.waitHealthy(90*time.Second, "control", "gw1", "gw2", "app")
	t.Logf("compose up and healthy in %v", time.Since(start).Round(time.Millisecond))

	home := t.TempDir()
	tokenFile := filepath.Join(home, "token")
	if err := os.WriteFile(tokenFile, []byte(p.bootstrapToken()), 0o600); err != nil {
		t.Fatal(err)
	}
	server := fmt.Sprintf("http://127.0.0.1:%d", p.controlPort)
	manifest, err := filepath.Abs(filepath.Join(repoRoot, "manifests", "compose", "tunnel-app.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := ctl(t, home, "", "--server", server, "--token-file", tokenFile, "apply", "-f", manifest); code != 0 {
		t.Fatalf("kakuremichictl apply: got exit %d %s %s, want 0", code, out, errOut)
	}
	rootPEM, errOut, code := ctl(t, home, "", "--server", server, "--token-file", tokenFile, "get", "ca", "-o", "pem")
	if code != 0 {
		t.Fatalf("kakuremichictl get ca -o pem: got exit %d %s, want 0", code, errOut)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(rootPEM)) {
		t.Fatalf("get ca -o pem: got %q, want a PEM certificate", rootPEM)
	}
	gw1 := trustingClient(fmt.Sprintf("127.0.0.1:%d", p.gw1HTTPS), pool)
	gw2 := trustingClient(fmt.Sprintf("127.0.0.1:%d", p.gw2HTTPS), pool)
	url := "https://" + composeHost + "/"
	for name, c := range map[string]*http.Client{"gw1": gw1, "gw2": gw2} {
		d := waitServing(t, c, url, 200, composeWant, 60*time.Second)
		t.Logf("%s serves the tunnel over trusted HTTPS %v after apply", name, d.Round(time.Millisecond))
	}

	// quality.md 4: one gateway killed, every request through the other
	// succeeds; started again, it serves within 30 s.
	load := startLoad(map[string]*http.Client{"gw2": gw2})
	p.docker("kill", p.container("gw1"))
	time.Sleep(2 * time.Second) // a steady load across the kill, not a wait for an event
	load.finish(t, "gw2 while gw1 is killed")
	p.docker("start", p.container("gw1"))
	d := waitServing(t, gw1, url, 200, composeWant, 30*time.Second)
	t.Logf("gw1 serves again %v after docker start", d.Round(time.Millisecond))

	// quality.md 1: Control stopped, requests keep succeeding.
	load = startLoad(map[string]*http.Client{"gw1": gw1, "gw2": gw2})
	p.docker("stop", "--time", "5", p.container("control"))
	time.Sleep(2 * time.Second) // a steady load with Control gone
	load.finish(t, "both gateways while Control is stopped")

	// quality.md 2: with Control still down, the agent and a gateway
	// restarted serve again from their caches within 10 s.
	// The gateway first: an agent that outlives a gateway's restart needs
	// its keepalive round to notice (quality.md 4's 30 s, shown above);
	// this is the whole fleet restarting.
	p.docker("restart", "--time", "5", p.container("gw2"))
	p.docker("restart", "--time", "5", p.container("agent"))
	restarted := time.Now()
	for name, c := range map[string]*http.Client{"gw1": gw1, "gw2": gw2} {
		waitServing(t, c, url, 200, composeWant, 10*time.Second-time.Since(restarted))
		t.Logf("%s serves through the restarted agent %v after the restarts, Control down", name, time.Since(restarted).Round(time.Millisecond))
	}

	// quality.md 6: the agent's network is taken away and given back (its
	// address may change, as behind a NAT): traffic resumes, no restart.
	edge := p.docker("network", "ls", "-q", "--filter", "label=com.docker.compose.project="+p.name,
		"--filter", "label=com.docker.compose.network=edge")
	agent := p.container("agent")
	before := p.docker("inspect", "-f", "{{.State.StartedAt}}", agent)
	ipFormat := "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
	ipBefore := p.docker("inspect", "-f", ipFormat, agent)
	p.docker("network", "disconnect", edge, agent)
	// The cut is real: requests through a gateway fail while it lasts.
	for deadline := time.Now().Add(15 * time.Second); ; {
		code, _, err := get(gw1, url)
		if err != nil || code != 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent disconnected: got 200 through gw1 for 15s, want a failure while it has no network")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Another container takes the agent's old address, so it comes back
	// with a new one: what the gateways see when a NAT mapping changes.
	occupier := p.name + "-occupier"
	t.Cleanup(func() { run(context.Background(), nil, "docker", "rm", "--force", occupier) })
	p.docker("run", "--detach", "--name", occupier, "--network", edge, "--no-healthcheck", p.image, "demo", "--listen", "127.0.0.1:3000")
	p.docker("network", "connect", edge, agent)
	reconnected := time.Now()
	p.docker("rm", "--force", occupier)
	ipAfter := p.docker("inspect", "-f", ipFormat, agent)
	if ipAfter == ipBefore {
		t.Fatalf("agent's addresses: got %s after the network change, want a new one (was %s)", ipAfter, ipBefore)
	}
	t.Logf("agent's addresses: %s before, %s after the network change", ipBefore, ipAfter)
	for name, c := range map[string]*http.Client{"gw1": gw1, "gw2": gw2} {
		waitServing(t, c, url, 200, composeWant, 30*time.Second)
		t.Logf("%s serves again %v after the agent's network came back", name, time.Since(reconnected).Round(time.Millisecond))
	}
	if after := p.docker("inspect", "-f", "{{.State.StartedAt}}", agent); after != before {
		t.Fatalf("agent started at: got %s after the network change, want %s (no restart)", after, before)
	}

	// Control back: `down -v` leaves nothing of the project behind.
	p.docker("start", p.container("control"))
	p.waitHealthy(60*time.Second, "control")
	p.mustCompose("down", "-v", "--timeout", "5")
	if left := p.projectResources(); left != "" {
		t.Fatalf("after compose down -v: got %s, want nothing left", left)
	}
}
