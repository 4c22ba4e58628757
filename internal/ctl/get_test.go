package ctl

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/client"
)

func seedFleet(e *testEnv) {
	ready := api.Condition{Type: api.ConditionReady, Status: api.ConditionTrue, Reason: api.ReasonReady, LastTransitionTime: timeAgo(time.Hour)}
	conflict := api.Condition{Type: api.ConditionReady, Status: api.ConditionFalse, Reason: api.ReasonHostnameConflict,
		Message: "tunnel web owns web.example.com", LastTransitionTime: timeAgo(2 * time.Minute)}
	web := seedTunnel("web", timeAgo(2*time.Hour+30*time.Minute), map[string]string{"app": "web"}, ready)
	dup := seedTunnel("web-copy", timeAgo(3*time.Minute+10*time.Second), map[string]string{"app": "web"}, conflict)
	dup.Spec.Hostname = "web.example.com"
	dup.Spec.Target = "tcp://db.internal:5432"
	dup.Spec.PublicPort = 15432
	gw := &api.Gateway{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Gateway"},
		Metadata: api.ObjectMeta{Name: "tokyo", CreationTimestamp: timeAgo(4 * 24 * time.Hour)},
		Spec:     api.GatewaySpec{Enabled: ptr(true), PublicEndpoint: "203.0.113.7:51820"}}
	ag := &api.Agent{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Agent"},
		Metadata: api.ObjectMeta{Name: "home", CreationTimestamp: timeAgo(5 * time.Second)},
		Spec:     api.AgentSpec{Enabled: ptr(false)}}
	e.srv.Seed(web, dup, gw, ag)
}

func TestGetTables(t *testing.T) {
	e := newTestEnv(t)
	seedFleet(e)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"tunnels", []string{"get", "tunnels"},
			"NAME       HOSTNAME                TARGET                   AGENT   READY                      AGE\n" +
				"web        web.example.com         http://localhost:8080    home    True                       2h\n" +
				"web-copy   web.example.com:15432   tcp://db.internal:5432   home    False (HostnameConflict)   3m\n"},
		{"one tunnel by short name", []string{"get", "tun", "web"},
			"NAME   HOSTNAME          TARGET                  AGENT   READY   AGE\n" +
				"web    web.example.com   http://localhost:8080   home    True    2h\n"},
		{"wide", []string{"get", "tunnels", "-l", "app=web", "-o", "wide"},
			"NAME       HOSTNAME                TARGET                   AGENT   READY                      AGE   GATEWAYS   ENABLED   REASON             MESSAGE                           LABELS\n" +
				"web        web.example.com         http://localhost:8080    home    True                       2h    0/0        true      Ready              <none>                            app=web\n" +
				"web-copy   web.example.com:15432   tcp://db.internal:5432   home    False (HostnameConflict)   3m    0/0        true      HostnameConflict   tunnel web owns web.example.com   app=web\n"},
		{"gateways", []string{"get", "gateways"},
			"NAME    ENDPOINT            ADDRESS   VERSION   READY     LAST-SEEN   AGE\n" +
				"tokyo   203.0.113.7:51820   <none>    <none>    Unknown   never       4d\n"},
		{"agents, flags first", []string{"get", "-o", "name", "agents"}, "agent/home\n"},
		{"all", []string{"get", "all", "-l", "!app"},
			"NAME            ENDPOINT            ADDRESS   VERSION   READY     LAST-SEEN   AGE\n" +
				"gateway/tokyo   203.0.113.7:51820   <none>    <none>    Unknown   never       4d\n" +
				"\n" +
				"NAME         ADDRESS   VERSION   CONNECTED   READY     LAST-SEEN   AGE\n" +
				"agent/home   <none>    <none>    Unknown     Unknown   never       5s\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.as(t, viewerToken, "", tt.args...)
			if r.code != 0 || r.stdout != tt.want {
				t.Fatalf("got code %d stderr %q stdout\n%s\nwant\n%s", r.code, r.stderr, r.stdout, tt.want)
			}
		})
	}
}

func TestGetErrors(t *testing.T) {
	e := newTestEnv(t)
	seedFleet(e)
	tests := []struct {
		name       string
		args       []string
		code       int
		stderr     string
		stdoutNone bool
	}{
		{"unknown kind", []string{"get", "pods"}, 1, `error: unknown kind "pods" (known: ` + strings.Join(api.KindNames(), ", ") + ")", true},
		{"no kind", []string{"get"}, 2, "error: get what?", true},
		{"bad output", []string{"get", "tunnels", "-o", "xml"}, 2, `error: -o "xml" is not one of wide, yaml, json, name`, true},
		{"empty", []string{"get", "tunnels", "-l", "app=none"}, 0, "No resources found.\n", true},
		{"missing name", []string{"get", "tunnel", "nope"}, 1, `error: tunnel "nope" not found`, true},
		{"names with several kinds", []string{"get", "tunnels,agents", "web"}, 2, "error: names can be given only with a single kind", true},
		{"viewer reads tokens", []string{"get", "tokens"}, 1, "error: role viewer may not do this to tokens", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.as(t, viewerToken, "", tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) || (tt.stdoutNone && r.stdout != "") {
				t.Fatalf("got code %d stdout %q stderr %q, want code %d and stderr containing %q", r.code, r.stdout, r.stderr, tt.code, tt.stderr)
			}
		})
	}
}

