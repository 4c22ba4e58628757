package apiserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/kakuremichi/kakuremichi/internal/audit"
	"github.com/kakuremichi/kakuremichi/store"
)

// harness is a real API server on a real embedded etcd.
type harness struct {
	t      *testing.T
	st     *store.Store
	srv    *Server
	url    string
	tokens map[api.Role]string
	// sessions holds a logged-in browser session per role.
	sessions map[api.Role]browserSession
}

// browserSession is what a browser holds after logging in.
type browserSession struct {
	cookie, csrf string
}

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
	srv := New(Config{Store: st, BookmarkInterval: 200 * time.Millisecond, Accounts: acc, Audit: al})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	h := &harness{t: t, st: st, srv: srv, url: ts.URL, tokens: map[api.Role]string{}, sessions: map[api.Role]browserSession{}}
	path := filepath.Join(dir, "bootstrap-token")
	created, err := EnsureBootstrapToken(ctx, st, path)
	if err != nil || !created {
		t.Fatalf("EnsureBootstrapToken: got created=%v err=%v, want created", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("bootstrap token file: got %v (err %v), want mode 0600", fi.Mode().Perm(), err)
	}
	data, _ := os.ReadFile(path)
	h.tokens[api.RoleAdmin] = strings.TrimSpace(string(data))
	for _, role := range []api.Role{api.RoleEditor, api.RoleViewer} {
		body := fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Token","metadata":{"name":"t-%s"},"spec":{"role":"%s"}}`, role, role)
		code, out := h.do(api.RoleAdmin, "POST", APIPrefix+"/tokens", "application/json", body)
		if code != 201 {
			t.Fatalf("create %s token: got %d %s, want 201", role, code, out)
		}
		var tok api.Token
		json.Unmarshal(out, &tok)
		if tok.Spec.SecretHash != "" {
			t.Fatalf("got a secret hash in the create response, want none")
		}
		h.tokens[role] = tok.Status.Secret
	}
	h.setUpUsers()
	return h
}

// userOf names the test user of each role.
var userOf = map[api.Role]string{api.RoleAdmin: "alice", api.RoleEditor: "ed", api.RoleViewer: "vic"}

const testPassword = "a long passphrase"

// setUpUsers walks the first run with the bootstrap token, creates a user
// per role and logs each in.
func (h *harness) setUpUsers() {
	h.t.Helper()
	code, out := h.do(api.RoleAdmin, "POST", "/auth/setup", "application/json", `{"name":"alice","password":"`+testPassword+`"}`)
	if code != 201 {
		h.t.Fatalf("setup: got %d %s, want 201", code, out)
	}
	for _, role := range []api.Role{api.RoleEditor, api.RoleViewer} {
		body := fmt.Sprintf(`{"name":%q,"role":%q,"password":%q}`, userOf[role], role, testPassword)
		if code, out := h.do(api.RoleAdmin, "POST", "/auth/users", "application/json", body); code != 201 {
			h.t.Fatalf("create user %s: got %d %s, want 201", userOf[role], code, out)
		}
	}
	for role := range userOf {
		h.login(role)
	}
}

// login logs the user of role in and keeps the session.
func (h *harness) login(role api.Role) {
	h.t.Helper()
	resp, err := http.Post(h.url+"/auth/login", "application/json",
		strings.NewReader(fmt.Sprintf(`{"username":%q,"password":%q}`, userOf[role], testPassword)))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var info SessionInfo
	json.NewDecoder(resp.Body).Decode(&info)
	var id string
	for _, c := range resp.Cookies() {
		if c.Name == SessionCookie {
			id = c.Value
		}
	}
	if resp.StatusCode != 200 || id == "" || info.CSRFToken == "" || info.Role != role {
		h.t.Fatalf("login %s: got %d, cookie %v, %+v; want 200 with a session as %s", userOf[role], resp.StatusCode, id != "", info, role)
	}
	h.sessions[role] = browserSession{cookie: id, csrf: info.CSRFToken}
}

// doSession sends a request as a browser logged in as role would: with
// the session cookie, and on state changes the CSRF token and a
// same-origin Sec-Fetch-Site.
func (h *harness) doSession(role api.Role, method, path, ctype, body string) (int, []byte) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.url+path, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if s, ok := h.sessions[role]; ok {
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: s.cookie})
		req.Header.Set(CSRFHeader, s.csrf)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (h *harness) do(role api.Role, method, path, ctype, body string) (int, []byte) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.url+path, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if tok := h.tokens[role]; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

