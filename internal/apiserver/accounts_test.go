package apiserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
)

func TestSessionCookieFlagsRotationAndLogout(t *testing.T) {
	h := newHarness(t)
	resp, err := http.Post(h.url+"/auth/login", "application/json", strings.NewReader(`{"username":"vic","password":"`+testPassword+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	raw := resp.Header.Get("Set-Cookie")
	for _, want := range []string{SessionCookie + "=", "Path=/", "HttpOnly", "Secure", "SameSite=Lax"} {
		if !strings.Contains(raw, want) {
			t.Errorf("got Set-Cookie %q, want it to contain %q", raw, want)
		}
	}
	if strings.Contains(strings.ToLower(raw), "domain=") {
		t.Errorf("got Set-Cookie %q, want no Domain (the __Host- prefix forbids it)", raw)
	}
	newID := resp.Cookies()[0].Value
	if newID == h.sessions[api.RoleViewer].cookie {
		t.Fatalf("got the same session id at a second login, want a new one")
	}
	// Logging in while holding a session ends the old one.
	old := h.sessions[api.RoleViewer]
	req, _ := http.NewRequest("POST", h.url+"/auth/login", strings.NewReader(`{"username":"vic","password":"`+testPassword+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: old.cookie})
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, _ := h.doSession(api.RoleViewer, "GET", "/auth/session", "", ""); code != 401 {
		t.Errorf("the session held at a new login: got %d, want 401", code)
	}
	h.sessions[api.RoleViewer] = browserSession{cookie: newID}
	if code, body := h.doSession(api.RoleViewer, "GET", APIPrefix+"/tunnels", "", ""); code != 200 {
		t.Fatalf("list tunnels with the session: got %d %s, want 200", code, body)
	}
	// Logout needs the CSRF token like any state change.
	if code, _ := h.doSession(api.RoleViewer, "POST", "/auth/logout", "", ""); code != 403 {
		t.Errorf("logout without the CSRF token: got %d, want 403", code)
	}
	h.login(api.RoleViewer)
	s := h.sessions[api.RoleViewer]
	req, _ = http.NewRequest("POST", h.url+"/auth/logout", nil)
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: s.cookie})
	req.Header.Set(CSRFHeader, s.csrf)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || !strings.Contains(resp.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("logout: got %d, Set-Cookie %q; want 204 clearing the cookie", resp.StatusCode, resp.Header.Get("Set-Cookie"))
	}
	if code, _ := h.doSession(api.RoleViewer, "GET", APIPrefix+"/tunnels", "", ""); code != 401 {
		t.Errorf("after logout: got %d, want 401", code)
	}
}