// get -o yaml reads back with the strict manifest decoder, and apply of
// that output changes nothing.
func TestGetYAMLRoundTrip(t *testing.T) {
	e := newTestEnv(t)
	seedFleet(e)

	r := e.as(t, viewerToken, "", "get", "tunnel", "web", "-o", "yaml")
	objs, err := api.DecodeManifests([]byte(r.stdout))
	if r.code != 0 || err != nil || len(objs) != 1 {
		t.Fatalf("get -o yaml: got code %d, %d objects, err %v:\n%s", r.code, len(objs), err, r.stdout)
	}
	stored, _ := e.srv.Get("Tunnel", "web")
	a, _ := json.Marshal(objs[0])
	b, _ := json.Marshal(stored)
	if string(a) != string(b) {
		t.Fatalf("round trip: got\n%s\nwant\n%s", a, b)
	}

	r = e.as(t, viewerToken, "", "get", "tunnels", "-o", "yaml")
	objs, err = api.DecodeManifests([]byte(r.stdout))
	if err != nil || len(objs) != 2 {
		t.Fatalf("get tunnels -o yaml: got %d objects, err %v, want 2", len(objs), err)
	}

	rev := e.srv.Revision()
	r = e.as(t, editorToken, r.stdout, "apply", "-f", "-")
	if r.code != 0 || r.stdout != "tunnel/web unchanged\ntunnel/web-copy unchanged\n" || e.srv.Revision() != rev {
		t.Fatalf("apply of get -o yaml: got code %d stdout %q stderr %q, revision %d→%d; want unchanged",
			r.code, r.stdout, r.stderr, rev, e.srv.Revision())
	}

	r = e.as(t, viewerToken, "", "get", "tunnels", "-o", "json")
	var list struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || list.Kind != "List" || len(list.Items) != 2 {
		t.Fatalf("get -o json: got kind %q, %d items, err %v, want a List of 2", list.Kind, len(list.Items), err)
	}
	r = e.as(t, viewerToken, "", "get", "tunnel", "web", "-o", "json")
	obj, err := api.DecodeObject([]byte(r.stdout))
	if err != nil || obj.GetMeta().Name != "web" {
		t.Fatalf("get NAME -o json: got %v, %v; want the object itself", obj, err)
	}
}

func TestGetWatch(t *testing.T) {
	e := newTestEnv(t)
	e.srv.Seed(seedTunnel("web", timeAgo(time.Hour), nil))
	c := e.client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"--server", e.srv.URL, "--token", viewerToken, "get", "tunnels", "-w"}, strings.NewReader(""), &stdout, &stderr)
	}()
	waitFor(t, "the initial table", func() bool { return strings.Contains(stdout.String(), "web ") })

	if _, err := c.Create(ctx, seedTunnel("api", time.Time{}, nil), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a row for the new tunnel", func() bool { return strings.Contains(stdout.String(), "\napi ") })
	lines := splitLines(stdout.String())
	header, row := lines[0], lines[len(lines)-1]
	if strings.Index(header, "HOSTNAME") != strings.Index(row, "api.example.com") {
		t.Errorf("got watch row %q under header %q, want its columns aligned", row, header)
	}

	// History lost while the watch was away: get -w lists again and
	// prints what changed meanwhile.
	e.srv.SetWatchesUnavailable(true)
	e.srv.DropWatches()
	if _, err := c.Delete(ctx, "tunnel", "web", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, seedTunnel("late", time.Time{}, nil), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.srv.Compact()
	e.srv.SetWatchesUnavailable(false)
	waitFor(t, "rows after the relist", func() bool { return strings.Contains(stdout.String(), "\nlate ") })
	if n := strings.Count(stdout.String(), "\nweb "); n != 2 {
		t.Errorf("got %d rows for web, want 2 (listed, then gone after the relist):\n%s", n, stdout.String())
	}
	if n := strings.Count(stdout.String(), "\napi "); n != 1 {
		t.Errorf("got %d rows for api, want 1 (unchanged across the relist):\n%s", n, stdout.String())
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("get -w ended with code %d (stderr %q), want 0 on interrupt", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("get -w still running 10s after its context ended")
	}
}

// Run leaves nothing behind: no watch goroutine, no idle connection.
func TestRunLeavesNoGoroutines(t *testing.T) {
	e := newTestEnv(t)
	seedFleet(e)
	e.as(t, viewerToken, "", "get", "all") // let the server's own goroutines settle first
	before := runtime.NumGoroutine()
	for range 3 {
		e.as(t, viewerToken, "", "get", "all")
		e.as(t, editorToken, tunnelYAML("web", "http://localhost:1"), "apply", "-f", "-")
		ctx, cancel := context.WithCancel(context.Background())
		var out syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- Run(ctx, []string{"--server", e.srv.URL, "--token", viewerToken, "get", "tunnels", "-w"}, strings.NewReader(""), &out, &out)
		}()
		waitFor(t, "the watch's table", func() bool { return strings.Contains(out.String(), "NAME") })
		cancel()
		<-done
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("got %d goroutines after the runs, want at most %d", n, before)
	}
}