const tunnelJSON = `{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":"%s","labels":{"app":"web"}},"spec":{"hostname":"%s","agent":"agent-home","target":"http://localhost:8080"}}`

// routePolicy is, for every route the server has, the weakest role that
// may use it ("" = no credential needed). A route missing here fails the
// test, so a new route cannot ship without an authorization test.
var routePolicy = map[string]api.Role{
	"GET /healthz":                                 "",
	"GET /readyz":                                  "",
	"GET /version":                                 api.RoleViewer,
	"GET /apis":                                    api.RoleViewer,
	"GET " + APIPrefix:                             api.RoleViewer,
	"GET " + APIPrefix + "/:plural":                api.RoleViewer,
	"POST " + APIPrefix + "/:plural":               api.RoleEditor,
	"GET " + APIPrefix + "/:plural/:name":          api.RoleViewer,
	"PUT " + APIPrefix + "/:plural/:name":          api.RoleEditor,
	"PATCH " + APIPrefix + "/:plural/:name":        api.RoleEditor,
	"DELETE " + APIPrefix + "/:plural/:name":       api.RoleEditor,
	"GET " + APIPrefix + "/:plural/:name/status":   api.RoleViewer,
	"PUT " + APIPrefix + "/:plural/:name/status":   api.RoleAdmin,
	"PATCH " + APIPrefix + "/:plural/:name/status": api.RoleAdmin,
	"GET /auth/audit":                              api.RoleAdmin,
	"GET /auth/setup":                              "",
	"POST /auth/login":                             "",
	"POST /auth/token":                             "",
	"POST /auth/setup":                             api.RoleAdmin,
	"POST /auth/logout":                            api.RoleViewer,
	"GET /auth/session":                            api.RoleViewer,
	"GET /auth/users":                              api.RoleAdmin,
	"POST /auth/users":                             api.RoleAdmin,
	"GET /auth/users/:name":                        api.RoleAdmin,
	"PATCH /auth/users/:name":                      api.RoleAdmin,
	"GET /auth/settings":                           api.RoleAdmin,
	"PUT /auth/settings":                           api.RoleAdmin,
	"GET /auth/invites":                            api.RoleAdmin,
	"POST /auth/invites":                           api.RoleAdmin,
	"DELETE /auth/invites/:id":                     api.RoleAdmin,
}

func roleRank(r api.Role) int {
	switch r {
	case api.RoleAdmin:
		return 3
	case api.RoleEditor:
		return 2
	case api.RoleViewer:
		return 1
	}
	return 0
}

// TestEveryRouteIsAuthorized checks quality.md 16: each route answers 401
// without credentials and 403 to a role below its policy, for every kind.
func TestEveryRouteIsAuthorized(t *testing.T) {
	h := newHarness(t)
	seen := map[string]bool{}
	for _, r := range h.srv.Routes() {
		key := r.Method + " " + r.Path
		if strings.HasPrefix(r.Method, "echo_") || seen[key] {
			continue
		}
		seen[key] = true
		minRole, ok := routePolicy[key]
		if !ok {
			t.Errorf("route %s has no entry in routePolicy: add one and test it", key)
			continue
		}
		kinds := api.Kinds()
		if !strings.Contains(r.Path, ":plural") {
			kinds = kinds[:1] // the path is the same for every kind
		}
		for _, k := range kinds {
			path := strings.NewReplacer(":plural", k.Plural, ":name", "x").Replace(r.Path)
			want := minRole
			if strings.Contains(r.Path, ":plural") {
				switch k.Kind {
				case "Token":
					want = api.RoleAdmin
				case "APIKey":
					if roleRank(want) < roleRank(api.RoleEditor) {
						want = api.RoleEditor
					}
				}
			}
			for _, cred := range []struct {
				role    api.Role
				session bool
			}{{"", false}, {api.RoleViewer, false}, {api.RoleEditor, false}, {api.RoleAdmin, false},
				{api.RoleViewer, true}, {api.RoleEditor, true}, {api.RoleAdmin, true}} {
				role := cred.role
				do, how := h.do, "token"
				if cred.session {
					do, how = h.doSession, "session"
				}
				code, body := do(role, r.Method, path, "application/json", "{}")
				if cred.session && key == "POST /auth/logout" {
					h.login(role)
				}
				switch {
				case want == "":
					if code == 401 || code == 403 {
						t.Errorf("%s %s as %q (%s): got %d, want it open", r.Method, path, role, how, code)
					}
				case role == "":
					if code != 401 {
						t.Errorf("%s %s without a token: got %d %s, want 401", r.Method, path, code, body)
					}
				case roleRank(role) < roleRank(want):
					if code != 403 {
						t.Errorf("%s %s as %s (%s): got %d %s, want 403", r.Method, path, role, how, code, body)
					}
				default:
					if code == 401 || code == 403 {
						t.Errorf("%s %s as %s (%s): got %d %s, want access", r.Method, path, role, how, code, body)
					}
				}
			}
		}
	}
	for key := range routePolicy {
		if !seen[key] {
			t.Errorf("routePolicy lists %s, which the server does not serve", key)
		}
	}
}

