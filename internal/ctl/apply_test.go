package ctl

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

const agentYAML = "apiVersion: kakuremichi.io/v1alpha1\nkind: Agent\nmetadata:\n  name: home\nspec: {}\n"

func TestApplyCreatesThenUnchanged(t *testing.T) {
	e := newTestEnv(t)
	dir := t.TempDir()
	f := writeFile(t, dir, "app.yaml", agentYAML+"---\n"+tunnelYAML("web", "http://localhost:8080", "app=web"))

	r := e.as(t, editorToken, "", "apply", "-f", f)
	if r.code != 0 || r.stdout != "agent/home created\ntunnel/web created\n" {
		t.Fatalf("first apply: got code %d stdout %q stderr %q, want both created", r.code, r.stdout, r.stderr)
	}
	r = e.as(t, editorToken, "", "apply", "-f", f)
	if r.code != 0 || r.stdout != "agent/home unchanged\ntunnel/web unchanged\n" {
		t.Fatalf("second apply: got code %d stdout %q stderr %q, want both unchanged", r.code, r.stdout, r.stderr)
	}

	// Controllers add a finalizer and status; apply keeps both and still
	// reports unchanged, since the manifest says nothing about them.
	live, _ := e.srv.Get("Tunnel", "web")
	tn := live.(*api.Tunnel)
	tn.Metadata.Finalizers = []string{"kakuremichi.io/hostname"}
	tn.Status.Conditions = []api.Condition{{Type: api.ConditionReady, Status: api.ConditionTrue, Reason: api.ReasonReady}}
	e.srv.Seed(tn)
	r = e.as(t, editorToken, "", "apply", "-f", f)
	if r.code != 0 || !strings.Contains(r.stdout, "tunnel/web unchanged") {
		t.Fatalf("apply after controllers wrote: got code %d stdout %q stderr %q, want unchanged", r.code, r.stdout, r.stderr)
	}

	// A changed spec and a dropped label are configured.
	writeFile(t, dir, "app.yaml", agentYAML+"---\n"+tunnelYAML("web", "http://localhost:9090"))
	r = e.as(t, editorToken, "", "apply", "-f", dir)
	if r.code != 0 || r.stdout != "agent/home unchanged\ntunnel/web configured\n" {
		t.Fatalf("apply of a change: got code %d stdout %q stderr %q, want web configured", r.code, r.stdout, r.stderr)
	}
	live, _ = e.srv.Get("Tunnel", "web")
	tn = live.(*api.Tunnel)
	if tn.Spec.Target != "http://localhost:9090" || len(tn.Metadata.Labels) != 0 || tn.Metadata.Generation != 2 {
		t.Errorf("after apply: got target %q labels %v generation %d, want http://localhost:9090, none, 2",
			tn.Spec.Target, tn.Metadata.Labels, tn.Metadata.Generation)
	}
	if len(tn.Metadata.Finalizers) != 1 || !api.IsConditionTrue(tn.Status.Conditions, api.ConditionReady) {
		t.Errorf("after apply: got finalizers %v conditions %v, want the controllers' kept", tn.Metadata.Finalizers, tn.Status.Conditions)
	}

	// --dry-run reports what would happen and stores nothing.
	writeFile(t, dir, "app.yaml", tunnelYAML("web", "http://localhost:7070")+"---\n"+tunnelYAML("new", "tcp://db:5432"))
	before := len(e.srv.Writes())
	r = e.as(t, editorToken, "", "apply", "--dry-run", "-f", f)
	if r.code != 0 || r.stdout != "tunnel/web configured (dry run)\ntunnel/new created (dry run)\n" {
		t.Fatalf("dry run: got code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if _, ok := e.srv.Get("Tunnel", "new"); ok {
		t.Error("dry run: got tunnel/new stored, want nothing stored")
	}
	for _, w := range e.srv.Writes()[before:] {
		if !strings.Contains(w.Query, "dryRun=All") {
			t.Errorf("dry run: got %s %s?%s, want every write a dry run", w.Method, w.Path, w.Query)
		}
	}
}

func TestApplyFromStdinAndOutput(t *testing.T) {
	e := newTestEnv(t)
	r := e.as(t, editorToken, tunnelYAML("web", "http://localhost:8080"), "apply", "-f", "-", "-o", "name")
	if r.code != 0 || r.stdout != "tunnel/web\n" {
		t.Fatalf("apply -o name: got code %d stdout %q stderr %q, want tunnel/web", r.code, r.stdout, r.stderr)
	}
	r = e.as(t, editorToken, tunnelYAML("web", "http://localhost:8080"), "apply", "-f", "-", "-o", "yaml")
	objs, err := api.DecodeManifests([]byte(r.stdout))
	if r.code != 0 || err != nil || len(objs) != 1 || objs[0].GetMeta().ResourceVersion == "" {
		t.Fatalf("apply -o yaml: got code %d, %d objects, err %v (stdout %q), want the stored object", r.code, len(objs), err, r.stdout)
	}
}

func TestApplyBadManifestSendsNothing(t *testing.T) {
	e := newTestEnv(t)
	dir := t.TempDir()
	writeFile(t, dir, "a/agent.yaml", agentYAML)
	writeFile(t, dir, "tunnel.yaml", tunnelYAML("ok", "http://localhost:1")+"---\n"+tunnelYAML("web", "ftp://files:21"))
	writeFile(t, dir, "z/extra.yml", "---\n---\n"+strings.Replace(tunnelYAML("x", "http://l:1"), "  agent: home\n", "  agent: home\n  colour: blue\n", 1))
	writeFile(t, dir, "notes.txt", "not a manifest")

	r := e.as(t, editorToken, "", "apply", "-f", dir)
	if r.code != 1 {
		t.Fatalf("got exit code %d, want 1 (stderr %q)", r.code, r.stderr)
	}
	for _, want := range []string{
		`error: ` + dir + `/tunnel.yaml: document 2 (Tunnel web): spec.target: unsupported scheme "ftp" (use http, https, tcp)`,
		`error: ` + dir + `/z/extra.yml: document 3: spec.colour: unknown field`,
	} {
		if !strings.Contains(r.stderr, want+"\n") {
			t.Errorf("got stderr %q, want the line %q", r.stderr, want)
		}
	}
	if n := len(e.srv.Requests()); n != 0 {
		t.Fatalf("got %d requests sent, want none: %v", n, e.srv.Requests())
	}
	if r.stdout != "" {
		t.Errorf("got stdout %q, want nothing", r.stdout)
	}
}

func TestApplyDuplicateAndEmpty(t *testing.T) {
	e := newTestEnv(t)
	dir := t.TempDir()
	a := writeFile(t, dir, "a.yaml", tunnelYAML("web", "http://l:1"))
	b := writeFile(t, dir, "b.yaml", tunnelYAML("web", "http://l:2"))
	empty := writeFile(t, dir, "empty.yaml", "# nothing\n---\n")
	r := e.as(t, editorToken, "", "apply", "-f", a, "-f", b)
	if r.code != 1 || !strings.Contains(r.stderr, "tunnel/web is also defined in "+a+": document 1") {
		t.Errorf("duplicate: got code %d stderr %q, want the duplicate named", r.code, r.stderr)
	}
	r = e.as(t, editorToken, "", "apply", "-f", empty)
	if r.code != 1 || !strings.Contains(r.stderr, "no objects found") {
		t.Errorf("empty: got code %d stderr %q, want no objects found", r.code, r.stderr)
	}
	if n := len(e.srv.Requests()); n != 0 {
		t.Fatalf("got %d requests sent, want none", n)
	}
}

// A write between apply's read and its update makes the update conflict;
// apply reads again and still lands the manifest's state.
func TestApplyRetriesConflicts(t *testing.T) {
	e := newTestEnv(t)
	if r := e.as(t, editorToken, tunnelYAML("web", "http://localhost:1"), "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("setup apply: %q", r.stderr)
	}
	target, _ := url.Parse(e.srv.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	var interfered atomic.Bool
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && interfered.CompareAndSwap(false, true) {
			live, _ := e.srv.Get("Tunnel", "web")
			live.GetMeta().Annotations = map[string]string{"someone": "else"}
			e.srv.Seed(live)
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()

	r := e.run(t, tunnelYAML("web", "http://localhost:2"), "--server", proxy.URL, "--token", editorToken, "apply", "-f", "-")
	if r.code != 0 || r.stdout != "tunnel/web configured\n" {
		t.Fatalf("got code %d stdout %q stderr %q, want configured", r.code, r.stdout, r.stderr)
	}
	puts := 0
	for _, w := range e.srv.Writes() {
		if w.Method == http.MethodPut {
			puts++
		}
	}
	live, _ := e.srv.Get("Tunnel", "web")
	if puts != 2 || live.(*api.Tunnel).Spec.Target != "http://localhost:2" || len(live.GetMeta().Annotations) != 0 {
		t.Fatalf("got %d PUTs, target %q, annotations %v; want 2 PUTs (one conflict) and the manifest's state",
			puts, live.(*api.Tunnel).Spec.Target, live.GetMeta().Annotations)
	}
}

func TestApplyPrune(t *testing.T) {
	e := newTestEnv(t)
	now := time.Now()
	e.srv.Seed(
		seedTunnel("old", now, map[string]string{"app": "web"}),
		seedTunnel("kept", now, map[string]string{"app": "web"}),
		seedTunnel("other", now, map[string]string{"app": "db"}),
		seedTunnel("unlabelled", now, nil),
	)
	dir := t.TempDir()
	f := writeFile(t, dir, "web.yaml", tunnelYAML("kept", "http://localhost:8080", "app=web")+"---\n"+tunnelYAML("fresh", "http://localhost:1", "app=web"))

	if r := e.as(t, adminToken, "", "apply", "-f", f, "--prune"); r.code != 2 {
		t.Fatalf("--prune without -l: got code %d, want 2 (stderr %q)", r.code, r.stderr)
	}
	r := e.as(t, adminToken, "", "apply", "-f", f, "--prune", "-l", "app=web", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "tunnel/old pruned (dry run)\n") {
		t.Fatalf("dry-run prune: got code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if _, ok := e.srv.Get("Tunnel", "old"); !ok {
		t.Fatal("dry-run prune deleted tunnel/old, want it kept")
	}
	r = e.as(t, adminToken, "", "apply", "-f", f, "--prune", "-l", "app=web")
	want := "tunnel/kept unchanged\ntunnel/fresh created\ntunnel/old pruned\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("prune: got code %d stdout %q stderr %q, want %q", r.code, r.stdout, r.stderr, want)
	}
	for name, want := range map[string]bool{"old": false, "kept": true, "fresh": true, "other": true, "unlabelled": true} {
		if _, ok := e.srv.Get("Tunnel", name); ok != want {
			t.Errorf("tunnel/%s: got present=%v, want %v", name, ok, want)
		}
	}

	// An editor may not list tokens: prune says so and goes on.
	r = e.as(t, editorToken, "", "apply", "-f", f, "--prune", "-l", "app=web")
	if r.code != 0 || !strings.Contains(r.stderr, "tokens not pruned") {
		t.Fatalf("editor prune: got code %d stderr %q, want a note about tokens", r.code, r.stderr)
	}
}
