package ui

import (
	"bufio"
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/kakuremichi/kakuremichi/internal/apiserver"
	"github.com/kakuremichi/kakuremichi/internal/credential"
	"github.com/kakuremichi/kakuremichi/store"
)

// streamEnded, given to the function events returns, waits for the
// stream to end.
const streamEnded = "\x00the stream ends"

// events opens role's event stream at path and returns a function that
// waits for an event whose data contains want, and returns that data.
func (h *harness) events(role api.Role, path string) func(want string) string {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", h.url+path, nil)
	req.AddCookie(&http.Cookie{Name: apiserver.SessionCookie, Value: h.sessions[role][0]})
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		h.t.Fatalf("GET %s: got %d %q, want 200 text/event-stream", path, resp.StatusCode, ct)
	}
	data := make(chan string, 64)
	go func() {
		defer close(data)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				data <- d
			}
		}
	}()
	h.t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		for range data {
		}
	})
	return func(want string) string {
		h.t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case d, ok := <-data:
				if !ok {
					if want == streamEnded {
						return ""
					}
					h.t.Fatalf("%s: the stream ended, want an event with %s", path, want)
				}
				if strings.Contains(d, want) {
					return d
				}
			case <-deadline:
				h.t.Fatalf("%s: got no event with %s within 10 s", path, want)
			}
		}
	}
}