func TestBadTokensAreRefused(t *testing.T) {
	h := newHarness(t)
	for name, tok := range map[string]string{
		"garbage":      "nonsense",
		"wrong secret": h.tokens[api.RoleAdmin] + "x",
		"unknown name": "kkm_nobody.abc",
	} {
		h.tokens["bogus"] = tok
		if code, _ := h.do("bogus", "GET", APIPrefix+"/tunnels", "", ""); code != 401 {
			t.Errorf("%s: got %d, want 401", name, code)
		}
	}
	// Revocation takes effect at once.
	if code, body := h.do(api.RoleAdmin, "DELETE", APIPrefix+"/tokens/t-viewer", "", ""); code != 200 {
		t.Fatalf("revoke: got %d %s", code, body)
	}
	if code, _ := h.do(api.RoleViewer, "GET", APIPrefix+"/tunnels", "", ""); code != 401 {
		t.Errorf("revoked token: got %d, want 401", code)
	}
	// Secrets and hashes are never listed.
	_, body := h.do(api.RoleAdmin, "GET", APIPrefix+"/tokens", "", "")
	if bytes.Contains(body, []byte("secretHash")) || bytes.Contains(body, []byte(`"secret"`)) {
		t.Errorf("got token list %s, want no secret or hash", body)
	}
	// Expired tokens are refused.
	exp := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	code, out := h.do(api.RoleAdmin, "POST", APIPrefix+"/tokens", "application/json",
		`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Token","metadata":{"name":"old"},"spec":{"role":"admin","expiresAt":"`+exp+`"}}`)
	if code != 201 {
		t.Fatalf("create expired token: got %d %s", code, out)
	}
	var tok api.Token
	json.Unmarshal(out, &tok)
	h.tokens["expired"] = tok.Status.Secret
	if code, body := h.do("expired", "GET", APIPrefix+"/tunnels", "", ""); code != 401 || !strings.Contains(string(body), "expired") {
		t.Errorf("expired token: got %d %s, want 401 saying it expired", code, body)
	}
}