func TestCrossSiteRequestsAreRefused(t *testing.T) {
	h := newHarness(t)
	s := h.sessions[api.RoleEditor]
	tunnel := fmt.Sprintf(tunnelJSON, "web", "web.example.com")
	post := func(hdr map[string]string, ctype, body string) (int, string) {
		req, _ := http.NewRequest("POST", h.url+APIPrefix+"/tunnels", strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: s.cookie})
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st api.Status
		json.NewDecoder(resp.Body).Decode(&st)
		return resp.StatusCode, st.Message
	}
	for _, tc := range []struct {
		name  string
		hdr   map[string]string
		ctype string
		body  string
		want  int
	}{
		{"no CSRF token", map[string]string{"Sec-Fetch-Site": "same-origin"}, "application/json", tunnel, 403},
		{"wrong CSRF token", map[string]string{CSRFHeader: s.csrf + "x"}, "application/json", tunnel, 403},
		{"cross-site form post", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
			"application/x-www-form-urlencoded", url.Values{CSRFField: {"guess"}}.Encode(), 403},
		{"cross-site with the right token", map[string]string{CSRFHeader: s.csrf, "Sec-Fetch-Site": "cross-site"}, "application/json", tunnel, 403},
		{"foreign Origin with the right token", map[string]string{CSRFHeader: s.csrf, "Origin": "https://evil.example"}, "application/json", tunnel, 403},
		{"same origin with the token", map[string]string{CSRFHeader: s.csrf, "Sec-Fetch-Site": "same-origin", "Origin": h.url}, "application/json", tunnel, 201},
	} {
		if code, msg := post(tc.hdr, tc.ctype, tc.body); code != tc.want {
			t.Errorf("%s: got %d %q, want %d", tc.name, code, msg, tc.want)
		}
	}
	// A login form posted from another site is refused too (login CSRF).
	req, _ := http.NewRequest("POST", h.url+"/auth/login", strings.NewReader(url.Values{"username": {"ed"}, "password": {testPassword}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("Set-Cookie") != "" {
		t.Errorf("cross-site login: got %d with Set-Cookie %q, want 403 and no cookie", resp.StatusCode, resp.Header.Get("Set-Cookie"))
	}
}

func TestLoginBruteForceIsSlowedAndSaysNothing(t *testing.T) {
	h := newHarness(t)
	login := func(user, pw string) (int, string, string) {
		resp, err := http.Post(h.url+"/auth/login", "application/json", strings.NewReader(fmt.Sprintf(`{"username":%q,"password":%q}`, user, pw)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st api.Status
		json.NewDecoder(resp.Body).Decode(&st)
		return resp.StatusCode, st.Message, resp.Header.Get("Retry-After")
	}
	_, unknown, _ := login("nobody", "whatever password")
	_, wrong, _ := login("ed", "whatever password")
	if unknown != wrong || unknown == "" {
		t.Errorf("got %q for an unknown user and %q for a wrong password, want the same", unknown, wrong)
	}
	// Ed's bucket (5 a minute) had one login and one guess; a few more
	// guesses and even his right password waits.
	var code int
	var retry string
	for i := 0; i < 10 && code != http.StatusTooManyRequests; i++ {
		code, _, retry = login("ed", "guess "+strconv.Itoa(i))
	}
	if code != http.StatusTooManyRequests {
		t.Fatalf("after 10 guesses: got %d, want 429", code)
	}
	if n, err := strconv.Atoi(retry); err != nil || n < 1 || n > 60 {
		t.Errorf("got Retry-After %q, want 1..60 seconds", retry)
	}
	if code, _, _ := login("ed", testPassword); code != http.StatusTooManyRequests {
		t.Errorf("right password while limited: got %d, want 429", code)
	}
}

func TestTokenForTheCLIAndSetupState(t *testing.T) {
	h := newHarness(t)
	code, out := h.do("", "GET", "/auth/setup", "", "")
	if code != 200 || !strings.Contains(string(out), `"setupNeeded":false`) {
		t.Errorf("setup state after setup: got %d %s, want setupNeeded false", code, out)
	}
	if code, out := h.do(api.RoleAdmin, "POST", "/auth/setup", "application/json", `{"name":"mallory","password":"`+testPassword+`"}`); code != 409 {
		t.Errorf("second setup: got %d %s, want 409", code, out)
	}
	code, out = h.do("", "POST", "/auth/token", "application/json", `{"username":"ed","password":"`+testPassword+`","ttl":"1h"}`)
	if code != 201 {
		t.Fatalf("mint a token: got %d %s, want 201", code, out)
	}
	var tr TokenResponse
	json.Unmarshal(out, &tr)
	if tr.Role != api.RoleEditor || tr.ExpiresAt.IsZero() {
		t.Errorf("got %+v, want an editor token with an expiry", tr)
	}
	h.tokens["minted"] = tr.Token
	if code, _ := h.do("minted", "POST", APIPrefix+"/tunnels", "", fmt.Sprintf(tunnelJSON, "web", "web.example.com")); code != 201 {
		t.Errorf("create a tunnel with the minted token: got %d, want 201", code)
	}
	if code, _ := h.do("minted", "GET", "/auth/users", "", ""); code != 403 {
		t.Errorf("list users with an editor token: got %d, want 403", code)
	}
	// Users are served without their password hash.
	_, out = h.do(api.RoleAdmin, "GET", "/auth/users", "", "")
	if strings.Contains(string(out), "argon2") || strings.Contains(string(out), "asswordHash") {
		t.Errorf("got users %s, want no password hash", out)
	}
	// A disabled user's session stops working at once.
	if code, out := h.do(api.RoleAdmin, "PATCH", "/auth/users/vic", "application/json", `{"disabled":true}`); code != 200 {
		t.Fatalf("disable vic: got %d %s", code, out)
	}
	if code, _ := h.doSession(api.RoleViewer, "GET", APIPrefix+"/tunnels", "", ""); code != 401 {
		t.Errorf("disabled user's session: got %d, want 401", code)
	}
}

func TestChangesAreAudited(t *testing.T) {
	h := newHarness(t)
	tunnel := fmt.Sprintf(tunnelJSON, "web", "web.example.com")
	if code, out := h.do(api.RoleEditor, "POST", APIPrefix+"/tunnels", "application/json", tunnel); code != 201 {
		t.Fatalf("create: got %d %s", code, out)
	}
	if code, _ := h.doSession(api.RoleViewer, "DELETE", APIPrefix+"/tunnels/web", "", ""); code != 403 {
		t.Fatalf("delete as viewer: got %d, want 403", code)
	}
	h.do(api.RoleViewer, "GET", APIPrefix+"/tunnels", "", "")
	code, out := h.do(api.RoleAdmin, "GET", "/auth/audit?limit=1000", "", "")
	if code != 200 {
		t.Fatalf("audit: got %d %s", code, out)
	}
	var list struct {
		Items []struct {
			User, Role, Method, Path, Addr string
			Status                         int
		} `json:"items"`
	}
	json.Unmarshal(out, &list)
	type key struct {
		user, method, path string
		status             int
	}
	got := map[key]bool{}
	for _, e := range list.Items {
		got[key{e.User, e.Method, e.Path, e.Status}] = true
		if e.Method == "GET" {
			t.Errorf("got a read in the audit log: %+v", e)
		}
		if e.Addr != "127.0.0.1" {
			t.Errorf("got address %q, want 127.0.0.1", e.Addr)
		}
	}
	for _, want := range []key{
		{"bootstrap", "POST", "/auth/setup", 201},
		{"t-editor", "POST", APIPrefix + "/tunnels", 201},
		{"vic", "DELETE", APIPrefix + "/tunnels/web", 403},
		{"alice", "POST", "/auth/login", 200},
	} {
		if !got[want] {
			t.Errorf("got no audit entry %+v in %+v", want, list.Items)
		}
	}
	// Newest first.
	if n := len(list.Items); n < 2 || list.Items[0].Path != APIPrefix+"/tunnels/web" {
		t.Errorf("got first entry %+v, want the latest change (the refused delete)", list.Items[0])
	}
}

func TestRegistrationSettingsAndInvites(t *testing.T) {
	h := newHarness(t)
	if code, out := h.doString(api.RoleAdmin, "GET", "/auth/settings", "", ""); code != 200 || !strings.Contains(out, `"openRegistration":false`) {
		t.Errorf("default settings: got %d %s, want registration closed", code, out)
	}
	if code, out := h.doString(api.RoleAdmin, "PUT", "/auth/settings", "application/json", `{}`); code != 422 || !strings.Contains(out, "openRegistration") {
		t.Errorf("settings without the field: got %d %s, want 422 naming openRegistration", code, out)
	}
	if code, out := h.doString(api.RoleAdmin, "PUT", "/auth/settings", "application/json", `{"openRegistration":true}`); code != 200 || !strings.Contains(out, `"openRegistration":true`) {
		t.Errorf("open registration: got %d %s", code, out)
	}
	if code, out := h.doString(api.RoleAdmin, "POST", "/auth/invites", "application/json", `{"role":"editor","ttl":"forever"}`); code != 422 || !strings.Contains(out, "ttl") {
		t.Errorf("invite with a bad ttl: got %d %s, want 422 naming ttl", code, out)
	}
	if code, out := h.doString(api.RoleAdmin, "POST", "/auth/invites", "application/json", `{"role":"root"}`); code != 422 || !strings.Contains(out, "role") {
		t.Errorf("invite with a bad role: got %d %s, want 422 naming role", code, out)
	}
	code, out := h.doString(api.RoleAdmin, "POST", "/auth/invites", "application/json", `{"role":"editor","ttl":"72h"}`)
	var inv InviteResponse
	if err := json.Unmarshal([]byte(out), &inv); code != 201 || err != nil || !strings.HasPrefix(inv.Code, accounts.InvitePrefix+inv.ID+".") ||
		!strings.HasPrefix(inv.SignupPath, "/ui/signup?invite=kki_") || inv.Role != api.RoleEditor {
		t.Fatalf("make an invite: got %d %s", code, out)
	}
	if code, out := h.doString(api.RoleAdmin, "GET", "/auth/invites", "", ""); code != 200 || !strings.Contains(out, inv.ID) || strings.Contains(out, inv.Code) {
		t.Errorf("list invites: got %d %s, want the invite without its code", code, out)
	}
	if code, _ := h.doString(api.RoleAdmin, "DELETE", "/auth/invites/"+inv.ID, "", ""); code != 204 {
		t.Errorf("revoke the invite: got %d, want 204", code)
	}
	if code, _ := h.doString(api.RoleAdmin, "DELETE", "/auth/invites/"+inv.ID, "", ""); code != 404 {
		t.Errorf("revoke it again: got %d, want 404", code)
	}
}

func (h *harness) doString(role api.Role, method, path, ctype, body string) (int, string) {
	h.t.Helper()
	code, out := h.do(role, method, path, ctype, body)
	return code, string(out)
}