func TestTokensPage(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	ctx := context.Background()
	for _, tc := range []struct {
		form  url.Values
		field string
	}{
		{url.Values{"name": {"Bad Name"}, "role": {"viewer"}, "expires": {"30d"}}, "name"},
		{url.Values{"name": {"ci"}, "role": {"agent"}, "expires": {"30d"}}, "role"},
		{url.Values{"name": {"ci"}, "role": {"root"}, "expires": {"30d"}}, "role"},
		{url.Values{"name": {"ci"}, "role": {"viewer"}, "expires": {"forever"}}, "expires"},
	} {
		resp, body := h.send(api.RoleAdmin, "POST", "/ui/tokens", tc.form, nil)
		if resp.StatusCode != 422 || !strings.Contains(body, `id="`+tc.field+`-err"`) {
			t.Errorf("create token %v: got %d, want 422 with the error next to %s", tc.form, resp.StatusCode, tc.field)
		}
	}
	resp, body := h.send(api.RoleAdmin, "POST", "/ui/tokens", url.Values{"name": {"ci"}, "role": {"editor"}, "expires": {"30d"},
		"description": {"deploys from CI"}}, nil)
	if resp.StatusCode != 201 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create token: got %d, Cache-Control %q; want 201 and no-store", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	m := regexp.MustCompile(`<code id="token-secret" class="secret">([^<]+)</code>`).FindStringSubmatch(body)
	if m == nil || !strings.Contains(body, `data-copy="#token-secret"`) {
		t.Fatalf("create token: got no secret with a copy button on the page")
	}
	name, secret, ok := api.ParseToken(m[1])
	obj, err := h.st.Get(ctx, "Token", "ci")
	if err != nil {
		t.Fatal(err)
	}
	tok := obj.(*api.Token)
	if !ok || name != "ci" || !credential.Matches(tok.Spec.SecretHash, secret) {
		t.Errorf("the secret shown does not match the stored hash")
	}
	if tok.Spec.Role != api.RoleEditor || tok.Spec.ExpiresAt == nil || time.Until(*tok.Spec.ExpiresAt) < 29*24*time.Hour ||
		tok.Metadata.Annotations[CreatedByAnnotation] != "alice" {
		t.Errorf("got token %+v %v, want an editor token of alice expiring in 30 days", tok.Spec, tok.Metadata.Annotations)
	}
	// The token works against the API with its role.
	req, _ := http.NewRequest("GET", h.url+apiserver.APIPrefix+"/tunnels", nil)
	req.Header.Set("Authorization", "Bearer "+m[1])
	if r, err := client.Do(req); err != nil || r.StatusCode != 200 {
		t.Errorf("the new token against the API: got %v %v, want 200", r.StatusCode, err)
	}
	// A node credential is listed apart, marked, and never a secret.
	if _, err := h.st.Create(ctx, &api.Token{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Token"},
		Metadata: api.ObjectMeta{Name: "node-home"}, Spec: api.TokenSpec{Role: api.RoleAgent, Node: "home", SecretHash: credential.Hash("x")}},
		store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, body = h.send(api.RoleAdmin, "GET", "/ui/tokens", nil, nil)
	for _, want := range []string{`data-name="ci"`, "deploys from CI", "alice", `data-name="bootstrap"`, "Control, on first start",
		`id="node-tokens"`, "node credential", "agent home"} {
		if !strings.Contains(body, want) {
			t.Errorf("tokens page: got no %q", want)
		}
	}
	if strings.Contains(body, secret) || strings.Contains(body, tok.Spec.SecretHash) || strings.Contains(body, `id="token-secret"`) {
		t.Errorf("tokens page: got a secret or a hash on the list, want neither")
	}
	_, body = h.send(api.RoleAdmin, "GET", "/ui/tokens/ci/revoke", nil, nil)
	if !strings.Contains(body, "Revoke the token <strong>ci</strong>") {
		t.Errorf("revoke: got no confirmation page")
	}
	if resp, _ := h.send(api.RoleAdmin, "POST", "/ui/tokens/ci/revoke", nil, nil); resp.StatusCode != 303 {
		t.Errorf("revoke: got %d, want 303", resp.StatusCode)
	}
	if _, err := h.st.Get(ctx, "Token", "ci"); err == nil {
		t.Errorf("after revoke: the token is still stored")
	}
	if _, body := h.send(api.RoleEditor, "GET", "/ui/agents", nil, nil); strings.Contains(body, `href="/ui/tokens"`) {
		t.Errorf("an editor's navigation: got a Tokens link, want it hidden (tokens are admin-only, as in the API)")
	}
}

func (h *harness) certificate(name, state string, notAfter time.Time, reason, message string) {
	h.t.Helper()
	ctx := context.Background()
	created, err := h.st.Create(ctx, &api.Certificate{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Certificate"},
		Metadata: api.ObjectMeta{Name: name}, Spec: api.CertificateSpec{Hostname: name + ".example.com"}}, store.WriteOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	c := created.(*api.Certificate)
	c.Status.State = state
	if !notAfter.IsZero() {
		c.Status.NotAfter = &notAfter
	}
	cond := api.Condition{Type: api.ConditionReady, Status: api.ConditionTrue, Reason: api.ReasonIssued}
	if reason != "" {
		cond = api.Condition{Type: api.ConditionReady, Status: api.ConditionFalse, Reason: reason, Message: message}
		c.Status.Failures = 3
	}
	api.SetCondition(&c.Status.Conditions, cond, time.Now())
	if _, err := h.st.UpdateStatus(ctx, c, store.WriteOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func TestCertificatesPageAndDashboardAttention(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	now := time.Now()
	h.certificate("healthy", api.CertificateIssued, now.Add(60*24*time.Hour), "", "")
	h.certificate("soon", api.CertificateIssued, now.Add(5*24*time.Hour), "", "")
	h.certificate("broken", api.CertificateFailed, time.Time{}, api.ReasonCAUnreachable, "dial tcp: connection refused")
	_, body := h.send(api.RoleViewer, "GET", "/ui/certificates", nil, nil)
	for _, want := range []string{`data-name="healthy"`, `data-name="soon" id="cert-soon" class="attention"`, "in 5 days",
		`<span class="state failed">Failed</span>`, "CAUnreachable", "dial tcp: connection refused", "3 failed attempts"} {
		if !strings.Contains(body, want) {
			t.Errorf("certificates page: got no %q", want)
		}
	}
	if strings.Contains(body, `id="cert-healthy" class="attention"`) {
		t.Errorf("certificates page: got the healthy certificate marked")
	}
	_, body = h.send(api.RoleViewer, "GET", "/ui/", nil, nil)
	for _, want := range []string{`<span class="big">2</span> certificates issued`, "2 need attention", `href="/ui/certificates#cert-soon"`,
		`href="/ui/certificates#cert-broken"`, "CAUnreachable"} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard: got no %q", want)
		}
	}
	if strings.Contains(body, "cert-healthy") {
		t.Errorf("dashboard: got the healthy certificate listed as needing attention")
	}
	if resp, body := h.send(api.RoleViewer, "GET", "/ui/yaml/certificates/broken", nil, nil); resp.StatusCode != 200 || !strings.Contains(body, "kind: Certificate") {
		t.Errorf("certificate as YAML: got %d", resp.StatusCode)
	}
}

func TestSignUpAndInvites(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	ctx := context.Background()
	form := func(invite, name string) url.Values {
		return url.Values{"invite": {invite}, "name": {name}, "password": {password}, "password2": {password}}
	}
	// Invite-only by default: no sign-up without an invite.
	resp, body := h.send("", "GET", "/ui/signup", nil, nil)
	if resp.StatusCode != 403 || !strings.Contains(body, "by invite only") || strings.Contains(body, `id="password"`) {
		t.Errorf("sign-up page while closed: got %d, want 403 saying invite only, without the form", resp.StatusCode)
	}
	if resp, _ := h.send("", "POST", "/ui/signup", form("", "walkin"), nil); resp.StatusCode != 403 {
		t.Errorf("sign-up while closed: got %d, want 403", resp.StatusCode)
	}
	if _, body := h.send("", "GET", "/ui/login", nil, nil); strings.Contains(body, `href="/ui/signup"`) {
		t.Errorf("login page while closed: got a sign-up link")
	}
	// An admin makes an invite link.
	resp, body = h.send(api.RoleAdmin, "POST", "/ui/settings/invites", url.Values{"role": {"editor"}, "days": {"99"}}, nil)
	if resp.StatusCode != 422 || !strings.Contains(body, `id="days-err"`) {
		t.Errorf("invite for 99 days: got %d, want 422 with the error next to the field", resp.StatusCode)
	}
	resp, body = h.send(api.RoleAdmin, "POST", "/ui/settings/invites", url.Values{"role": {"editor"}, "days": {"3"}}, nil)
	m := regexp.MustCompile(`<code id="invite-link" class="secret">([^<]+)</code>`).FindStringSubmatch(body)
	if resp.StatusCode != 201 || m == nil {
		t.Fatalf("make an invite: got %d, want 201 with the link", resp.StatusCode)
	}
	link, err := url.Parse(html.UnescapeString(m[1]))
	if err != nil || !strings.HasPrefix(link.String(), h.url+"/ui/signup?invite=kki_") {
		t.Fatalf("got link %q, want %s/ui/signup?invite=kki_...", m[1], h.url)
	}
	code := link.Query().Get("invite")
	_, body = h.send(api.RoleAdmin, "GET", "/ui/settings", nil, nil)
	if !strings.Contains(body, `id="invites"`) || strings.Contains(body, code) {
		t.Errorf("settings page: got no invite listed, or its code shown again")
	}
	resp, body = h.send("", "GET", "/ui/signup?invite="+url.QueryEscape(code), nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "alice invited you as <strong>editor</strong>") {
		t.Errorf("sign-up page with the invite: got %d, want the form naming the role", resp.StatusCode)
	}
	resp, body = h.send("", "POST", "/ui/signup", url.Values{"invite": {code}, "name": {"Bad Name"}, "password": {"short"}, "password2": {"short"}}, nil)
	if resp.StatusCode != 422 || !strings.Contains(body, `id="name-err"`) || !strings.Contains(body, `id="password-err"`) {
		t.Errorf("invalid sign-up: got %d, want 422 with errors next to name and password", resp.StatusCode)
	}
	if resp, _ = h.send("", "POST", "/ui/signup", form(code, "newbie"), map[string]string{"Sec-Fetch-Site": "cross-site"}); resp.StatusCode != 403 {
		t.Errorf("cross-site sign-up: got %d, want 403", resp.StatusCode)
	}
	if resp, _ = h.send("", "POST", "/ui/signup", form(code, "newbie"), nil); resp.StatusCode != 201 {
		t.Fatalf("sign-up with the invite: got %d, want 201", resp.StatusCode)
	}
	if u, err := h.acc.GetUser(ctx, "newbie"); err != nil || u.Role != api.RoleEditor {
		t.Errorf("got user %+v, %v; want an editor", u, err)
	}
	if resp, _ = h.send("", "POST", "/ui/signup", form(code, "second"), nil); resp.StatusCode != 403 {
		t.Errorf("the invite used again: got %d, want 403", resp.StatusCode)
	}
	// Opened, anyone may sign up as a viewer.
	if resp, _ = h.send(api.RoleAdmin, "POST", "/ui/settings/registration", url.Values{"registration": {"open"}}, nil); resp.StatusCode != 303 {
		t.Fatalf("open registration: got %d, want 303", resp.StatusCode)
	}
	if _, body := h.send("", "GET", "/ui/login", nil, nil); !strings.Contains(body, `href="/ui/signup"`) {
		t.Errorf("login page while open: got no sign-up link")
	}
	if resp, _ = h.send("", "POST", "/ui/signup", form("", "walkin"), nil); resp.StatusCode != 201 {
		t.Fatalf("open sign-up: got %d, want 201", resp.StatusCode)
	}
	if u, _ := h.acc.GetUser(ctx, "walkin"); u.Role != api.RoleViewer {
		t.Errorf("got %s for an open sign-up, want viewer", u.Role)
	}
	h.send(api.RoleAdmin, "POST", "/ui/settings/registration", url.Values{"registration": {"invite"}}, nil)
	if st, _ := h.acc.Settings(ctx); st.OpenRegistration || st.UpdatedBy != "alice" {
		t.Errorf("got settings %+v, want registration closed by alice", st)
	}
	_, body = h.send(api.RoleAdmin, "GET", "/ui/audit", nil, nil)
	for _, want := range []string{"registration open", "registration closed", "signed up as editor through an invite of alice",
		"newbie <small>(editor)</small>", "signed up as viewer through open registration"} {
		if !strings.Contains(body, want) {
			t.Errorf("audit page: got no %q", want)
		}
	}
}

func TestPasswordChanges(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	ctx := context.Background()
	other, _, err := h.acc.Login(ctx, "vic", password, "192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	const newPassword = "vics new passphrase"
	for _, tc := range []struct {
		form  url.Values
		field string
	}{
		{url.Values{"current": {"wrong guess!"}, "password": {newPassword}, "password2": {newPassword}}, "current"},
		{url.Values{"current": {password}, "password": {"short"}, "password2": {"short"}}, "password"},
		{url.Values{"current": {password}, "password": {newPassword}, "password2": {"something else"}}, "password2"},
	} {
		resp, body := h.send(api.RoleViewer, "POST", "/ui/account/password", tc.form, nil)
		if resp.StatusCode != 422 || !strings.Contains(body, `id="`+tc.field+`-err"`) {
			t.Errorf("change password, %s wrong: got %d, want 422 with the error next to the field", tc.field, resp.StatusCode)
		}
	}
	resp, body := h.send(api.RoleViewer, "POST", "/ui/account/password", url.Values{"current": {password}, "password": {newPassword}, "password2": {newPassword}}, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "Password changed") {
		t.Fatalf("change password: got %d, want 200", resp.StatusCode)
	}
	if resp, _ := h.send(api.RoleViewer, "GET", "/ui/account", nil, nil); resp.StatusCode != 200 {
		t.Errorf("the session that changed it: got %d, want it kept", resp.StatusCode)
	}
	if _, err := h.acc.Authenticate(ctx, other); err == nil {
		t.Errorf("vic's other session: still works, want it ended")
	}
	if _, _, err := h.acc.Login(ctx, "vic", newPassword, "192.0.2.8"); err != nil {
		t.Errorf("login with the new password: %v", err)
	}
	// An admin resets ed's password; ed's sessions end.
	resp, body = h.send(api.RoleAdmin, "POST", "/ui/users/ed/password", url.Values{"password": {"short"}, "password2": {"short"}}, nil)
	if resp.StatusCode != 422 || !strings.Contains(body, `id="password-err"`) {
		t.Errorf("reset to a short password: got %d, want 422 with the error next to the field", resp.StatusCode)
	}
	resp, _ = h.send(api.RoleAdmin, "POST", "/ui/users/ed/password", url.Values{"password": {"eds new passphrase"}, "password2": {"eds new passphrase"}}, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("reset ed's password: got %d, want 200", resp.StatusCode)
	}
	if resp, _ := h.send(api.RoleEditor, "GET", "/ui/tunnels", nil, nil); resp.StatusCode != 303 {
		t.Errorf("ed's session after the reset: got %d, want 303 to the login page", resp.StatusCode)
	}
	if resp, _ := h.send(api.RoleAdmin, "POST", "/ui/users/alice/password", url.Values{"password": {"x long enough"}, "password2": {"x long enough"}}, nil); resp.StatusCode != 400 {
		t.Errorf("an admin resetting their own password without the current one: got %d, want 400", resp.StatusCode)
	}
	_, body = h.send(api.RoleAdmin, "GET", "/ui/users/ed", nil, nil)
	if !strings.Contains(body, "Reset the password") || !strings.Contains(body, "Disable ed") {
		t.Errorf("user page: got no reset or disable form")
	}
}

func TestAgentsGatewaysAndDashboardUpdateLive(t *testing.T) {
	h := newHarness(t)
	h.setUp()
	ctx := context.Background()
	created, err := h.st.Create(ctx, &api.Agent{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Agent"},
		Metadata: api.ObjectMeta{Name: "home"}}, store.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	agents := h.events(api.RoleViewer, "/ui/agents/events")
	gateways := h.events(api.RoleEditor, "/ui/gateways/events")
	dash := h.events(api.RoleViewer, "/ui/events")
	// Each stream starts with the current state.
	agents(`"name":"home"`)
	dash(`\u003cspan class=\"big\"\u003e0\u003c/span\u003e agents online`)

	ag := created.(*api.Agent)
	seen := time.Now()
	ag.Status.LastHeartbeat, ag.Status.Version = &seen, "v9.9.9"
	api.SetCondition(&ag.Status.Conditions, api.Condition{Type: api.NodeConnected, Status: api.ConditionTrue, Reason: "Heartbeating"}, time.Now())
	if _, err := h.st.UpdateStatus(ctx, ag, store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	var row liveRow
	if err := json.Unmarshal([]byte(agents(`"online":true`)), &row); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(row.HTML, `<tr data-name="home">`) || !strings.Contains(row.HTML, `<span class="state ready">online</span>`) || !strings.Contains(row.HTML, "v9.9.9") {
		t.Errorf("agent row event: got %s, want the row's HTML showing online and the version", row.HTML)
	}
	dash(`\u003cspan class=\"big\"\u003e1\u003c/span\u003e agents online`)

	gwObj, err := h.st.Create(ctx, &api.Gateway{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Gateway"},
		Metadata: api.ObjectMeta{Name: "gw1"}}, store.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := gateways(`"name":"gw1"`)
	// The row is rendered for the stream's own session: an editor's has
	// the Disable button with that session's CSRF token.
	if !strings.Contains(d, "Disable") || !strings.Contains(d, h.sessions[api.RoleEditor][1]) {
		t.Errorf("gateway row event for an editor: got %s, want the Disable form with the session's CSRF token", d)
	}
	// The data path the gateway reports shows in its row.
	gwObj.(*api.Gateway).Status.DataPath = "tun"
	if _, err := h.st.UpdateStatus(ctx, gwObj, store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := gateways(`"dataPath":"tun"`); !strings.Contains(d, `\u003ctd class=\"wide-only\"\u003etun\u003c/td\u003e`) {
		t.Errorf("gateway row event after a data path report: got %s, want a cell saying tun", d)
	}
	// So does the count of a gateway whose status sums its agents up.
	obj, err := h.st.Get(ctx, "Gateway", "gw1")
	if err != nil {
		t.Fatal(err)
	}
	gw := api.Clone(obj.(*api.Gateway))
	gw.Status.Peers = &api.PeerCounts{Total: 10000, Connected: 9999, Answered: 9999}
	gw.Status.Agents = []api.NodePeerStatus{{Name: "home"}}
	if _, err := h.st.UpdateStatus(ctx, gw, store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := gateways(`"agents":10000`); !strings.Contains(d, `\u003ctd class=\"wide-only\"\u003e10000\u003c/td\u003e`) {
		t.Errorf("gateway row event after its agents were summed up: got %s, want a cell saying 10000", d)
	}
	// And an agent's, its gateways.
	obj, err = h.st.Get(ctx, "Agent", "home")
	if err != nil {
		t.Fatal(err)
	}
	ag = api.Clone(obj.(*api.Agent))
	ag.Status.Peers = &api.PeerCounts{Total: 1000, Connected: 999}
	ag.Status.Gateways = []api.NodePeerStatus{{Name: "gw-down"}}
	if _, err := h.st.UpdateStatus(ctx, ag, store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := agents(`"gatewayCounts"`); !strings.Contains(d, `999 of 1000 connected`) || strings.Contains(d, "gw-down") {
		t.Errorf("agent row event after its gateways were summed up: got %s, want 999 of 1000 connected and no gateway named", d)
	}
	dash(`1 offline`)
	if _, err := h.st.Delete(ctx, "Agent", "home", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	agents(`"deleted":true`)

	// A session that ends (here: the user is disabled) ends its streams
	// at the next heartbeat.
	disabled := true
	if _, err := h.acc.UpdateUser(ctx, "vic", accounts.UserUpdate{Disabled: &disabled}); err != nil {
		t.Fatal(err)
	}
	agents(streamEnded)
}