func TestCRUDAndConflicts(t *testing.T) {
	h := newHarness(t)
	code, body := h.do(api.RoleEditor, "POST", APIPrefix+"/tunnels", "application/yaml",
		"apiVersion: kakuremichi.io/v1alpha1\nkind: Tunnel\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  hostname: fuga.sample.com\n  agent: agent-home\n  target: http://localhost:8080\n")
	if code != 201 {
		t.Fatalf("create: got %d %s, want 201", code, body)
	}
	var created api.Tunnel
	json.Unmarshal(body, &created)
	if created.Metadata.ResourceVersion == "" || created.Metadata.Generation != 1 || created.Metadata.UID == "" {
		t.Fatalf("got metadata %+v, want resourceVersion, uid and generation 1", created.Metadata)
	}
	if code, _ := h.do(api.RoleEditor, "POST", APIPrefix+"/tunnels", "", fmt.Sprintf(tunnelJSON, "web", "x.example.com")); code != 409 {
		t.Errorf("create twice: got %d, want 409", code)
	}
	// Two writers from the same resourceVersion: one wins, one gets 409.
	upd := func(host string) (int, []byte) {
		var obj map[string]any
		json.Unmarshal(body, &obj)
		obj["spec"].(map[string]any)["hostname"] = host
		data, _ := json.Marshal(obj)
		return h.do(api.RoleEditor, "PUT", APIPrefix+"/tunnels/web", "application/json", string(data))
	}
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = upd(fmt.Sprintf("h%d.example.com", i))
		}()
	}
	wg.Wait()
	if !(codes[0] == 200 && codes[1] == 409 || codes[0] == 409 && codes[1] == 200) {
		t.Fatalf("got codes %v, want one 200 and one 409", codes)
	}
	code, out := upd("late.example.com")
	var st api.Status
	json.Unmarshal(out, &st)
	if code != 409 || st.Reason != api.ReasonConflict {
		t.Fatalf("stale update: got %d %s, want 409 Conflict", code, out)
	}
	// Merge patch without a resourceVersion applies to the latest.
	code, out = h.do(api.RoleEditor, "PATCH", APIPrefix+"/tunnels/web", "application/merge-patch+json", `{"spec":{"enabled":false}}`)
	if code != 200 {
		t.Fatalf("patch: got %d %s", code, out)
	}
	var patched api.Tunnel
	json.Unmarshal(out, &patched)
	if patched.Spec.IsEnabled() || patched.Metadata.Generation != 3 {
		t.Fatalf("got enabled=%v generation=%d, want false and 3", patched.Spec.IsEnabled(), patched.Metadata.Generation)
	}
	// Dry run changes nothing.
	code, _ = h.do(api.RoleEditor, "DELETE", APIPrefix+"/tunnels/web?dryRun=All", "", "")
	if code != 200 {
		t.Fatalf("dry-run delete: got %d", code)
	}
	if code, _ := h.do(api.RoleViewer, "GET", APIPrefix+"/tunnels/web", "", ""); code != 200 {
		t.Fatalf("after dry-run delete: got %d, want the object still there", code)
	}
	if code, _ := h.do(api.RoleEditor, "DELETE", APIPrefix+"/tunnels/web", "", ""); code != 200 {
		t.Fatalf("delete: got %d", code)
	}
	if code, out := h.do(api.RoleViewer, "GET", APIPrefix+"/tunnels/web", "", ""); code != 404 {
		t.Fatalf("after delete: got %d %s, want 404", code, out)
	}
}

// TestBadInputLeavesStoreUntouched checks quality.md 22 at the API.
func TestBadInputLeavesStoreUntouched(t *testing.T) {
	h := newHarness(t)
	if code, body := h.do(api.RoleEditor, "POST", APIPrefix+"/tunnels", "", fmt.Sprintf(tunnelJSON, "web", "fuga.sample.com")); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	_, before := h.do(api.RoleViewer, "GET", APIPrefix+"/tunnels/web", "", "")
	tests := []struct {
		name, method, ctype, body string
		code                      int
		field                     string
	}{
		{"unknown field", "PUT", "application/json", `{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":"web"},"spec":{"hostname":"a.example.com","agent":"a","target":"http://x:1","bogus":1}}`, 422, "spec.bogus"},
		{"wrong type", "PUT", "application/json", `{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":"web"},"spec":{"hostname":"a.example.com","agent":"a","target":"http://x:1","enabled":"yes"}}`, 422, "spec.enabled"},
		{"bad scheme", "PUT", "application/yaml", "apiVersion: kakuremichi.io/v1alpha1\nkind: Tunnel\nmetadata: {name: web}\nspec: {hostname: a.example.com, agent: a, target: 'ftp://x:1'}\n", 422, "spec.target"},
		{"duplicate key", "PUT", "application/yaml", "apiVersion: kakuremichi.io/v1alpha1\nkind: Tunnel\nmetadata: {name: web}\nspec: {hostname: a.example.com, hostname: b.example.com}\n", 422, ""},
		{"name mismatch", "PUT", "application/json", fmt.Sprintf(tunnelJSON, "other", "a.example.com"), 422, "metadata.name"},
		{"kind mismatch", "PUT", "application/json", `{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Agent","metadata":{"name":"web"}}`, 422, "kind"},
		{"oversized", "PUT", "application/json", `{"x":"` + strings.Repeat("a", api.MaxObjectBytes) + `"}`, 413, ""},
		{"patch bad value", "PATCH", "application/merge-patch+json", `{"spec":{"target":"ftp://x:1"}}`, 422, "spec.target"},
		{"patch unknown field", "PATCH", "application/merge-patch+json", `{"spec":{"nope":1}}`, 422, "spec.nope"},
		{"patch wrong content type", "PATCH", "application/json", `{"spec":{}}`, 415, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := h.do(api.RoleEditor, tt.method, APIPrefix+"/tunnels/web", tt.ctype, tt.body)
			if code != tt.code {
				t.Fatalf("got %d %s, want %d", code, body, tt.code)
			}
			var st api.Status
			if err := json.Unmarshal(body, &st); err != nil || st.Message == "" {
				t.Fatalf("got body %s, want an api.Status with a message", body)
			}
			if tt.field != "" {
				found := false
				if st.Details != nil {
					for _, c := range st.Details.Causes {
						found = found || c.Field == tt.field
					}
				}
				if !found {
					t.Fatalf("got causes %+v, want one for field %s", st.Details, tt.field)
				}
			}
		})
	}
	_, after := h.do(api.RoleViewer, "GET", APIPrefix+"/tunnels/web", "", "")
	if !bytes.Equal(before, after) {
		t.Fatalf("stored object changed:\nbefore %s\nafter  %s", before, after)
	}
}

