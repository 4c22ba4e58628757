package ui

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/kakuremichi/kakuremichi/internal/apiserver"
	"github.com/kakuremichi/kakuremichi/internal/audit"
	"github.com/kakuremichi/kakuremichi/internal/credential"
	"github.com/kakuremichi/kakuremichi/store"
)

// harness is Control's API and UI on a real embedded etcd.
type harness struct {
	t         *testing.T
	st        *store.Store
	acc       *accounts.Service
	ui        *UI
	srv       *apiserver.Server
	url       string
	bootstrap string
	// sessions holds each role's session id and CSRF token.
	sessions map[api.Role][2]string
}

const password = "a long passphrase"

var userOf = map[api.Role]string{api.RoleAdmin: "alice", api.RoleEditor: "ed", api.RoleViewer: "vic"}

func newHarness(t *testing.T) *harness {
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
	srv := apiserver.New(apiserver.Config{Store: st, Accounts: acc, Audit: al})
	u, err := New(Config{Store: st, Accounts: acc, Heartbeat: 100 * time.Millisecond, AgentImage: "kakuremichi:test", Audit: al})
	if err != nil {
		t.Fatal(err)
	}
	u.Register(srv.Echo())
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	t.Cleanup(u.Stop)
	path := filepath.Join(dir, "bootstrap-token")
	if _, err := apiserver.EnsureBootstrapToken(ctx, st, path); err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(path)
	return &harness{t: t, st: st, acc: acc, ui: u, srv: srv, url: ts.URL, bootstrap: strings.TrimSpace(string(tok)),
		sessions: map[api.Role][2]string{}}
}