func TestWatchStreamsEventsFromAResourceVersion(t *testing.T) {
	h := newHarness(t)
	code, body := h.do(api.RoleViewer, "GET", APIPrefix+"/tunnels", "", "")
	if code != 200 {
		t.Fatalf("list: %d %s", code, body)
	}
	var list api.List
	json.Unmarshal(body, &list)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.url+APIPrefix+"/tunnels?watch=true&labelSelector=app%3Dweb&resourceVersion="+list.Metadata.ResourceVersion, nil)
	req.Header.Set("Authorization", "Bearer "+h.tokens[api.RoleViewer])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("got Content-Type %q, want application/x-ndjson", ct)
	}
	h.do(api.RoleEditor, "POST", APIPrefix+"/tunnels", "", fmt.Sprintf(tunnelJSON, "web", "fuga.sample.com"))
	h.do(api.RoleEditor, "POST", APIPrefix+"/tunnels", "", `{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":"unlabelled"},"spec":{"hostname":"u.example.com","agent":"a","target":"http://x:1"}}`)
	h.do(api.RoleEditor, "PATCH", APIPrefix+"/tunnels/web", "application/merge-patch+json", `{"spec":{"enabled":false}}`)
	// Leaving and re-entering the selector reads as a delete and an add.
	h.do(api.RoleEditor, "PATCH", APIPrefix+"/tunnels/web", "application/merge-patch+json", `{"metadata":{"labels":{"app":"other"}}}`)
	h.do(api.RoleEditor, "PATCH", APIPrefix+"/tunnels/web", "application/merge-patch+json", `{"spec":{"enabled":true}}`)
	h.do(api.RoleEditor, "PATCH", APIPrefix+"/tunnels/web", "application/merge-patch+json", `{"metadata":{"labels":{"app":"web"}}}`)
	h.do(api.RoleEditor, "DELETE", APIPrefix+"/tunnels/web", "", "")
	sc := bufio.NewScanner(resp.Body)
	var got []string
	sawBookmark := false
	for len(got) < 5 && sc.Scan() {
		var ev api.WatchEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("bad event line %q: %v", sc.Text(), err)
		}
		if ev.Type == api.Bookmark {
			sawBookmark = true
			continue
		}
		obj, err := api.DecodeObject(ev.Object)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(ev.Type)+" "+obj.GetMeta().Name)
	}
	want := []string{"ADDED web", "MODIFIED web", "DELETED web", "ADDED web", "DELETED web"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got events %v, want %v", got, want)
	}
	for !sawBookmark && sc.Scan() {
		sawBookmark = strings.Contains(sc.Text(), `"BOOKMARK"`)
	}
	if !sawBookmark {
		t.Fatalf("got no BOOKMARK on an idle watch")
	}
}

func TestWatchFromCompactedRevisionIsGone(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		h.do(api.RoleEditor, "POST", APIPrefix+"/tunnels", "", fmt.Sprintf(tunnelJSON, fmt.Sprintf("t%d", i), fmt.Sprintf("h%d.example.com", i)))
	}
	rev, err := h.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.Client().Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	code, body := h.do(api.RoleViewer, "GET", APIPrefix+"/tunnels?watch=true&resourceVersion=2", "", "")
	if code != 200 {
		t.Fatalf("got %d %s", code, body)
	}
	var ev api.WatchEvent
	if err := json.Unmarshal(bytes.SplitN(body, []byte("\n"), 2)[0], &ev); err != nil {
		t.Fatalf("got %s: %v", body, err)
	}
	var st api.Status
	json.Unmarshal(ev.Object, &st)
	if ev.Type != api.Error || st.Code != 410 || st.Reason != api.ReasonExpired {
		t.Fatalf("got %s %+v, want an ERROR event with 410 Expired", ev.Type, st)
	}
}