// client follows no redirects, so tests see them.
var client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// send makes a request as role's browser would ("" sends no cookie); a
// POST carries the form with the session's CSRF token unless form
// already has one.
func (h *harness) send(role api.Role, method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	h.t.Helper()
	var body io.Reader
	s, ok := h.sessions[role]
	if method == http.MethodPost {
		if form == nil {
			form = url.Values{}
		}
		if _, set := form[apiserver.CSRFField]; !set && ok {
			form.Set(apiserver.CSRFField, s[1])
		}
		body = strings.NewReader(form.Encode())
	}
	ctx := context.Background()
	if strings.HasSuffix(path, "/events") {
		// A stream never ends by itself: take the answer's head only.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
	}
	req, _ := http.NewRequestWithContext(ctx, method, h.url+path, body)
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if ok {
		req.AddCookie(&http.Cookie{Name: apiserver.SessionCookie, Value: s[0]})
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") == "text/event-stream" {
		return resp, ""
	}
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

// setUp walks the first run through the setup page, adds an editor and a
// viewer, and logs each in through the login page.
func (h *harness) setUp() {
	h.t.Helper()
	resp, _ := h.send("", "GET", "/ui/login", nil, nil)
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/ui/setup" {
		h.t.Fatalf("login page before setup: got %d to %q, want 303 to /ui/setup", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := h.send("", "POST", "/ui/setup", url.Values{"token": {"kkm_bootstrap.wrong"}, "name": {"alice"},
		"password": {password}, "password2": {password}}, nil)
	if resp.StatusCode != 401 || !strings.Contains(body, `id="token-err"`) {
		h.t.Fatalf("setup with a wrong token: got %d, want 401 with the error next to the token field", resp.StatusCode)
	}
	resp, body = h.send("", "POST", "/ui/setup", url.Values{"token": {h.bootstrap}, "name": {"alice"},
		"password": {"short"}, "password2": {"short"}}, nil)
	if resp.StatusCode != 422 || !strings.Contains(body, `id="password-err"`) {
		h.t.Fatalf("setup with a short password: got %d, want 422 with the error next to the password field", resp.StatusCode)
	}
	resp, _ = h.send("", "POST", "/ui/setup", url.Values{"token": {h.bootstrap}, "name": {"alice"},
		"password": {password}, "password2": {password}}, nil)
	if resp.StatusCode != 201 {
		h.t.Fatalf("setup: got %d, want 201", resp.StatusCode)
	}
	resp, _ = h.send("", "GET", "/ui/setup", nil, nil)
	if resp.StatusCode != 303 {
		h.t.Fatalf("setup page after setup: got %d, want 303 to the login page", resp.StatusCode)
	}
	for _, role := range []api.Role{api.RoleEditor, api.RoleViewer} {
		if _, err := h.acc.CreateUser(context.Background(), accounts.NewUser{Name: userOf[role], Role: role, Password: password}, "alice"); err != nil {
			h.t.Fatal(err)
		}
	}
	for role := range userOf {
		h.login(role)
	}
}

func (h *harness) login(role api.Role) {
	h.t.Helper()
	resp, _ := h.send("", "POST", "/ui/login", url.Values{"username": {userOf[role]}, "password": {password}}, nil)
	var id string
	for _, c := range resp.Cookies() {
		if c.Name == apiserver.SessionCookie {
			id = c.Value
		}
	}
	if resp.StatusCode != 303 || id == "" {
		h.t.Fatalf("login %s: got %d, cookie %v; want 303 with a session cookie", userOf[role], resp.StatusCode, id != "")
	}
	sess, err := h.acc.Authenticate(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	h.sessions[role] = [2]string{id, sess.CSRF}
}

func (h *harness) createTunnel(name string, annotations map[string]string) {
	h.t.Helper()
	_, err := h.st.Create(context.Background(), &api.Tunnel{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tunnel"},
		Metadata: api.ObjectMeta{Name: name, Annotations: annotations},
		Spec:     api.TunnelSpec{Hostname: name + ".example.com", Agent: "home", Target: "http://app:3000"}}, store.WriteOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
}

// uiPolicy is, for every UI route, the weakest role that may use it (""
// = open). A route missing here fails TestEveryUIRouteIsAuthorized.
var uiPolicy = map[string]api.Role{
	"GET /":                                "",
	"GET /ui/static/*":                     "",
	"GET /ui/login":                        "",
	"POST /ui/login":                       "",
	"GET /ui/setup":                        "",
	"POST /ui/setup":                       "",
	"POST /ui/logout":                      api.RoleViewer,
	"GET /ui/":                             api.RoleViewer,
	"GET /ui/tunnels":                      api.RoleViewer,
	"GET /ui/tunnels/events":               api.RoleViewer,
	"GET /ui/tunnels/new":                  api.RoleEditor,
	"POST /ui/tunnels":                     api.RoleEditor,
	"GET /ui/tunnels/:name":                api.RoleViewer,
	"POST /ui/tunnels/:name":               api.RoleEditor,
	"POST /ui/tunnels/:name/enabled":       api.RoleEditor,
	"GET /ui/tunnels/:name/delete":         api.RoleEditor,
	"POST /ui/tunnels/:name/delete":        api.RoleEditor,
	"GET /ui/agents":                       api.RoleViewer,
	"GET /ui/agents/new":                   api.RoleEditor,
	"GET /ui/gateways":                     api.RoleViewer,
	"POST /ui/gateways/:name/enabled":      api.RoleEditor,
	"GET /ui/yaml/:plural/:name":           api.RoleViewer,
	"GET /ui/apikeys":                      api.RoleEditor,
	"POST /ui/apikeys/:name/revoke":        api.RoleEditor,
	"GET /ui/audit":                        api.RoleAdmin,
	"GET /ui/users":                        api.RoleAdmin,
	"POST /ui/users":                       api.RoleAdmin,
	"POST /ui/users/:name/disabled":        api.RoleAdmin,
	"POST /ui/agents/new":                  api.RoleEditor,
	"GET /ui/signup":                       "",
	"POST /ui/signup":                      "",
	"GET /ui/account":                      api.RoleViewer,
	"POST /ui/account/password":            api.RoleViewer,
	"GET /ui/events":                       api.RoleViewer,
	"GET /ui/agents/events":                api.RoleViewer,
	"GET /ui/gateways/events":              api.RoleViewer,
	"GET /ui/certificates":                 api.RoleViewer,
	"GET /ui/certificates/events":          api.RoleViewer,
	"GET /ui/tokens":                       api.RoleAdmin,
	"POST /ui/tokens":                      api.RoleAdmin,
	"GET /ui/tokens/:name/revoke":          api.RoleAdmin,
	"POST /ui/tokens/:name/revoke":         api.RoleAdmin,
	"GET /ui/users/:name":                  api.RoleAdmin,
	"POST /ui/users/:name/password":        api.RoleAdmin,
	"GET /ui/settings":                     api.RoleAdmin,
	"POST /ui/settings/registration":       api.RoleAdmin,
	"POST /ui/settings/invites":            api.RoleAdmin,
	"POST /ui/settings/invites/:id/revoke": api.RoleAdmin,
}

var rank = map[api.Role]int{api.RoleViewer: 1, api.RoleEditor: 2, api.RoleAdmin: 3}

// TestEveryUIRouteIsAuthorized checks quality.md 16 for the UI: without a
// session every protected page sends the browser to the login page, and a
// role below the route's is refused with 403, on the server, whatever the
// page shows.
func TestEveryUIRouteIsAuthorized(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	h.createTunnel("web", nil)
	// Open, so the sign-up routes answer as open routes do (closed, they
	// refuse everyone alike: see TestSignUpAndInvites).
	if _, err := h.acc.SetOpenRegistration(context.Background(), true, "alice"); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range h.srv.Routes() {
		key := r.Method + " " + r.Path
		if strings.HasPrefix(r.Method, "echo_") || seen[key] || !(r.Path == "/" || strings.HasPrefix(r.Path, Prefix)) {
			continue
		}
		seen[key] = true
		want, ok := uiPolicy[key]
		if !ok {
			t.Errorf("UI route %s has no entry in uiPolicy: add one and test it", key)
			continue
		}
		name := "web"
		if strings.HasPrefix(r.Path, Prefix+"/users/") || strings.HasPrefix(r.Path, Prefix+"/gateways/") || strings.HasPrefix(r.Path, Prefix+"/apikeys/") || strings.HasPrefix(r.Path, Prefix+"/tokens/") {
			name = "nobody" // never one of the test's own users
		}
		path := strings.NewReplacer(":plural", "tunnels", ":name", name, ":id", "0123456789abcdef", "*", "app.css").Replace(r.Path)
		for _, role := range []api.Role{"", api.RoleViewer, api.RoleEditor, api.RoleAdmin} {
			resp, body := h.send(role, r.Method, path, url.Values{}, nil)
			loc := resp.Header.Get("Location")
			toLogin := resp.StatusCode == 303 && strings.HasPrefix(loc, "/ui/login?next=")
			switch {
			case want == "":
				if resp.StatusCode == 401 || resp.StatusCode == 403 || toLogin {
					t.Errorf("%s %s as %q: got %d to %q, want it open", r.Method, path, role, resp.StatusCode, loc)
				}
			case role == "":
				if !toLogin {
					t.Errorf("%s %s without a session: got %d to %q, want 303 to the login page", r.Method, path, resp.StatusCode, loc)
				}
			case rank[role] < rank[want]:
				if resp.StatusCode != 403 {
					t.Errorf("%s %s as %s: got %d, want 403", r.Method, path, role, resp.StatusCode)
				}
			default:
				if resp.StatusCode == 401 || resp.StatusCode == 403 || toLogin {
					t.Errorf("%s %s as %s: got %d %.200s, want access", r.Method, path, role, resp.StatusCode, body)
				}
			}
			if key == "POST /ui/logout" && role != "" {
				h.login(role)
			}
			if key == "POST /ui/tunnels/:name/delete" && rank[role] >= rank[want] {
				h.createTunnel("web", nil)
			}
		}
	}
	for key := range uiPolicy {
		if !seen[key] {
			t.Errorf("uiPolicy lists %s, which the server does not serve", key)
		}
	}
}

func TestLoginRedirectsOnlyToLocalPaths(t *testing.T) {
	for _, tc := range []struct {
		next string
		want bool
	}{
		{"/ui/tunnels", true}, {"/ui/tunnels?x=1", true}, {"//evil.example", false}, {"/\\evil.example", false},
		{"https://evil.example/", false}, {"javascript:alert(1)", false}, {"", false}, {"/ui/\x00x", false},
		{"ui/tunnels", false}, {"/%2F%2Fevil.example", true},
	} {
		if got := LocalPath(tc.next); got != tc.want {
			t.Errorf("LocalPath(%q): got %v, want %v", tc.next, got, tc.want)
		}
	}
	h := newHarness(t)
	h.setUp()
	for next, want := range map[string]string{
		"/ui/tunnels":            "/ui/tunnels",
		"//evil.example":         "/ui/",
		"https://evil.example/x": "/ui/",
	} {
		resp, _ := h.send("", "POST", "/ui/login", url.Values{"username": {"vic"}, "password": {password}, "next": {next}}, nil)
		if got := resp.Header.Get("Location"); resp.StatusCode != 303 || got != want {
			t.Errorf("login with next=%q: got %d to %q, want 303 to %q", next, resp.StatusCode, got, want)
		}
	}
	// A protected page sends the browser to log in and come back.
	resp, _ := h.send("", "GET", "/ui/tunnels/new", nil, nil)
	if got := resp.Header.Get("Location"); got != "/ui/login?next=%2Fui%2Ftunnels%2Fnew" {
		t.Errorf("got redirect to %q, want the login page with next=/ui/tunnels/new", got)
	}
	// Failures look the same for an unknown user and a wrong password.
	r1, b1 := h.send("", "POST", "/ui/login", url.Values{"username": {"nobody"}, "password": {"wrong password"}}, nil)
	r2, b2 := h.send("", "POST", "/ui/login", url.Values{"username": {"vic"}, "password": {"wrong password"}}, nil)
	b2 = strings.Replace(b2, `value="vic"`, `value="nobody"`, 1)
	if r1.StatusCode != 401 || r2.StatusCode != 401 || b1 != b2 {
		t.Errorf("got %d and %d with different pages, want 401 and the same page for both", r1.StatusCode, r2.StatusCode)
	}
}

func TestCrossSiteFormPostsAreRefused(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	form := func() url.Values {
		return url.Values{"name": {"evil"}, "hostname": {"evil.example.com"}, "agent": {"home"}, "target": {"http://x:1"}, "enabled": {"on"}}
	}
	for _, tc := range []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"no CSRF token", func() url.Values { f := form(); f.Set(apiserver.CSRFField, ""); return f }(), nil},
		{"cross-site with the token", form(), map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}},
	} {
		if resp, _ := h.send(api.RoleEditor, "POST", "/ui/tunnels", tc.form, tc.hdr); resp.StatusCode != 403 {
			t.Errorf("%s: got %d, want 403", tc.name, resp.StatusCode)
		}
	}
	if _, err := h.st.Get(context.Background(), "Tunnel", "evil"); err == nil {
		t.Errorf("a refused post created the tunnel")
	}
	resp, _ := h.send("", "POST", "/ui/login", url.Values{"username": {"ed"}, "password": {password}},
		map[string]string{"Sec-Fetch-Site": "cross-site"})
	if resp.StatusCode != 403 || len(resp.Cookies()) != 0 {
		t.Errorf("cross-site login: got %d with %d cookies, want 403 and none", resp.StatusCode, len(resp.Cookies()))
	}
}

func TestTunnelFormsValidateEnableAndDelete(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	ctx := context.Background()
	resp, body := h.send(api.RoleEditor, "POST", "/ui/tunnels", url.Values{"name": {"web"}, "hostname": {"not a host"},
		"agent": {"home"}, "target": {"ftp://x"}, "enabled": {"on"}}, nil)
	if resp.StatusCode != 422 {
		t.Fatalf("invalid tunnel: got %d, want 422", resp.StatusCode)
	}
	for _, field := range []string{"hostname", "target"} {
		if !strings.Contains(body, `id="`+field+`-err"`) || !strings.Contains(body, `id="`+field+`" name="`+field+`" value=`) {
			t.Errorf("invalid tunnel: got no error next to %s in the form", field)
		}
	}
	if !strings.Contains(body, `value="not a host"`) {
		t.Errorf("invalid tunnel: got the form without what was typed, want it kept")
	}
	resp, _ = h.send(api.RoleEditor, "POST", "/ui/tunnels", url.Values{"name": {"web"}, "hostname": {"web.example.com"},
		"agent": {"home"}, "target": {"http://app:3000"}, "enabled": {"on"}}, nil)
	if resp.StatusCode != 303 || !strings.Contains(resp.Header.Get("Location"), "flash=created") {
		t.Fatalf("create: got %d to %q, want 303 to the list", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, body = h.send(api.RoleViewer, "GET", "/ui/tunnels?flash=created&name=web", nil, nil)
	if !strings.Contains(body, "Tunnel web created.") || !strings.Contains(body, `data-name="web"`) {
		t.Errorf("list: got no row for web or no flash")
	}
	if strings.Contains(body, "Create a tunnel") || strings.Contains(body, ">Disable<") {
		t.Errorf("list as viewer: got edit controls, want them hidden")
	}
	if _, body = h.send(api.RoleViewer, "GET", "/ui/tunnels?flash=<b>pwned</b>&name=web", nil, nil); strings.Contains(body, "pwned") {
		t.Errorf("got a crafted flash on the page, want only known messages")
	}
	resp, _ = h.send(api.RoleEditor, "POST", "/ui/tunnels/web/enabled", url.Values{"enabled": {"false"}}, nil)
	obj, _ := h.st.Get(ctx, "Tunnel", "web")
	if tun := obj.(*api.Tunnel); resp.StatusCode != 303 || tun.Spec.Enabled == nil || *tun.Spec.Enabled {
		t.Errorf("disable: got %d and enabled=%v, want 303 and false", resp.StatusCode, tun.Spec.Enabled)
	}
	// An edit made from a stale form is refused, not merged.
	resp, body = h.send(api.RoleEditor, "POST", "/ui/tunnels/web", url.Values{"resourceVersion": {"1"}, "hostname": {"web2.example.com"},
		"agent": {"home"}, "target": {"http://app:3000"}}, nil)
	if resp.StatusCode != 409 {
		t.Errorf("stale edit: got %d, want 409", resp.StatusCode)
	}
	_, body = h.send(api.RoleEditor, "GET", "/ui/tunnels/web/delete", nil, nil)
	if !strings.Contains(body, "cannot be undone") {
		t.Errorf("delete: got no confirmation page")
	}
	if resp, _ = h.send(api.RoleEditor, "POST", "/ui/tunnels/web/delete", nil, nil); resp.StatusCode != 303 {
		t.Errorf("delete: got %d, want 303", resp.StatusCode)
	}
	if _, err := h.st.Get(ctx, "Tunnel", "web"); err == nil {
		t.Errorf("after delete: the tunnel is still stored")
	}
	// A GitOps-managed tunnel is shown as such and not editable here.
	h.createTunnel("synced", map[string]string{ManagedByAnnotation: "flux"})
	_, body = h.send(api.RoleEditor, "GET", "/ui/tunnels/synced", nil, nil)
	if !strings.Contains(body, "managed by <strong>flux</strong>") || !strings.Contains(body, "<fieldset disabled>") {
		t.Errorf("managed tunnel: got a page without the notice or with an editable form")
	}
	for _, path := range []string{"/ui/tunnels/synced", "/ui/tunnels/synced/enabled", "/ui/tunnels/synced/delete"} {
		if resp, _ := h.send(api.RoleEditor, "POST", path, url.Values{"hostname": {"x.example.com"}}, nil); resp.StatusCode != 403 {
			t.Errorf("POST %s on a managed tunnel: got %d, want 403", path, resp.StatusCode)
		}
	}
}

func TestTunnelEventsStreamStatusChanges(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	ctx := context.Background()
	before := runtime.NumGoroutine()
	reqCtx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(reqCtx, "GET", h.url+"/ui/tunnels/events", nil)
	req.AddCookie(&http.Cookie{Name: apiserver.SessionCookie, Value: h.sessions[api.RoleViewer][0]})
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("got %d %q, want 200 text/event-stream", resp.StatusCode, ct)
	}
	events := make(chan string, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events <- d
			}
		}
	}()
	next := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case d, ok := <-events:
				if !ok {
					t.Fatalf("the stream ended, want an event with %s", want)
				}
				if strings.Contains(d, want) {
					return
				}
			case <-deadline:
				t.Fatalf("got no event with %s within 10 s", want)
			}
		}
	}
	h.createTunnel("web", nil)
	next(`"name":"web"`)
	obj, _ := h.st.Get(ctx, "Tunnel", "web")
	tun := obj.(*api.Tunnel)
	api.SetCondition(&tun.Status.Conditions, api.Condition{Type: api.ConditionReady, Status: api.ConditionTrue, Reason: api.ReasonReady}, time.Now())
	if _, err := h.st.UpdateStatus(ctx, tun, store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	next(`"state":"ready"`)
	if _, err := h.st.Delete(ctx, "Tunnel", "web", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	next(`"deleted":true`)
	cancel()
	resp.Body.Close()
	for range events {
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("got %d goroutines after the stream closed, want at most %d", n, before)
	}
}

// TestPagesRender is a smoke test of every page a browser lands on.
func TestPagesRender(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	h.createTunnel("web", nil)
	for _, path := range []string{"/ui/tunnels", "/ui/tunnels/new", "/ui/tunnels/web", "/ui/tunnels/web/delete"} {
		resp, body := h.send(api.RoleAdmin, "GET", path, nil, nil)
		if resp.StatusCode != 200 || !strings.Contains(body, "</html>") {
			t.Errorf("GET %s: got %d, want a page", path, resp.StatusCode)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: got CSP %q, want framing forbidden", path, csp)
		}
	}
}

func TestAgentsPageAndAddingAnAgent(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	ctx := context.Background()
	created, err := h.st.Create(ctx, &api.Agent{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Agent"},
		Metadata: api.ObjectMeta{Name: "home"}}, store.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ag := created.(*api.Agent)
	seen := time.Now().Add(-5 * time.Second)
	ag.Status.Version, ag.Status.LastHeartbeat, ag.Status.OverlayAddress = "v1.2.3", &seen, "100.64.0.7"
	ag.Status.Gateways = []api.NodePeerStatus{{Name: "gw-tokyo"}}
	api.SetCondition(&ag.Status.Conditions, api.Condition{Type: api.NodeConnected, Status: api.ConditionTrue, Reason: "Heartbeating"}, time.Now())
	if _, err := h.st.UpdateStatus(ctx, ag, store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	// An agent of more gateways than its status lists shows how many are
	// connected, not the few listed (those not connected) as its gateways.
	created, err = h.st.Create(ctx, &api.Agent{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Agent"},
		Metadata: api.ObjectMeta{Name: "mesh"}}, store.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mesh := created.(*api.Agent)
	mesh.Status.Peers = &api.PeerCounts{Total: 1000, Connected: 997}
	mesh.Status.Gateways = []api.NodePeerStatus{{Name: "gw-down-1"}, {Name: "gw-down-2"}, {Name: "gw-down-3"}}
	if _, err := h.st.UpdateStatus(ctx, mesh, store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, body := h.send(api.RoleViewer, "GET", "/ui/agents", nil, nil)
	for _, want := range []string{`data-name="home"`, "online", "v1.2.3", "gw-tokyo", "100.64.0.7", "5s ago",
		`data-name="mesh"`, `<td class="wide-only">997 of 1000 connected</td>`} {
		if !strings.Contains(body, want) {
			t.Errorf("agents page: got no %q", want)
		}
	}
	if strings.Contains(body, "gw-down-1") {
		t.Errorf("agents page: got the gateways mesh is not connected to as all of its gateways, want its counts")
	}
	if strings.Contains(body, "Add an agent") {
		t.Errorf("agents page as viewer: got the Add button, want it hidden")
	}
	resp, body := h.send(api.RoleEditor, "POST", "/ui/agents/new", url.Values{"name": {"Bad Name"}}, nil)
	if resp.StatusCode != 422 || !strings.Contains(body, `id="name-err"`) {
		t.Errorf("bad agent name: got %d, want 422 with the error next to the field", resp.StatusCode)
	}
	resp, body = h.send(api.RoleEditor, "POST", "/ui/agents/new", url.Values{"name": {"office"}}, nil)
	if resp.StatusCode != 201 {
		t.Fatalf("add an agent: got %d, want 201", resp.StatusCode)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("the page with the key: got Cache-Control %q, want no-store", cc)
	}
	obj, err := h.st.Get(ctx, "APIKey", "office")
	if err != nil {
		t.Fatal(err)
	}
	key := obj.(*api.APIKey)
	if key.Spec.Role != api.RoleAgent || key.Spec.MaxUses != 1 {
		t.Errorf("got key %+v, want a single-use agent key", key.Spec)
	}
	i := strings.Index(body, api.APIKeyPrefix+"office.")
	if i < 0 {
		t.Fatalf("the page shows no key")
	}
	shown := body[i : i+len(api.APIKeyPrefix+"office.")+43]
	name, secret, ok := api.ParseAPIKey(shown)
	if !ok || name != "office" || credential.Hash(secret) != key.Spec.SecretHash {
		t.Errorf("the key shown does not match the stored hash")
	}
	for _, want := range []string{
		"CONTROL_URL=" + h.url + " API_KEY=" + shown,
		"docker run -d --name kakuremichi-agent --restart unless-stopped",
		"-e CONTROL_URL=" + h.url + " -e API_KEY=" + shown,
		"kakuremichi:test agent --name office",
		"API_KEY: " + shown,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("add an agent: got no %q on the page", want)
		}
	}
	if resp, _ := h.send(api.RoleEditor, "POST", "/ui/agents/new", url.Values{"name": {"office"}}, nil); resp.StatusCode != 409 {
		t.Errorf("the same name again: got %d, want 409", resp.StatusCode)
	}
}

// A node's row counts its peers from its status's counts when it has
// them: its list then names only the peers in trouble.
func TestNodeRowsCountPeers(t *testing.T) {
	agent := func(counts *api.PeerCounts, gateways ...string) string {
		a := &api.Agent{Status: api.AgentStatus{NodeStatus: api.NodeStatus{Peers: counts}}}
		for _, g := range gateways {
			a.Status.Gateways = append(a.Status.Gateways, api.NodePeerStatus{Name: g})
		}
		r := agentRowOf(a)
		return fmt.Sprintf("%v %+v", r.Gateways, r.GatewayCounts)
	}
	gateway := func(counts *api.PeerCounts, agents ...string) string {
		g := &api.Gateway{Status: api.GatewayStatus{NodeStatus: api.NodeStatus{Peers: counts}}}
		for _, a := range agents {
			g.Status.Agents = append(g.Status.Agents, api.NodePeerStatus{Name: a})
		}
		return fmt.Sprint(gatewayRowOf(g).Agents)
	}
	tests := []struct {
		name, got, want string
	}{
		{"agent listing every gateway", agent(nil, "gw-a", "gw-b"), "[gw-a gw-b] <nil>"},
		{"agent of no gateway", agent(nil), "[] <nil>"},
		{"summed-up agent", agent(&api.PeerCounts{Total: 1000, Connected: 997}, "gw-a", "gw-b", "gw-c"),
			"[] &{Total:1000 Connected:997 Answered:0}"},
		{"summed-up agent with none in trouble", agent(&api.PeerCounts{Total: 1000, Connected: 1000}),
			"[] &{Total:1000 Connected:1000 Answered:0}"},
		{"gateway listing every agent", gateway(nil, "a", "b", "c"), "3"},
		{"summed-up gateway", gateway(&api.PeerCounts{Total: 10000, Connected: 9999, Answered: 9998}, "a", "b"), "10000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestUsersPage(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	ctx := context.Background()
	_, body := h.send(api.RoleAdmin, "GET", "/ui/users", nil, nil)
	for _, want := range []string{`data-name="alice"`, `data-name="ed"`, `data-name="vic"`, `href="/ui/users"`} {
		if !strings.Contains(body, want) {
			t.Errorf("users page: got no %q", want)
		}
	}
	if _, body := h.send(api.RoleEditor, "GET", "/ui/tunnels", nil, nil); strings.Contains(body, `href="/ui/users"`) {
		t.Errorf("an editor's navigation: got a Users link, want it hidden")
	}
	resp, body := h.send(api.RoleAdmin, "POST", "/ui/users", url.Values{"name": {"newbie"}, "role": {"root"}, "password": {"short"}}, nil)
	if resp.StatusCode != 422 || !strings.Contains(body, `id="role-err"`) || !strings.Contains(body, `id="password-err"`) {
		t.Errorf("invalid user: got %d, want 422 with errors next to role and password", resp.StatusCode)
	}
	resp, _ = h.send(api.RoleAdmin, "POST", "/ui/users", url.Values{"name": {"newbie"}, "role": {"editor"}, "password": {"newbies passphrase"}}, nil)
	if resp.StatusCode != 201 {
		t.Fatalf("create a user: got %d, want 201", resp.StatusCode)
	}
	if u, err := h.acc.GetUser(ctx, "newbie"); err != nil || u.Role != api.RoleEditor || u.CreatedBy != "alice" {
		t.Errorf("got user %+v, %v; want an editor made by alice", u, err)
	}
	if resp, _ := h.send(api.RoleAdmin, "POST", "/ui/users/vic/disabled", url.Values{"disabled": {"true"}}, nil); resp.StatusCode != 200 {
		t.Errorf("disable vic: got %d, want 200", resp.StatusCode)
	}
	if resp, _ := h.send(api.RoleViewer, "GET", "/ui/tunnels", nil, nil); resp.StatusCode != 303 {
		t.Errorf("vic's session after disabling: got %d, want 303 to the login page", resp.StatusCode)
	}
	if resp, _ := h.send(api.RoleAdmin, "POST", "/ui/users/alice/disabled", url.Values{"disabled": {"true"}}, nil); resp.StatusCode != 400 {
		t.Errorf("disable oneself: got %d, want 400", resp.StatusCode)
	}
}

func TestDashboardAndGateways(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	ctx := context.Background()
	created, err := h.st.Create(ctx, &api.Gateway{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Gateway"},
		Metadata: api.ObjectMeta{Name: "gw-tokyo"}, Spec: api.GatewaySpec{PublicEndpoint: "gw.example.com:51820"}}, store.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gw := created.(*api.Gateway)
	api.SetCondition(&gw.Status.Conditions, api.Condition{Type: api.NodeConnected, Status: api.ConditionTrue, Reason: "Heartbeating"}, time.Now())
	gw.Status.Routes = 3
	if _, err := h.st.UpdateStatus(ctx, gw, store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.createTunnel("web", nil)
	obj, _ := h.st.Get(ctx, "Tunnel", "web")
	tun := obj.(*api.Tunnel)
	api.SetCondition(&tun.Status.Conditions, api.Condition{Type: api.ConditionReady, Status: api.ConditionFalse,
		Reason: api.ReasonAgentOffline, Message: "agent home is not connected"}, time.Now())
	if _, err := h.st.UpdateStatus(ctx, tun, store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, body := h.send(api.RoleViewer, "GET", "/ui/", nil, nil)
	for _, want := range []string{`<span class="big">1</span> gateways online`, `<span class="big">0</span> tunnels ready`,
		`data-name="web"`, "AgentOffline", "agent home is not connected"} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard: got no %q", want)
		}
	}
	// A gateway of more agents than its status lists counts them all.
	created, err = h.st.Create(ctx, &api.Gateway{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Gateway"},
		Metadata: api.ObjectMeta{Name: "gw-hub"}}, store.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hub := created.(*api.Gateway)
	hub.Status.Peers = &api.PeerCounts{Total: 10000, Connected: 9998, Answered: 9998}
	hub.Status.Agents = []api.NodePeerStatus{{Name: "a1"}, {Name: "a2", Connected: true}}
	if _, err := h.st.UpdateStatus(ctx, hub, store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, body = h.send(api.RoleViewer, "GET", "/ui/gateways", nil, nil)
	for _, want := range []string{`data-name="gw-tokyo"`, "online", "gw.example.com:51820", `data-name="gw-hub"`, `<td class="wide-only">10000</td>`} {
		if !strings.Contains(body, want) {
			t.Errorf("gateways page: got no %q", want)
		}
	}
	if strings.Contains(body, ">Disable<") {
		t.Errorf("gateways page as viewer: got a Disable button, want it hidden")
	}
	resp, _ := h.send(api.RoleEditor, "POST", "/ui/gateways/gw-tokyo/enabled", url.Values{"enabled": {"false"}}, nil)
	obj, _ = h.st.Get(ctx, "Gateway", "gw-tokyo")
	if g := obj.(*api.Gateway); resp.StatusCode != 303 || g.Spec.Enabled == nil || *g.Spec.Enabled {
		t.Errorf("disable the gateway: got %d and enabled=%v, want 303 and false", resp.StatusCode, g.Spec.Enabled)
	}
}

func TestChangesInTheUIAreAudited(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	h.send(api.RoleEditor, "POST", "/ui/tunnels", url.Values{"name": {"web"}, "hostname": {"web.example.com"},
		"agent": {"home"}, "target": {"http://app:3000"}, "enabled": {"on"}}, map[string]string{"X-Forwarded-For": "203.0.113.9"})
	_, body := h.send(api.RoleAdmin, "GET", "/ui/audit", nil, nil)
	for _, want := range []string{"POST /ui/tunnels</code>", "ed <small>(editor)</small>", "<td>303</td>", "<td>127.0.0.1</td>", "POST /ui/setup</code>", "alice <small>(admin)</small>"} {
		if !strings.Contains(body, want) {
			t.Errorf("audit page: got no %q", want)
		}
	}
	if strings.Contains(body, "203.0.113.9") {
		t.Errorf("audit page: got the client-sent X-Forwarded-For as the address, want the TCP peer")
	}
}

func TestYAMLAndAPIKeys(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	ctx := context.Background()
	h.createTunnel("web", nil)
	resp, body := h.send(api.RoleViewer, "GET", "/ui/yaml/tunnels/web", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "kind: Tunnel") || !strings.Contains(body, "hostname: web.example.com") {
		t.Errorf("tunnel as YAML: got %d, want the manifest", resp.StatusCode)
	}
	for _, plural := range []string{"tokens", "apikeys"} {
		if resp, _ := h.send(api.RoleAdmin, "GET", "/ui/yaml/"+plural+"/bootstrap", nil, nil); resp.StatusCode != 404 {
			t.Errorf("YAML of %s: got %d, want 404 (kinds with secrets are not shown)", plural, resp.StatusCode)
		}
	}
	h.send(api.RoleEditor, "POST", "/ui/agents/new", url.Values{"name": {"office"}}, nil)
	_, body = h.send(api.RoleEditor, "GET", "/ui/apikeys", nil, nil)
	if !strings.Contains(body, `data-name="office"`) || !strings.Contains(body, "0 of 1") {
		t.Errorf("API keys page: got no single-use key office")
	}
	obj, _ := h.st.Get(ctx, "APIKey", "office")
	if hash := obj.(*api.APIKey).Spec.SecretHash; strings.Contains(body, hash) {
		t.Errorf("API keys page: got the secret hash on the page")
	}
	if resp, _ := h.send(api.RoleEditor, "POST", "/ui/apikeys/office/revoke", nil, nil); resp.StatusCode != 303 {
		t.Errorf("revoke: got %d, want 303", resp.StatusCode)
	}
	if _, err := h.st.Get(ctx, "APIKey", "office"); err == nil {
		t.Errorf("after revoke: the key is still stored")
	}
}

// TestEveryUIStateChangeNeedsTheCSRFToken posts to every state-changing
// UI route as an admin without the session's CSRF token, and to the
// routes without a session (login, setup, sign-up) from another site:
// each must be refused with 403, whatever the route.
func TestEveryUIStateChangeNeedsTheCSRFToken(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	if _, err := h.acc.SetOpenRegistration(context.Background(), true, "alice"); err != nil {
		t.Fatal(err)
	}
	h.createTunnel("web", nil)
	n := 0
	for _, r := range h.srv.Routes() {
		if r.Method != http.MethodPost || !strings.HasPrefix(r.Path, Prefix) {
			continue
		}
		n++
		path := strings.NewReplacer(":name", "web", ":id", "0123456789abcdef").Replace(r.Path)
		form := url.Values{"name": {"x"}, "role": {"viewer"}, "enabled": {"false"}, "disabled": {"true"}, "registration": {"invite"}}
		if uiPolicy[r.Method+" "+r.Path] == "" {
			resp, _ := h.send("", "POST", path, form, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
			if resp.StatusCode != 403 {
				t.Errorf("POST %s from another site: got %d, want 403", path, resp.StatusCode)
			}
			continue
		}
		form.Set(apiserver.CSRFField, "")
		if resp, _ := h.send(api.RoleAdmin, "POST", path, form, nil); resp.StatusCode != 403 {
			t.Errorf("POST %s without the CSRF token: got %d, want 403", path, resp.StatusCode)
		}
		form.Set(apiserver.CSRFField, "wrong")
		if resp, _ := h.send(api.RoleAdmin, "POST", path, form, nil); resp.StatusCode != 403 {
			t.Errorf("POST %s with a wrong CSRF token: got %d, want 403", path, resp.StatusCode)
		}
	}
	if n < 20 {
		t.Errorf("checked %d POST routes, want every one of the UI's (20 or more)", n)
	}
	if _, err := h.st.Get(context.Background(), "Tunnel", "web"); err != nil {
		t.Errorf("after refused posts: the tunnel is gone: %v", err)
	}
	if st, _ := h.acc.Settings(context.Background()); !st.OpenRegistration {
		t.Errorf("after refused posts: registration changed")
	}
}

// TestTunnelFormRedirect: the form's redirect box writes spec.httpRedirect
// only when it changes what the tunnel does, so a tunnel on the default
// stays on it; an unticked box stores false; a tcp tunnel gets none.
func TestTunnelFormRedirect(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	ctx := context.Background()
	stored := func(name string) *bool {
		t.Helper()
		obj, err := h.st.Get(ctx, "Tunnel", name)
		if err != nil {
			t.Fatal(err)
		}
		return obj.(*api.Tunnel).Spec.HTTPRedirect
	}
	post := func(path string, v url.Values) {
		t.Helper()
		if resp, body := h.send(api.RoleEditor, "POST", path, v, nil); resp.StatusCode != 303 {
			t.Fatalf("POST %s: got %d, want 303\n%s", path, resp.StatusCode, body)
		}
	}
	post("/ui/tunnels", url.Values{"name": {"on"}, "hostname": {"on.example.com"}, "agent": {"home"},
		"target": {"http://app:3000"}, "enabled": {"on"}, "httpRedirect": {"on"}})
	if r := stored("on"); r != nil {
		t.Errorf("ticked box on a new tunnel: stored %v, want the field left to its default", *r)
	}
	post("/ui/tunnels", url.Values{"name": {"off"}, "hostname": {"off.example.com"}, "agent": {"home"},
		"target": {"http://app:3000"}, "enabled": {"on"}})
	if r := stored("off"); r == nil || *r {
		t.Errorf("unticked box: stored %v, want false", r)
	}
	if _, body := h.send(api.RoleEditor, "GET", "/ui/tunnels/off", nil, nil); strings.Contains(body, `name="httpRedirect" checked`) {
		t.Errorf("the form of a tunnel that does not redirect shows the box ticked")
	}
	obj, _ := h.st.Get(ctx, "Tunnel", "off")
	post("/ui/tunnels/off", url.Values{"resourceVersion": {obj.GetMeta().ResourceVersion}, "hostname": {"off.example.com"},
		"agent": {"home"}, "target": {"http://app:3000"}, "enabled": {"on"}, "httpRedirect": {"on"}})
	if r := stored("off"); r == nil || !*r {
		t.Errorf("ticking the box on a tunnel that did not redirect: stored %v, want true", r)
	}
	post("/ui/tunnels", url.Values{"name": {"db"}, "hostname": {"db.example.com"}, "agent": {"home"},
		"target": {"tcp://db:5432"}, "publicPort": {"15432"}, "enabled": {"on"}})
	if r := stored("db"); r != nil {
		t.Errorf("tcp tunnel: stored httpRedirect %v, want none", *r)
	}
}
