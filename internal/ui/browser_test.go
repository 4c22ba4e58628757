package ui

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/browsertest"
	"github.com/kakuremichi/kakuremichi/store"
)

// TestBrowserFirstRunAndTunnelLifecycle drives a real chromium through
// the first run (setup with the bootstrap token), login, creating a
// tunnel (with a validation error first), watching its status turn Ready
// without a reload, disabling and deleting it. The tunnel's status is
// written to the store here, as Control's controllers would; the
// end-to-end run with a real agent and gateway is not part of this test.
func TestBrowserFirstRunAndTunnelLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	h := newHarness(t)
	// The browser must reach the server as 127.0.0.1, where it treats
	// plain HTTP as a secure context and keeps the __Host- cookie.
	base := strings.Replace(h.url, "localhost", "127.0.0.1", 1)
	br := browsertest.Start(t, "ui", 90*time.Second)
	ctx, shot, run := br.Context(), br.Shot, br.Run
	location := func() string {
		t.Helper()
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	run("open the UI: first run goes to setup",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		shot("01-setup"))
	loc := location()
	if !strings.HasSuffix(loc, "/ui/setup") {
		t.Fatalf("got %s, want the setup page", loc)
	}
	run("set up the admin account",
		chromedp.SendKeys(chromedp.CSS(`#token`), h.bootstrap),
		chromedp.SendKeys(chromedp.CSS(`#name`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`#email`), "alice@example.com"),
		chromedp.SendKeys(chromedp.CSS(`#password`), password),
		chromedp.SendKeys(chromedp.CSS(`#password2`), password),
		chromedp.Submit(chromedp.CSS(`#password2`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
		shot("02-login"))
	run("log in",
		chromedp.SendKeys(chromedp.CSS(`#password`), password),
		chromedp.Submit(chromedp.CSS(`#password`)),
		chromedp.WaitVisible(chromedp.CSS(`.tiles`)),
		shot("03-dashboard"))
	loc = location()
	if !strings.HasSuffix(loc, "/ui/") {
		t.Fatalf("after login: got %s, want the dashboard (the browser must keep the %s cookie)", loc, "__Host-kkm_session")
	}
	run("add an agent: its key and the commands to start it",
		chromedp.Navigate(base+"/ui/agents"),
		chromedp.WaitVisible(chromedp.CSS(`a.button.primary`)),
		shot("04-agents-empty"),
		chromedp.Click(chromedp.CSS(`a.button.primary`)),
		chromedp.WaitVisible(chromedp.CSS(`#name`)),
		chromedp.SendKeys(chromedp.CSS(`#name`), "home"),
		chromedp.Submit(chromedp.CSS(`#name`)),
		chromedp.WaitVisible(chromedp.CSS(`#cmd-docker`)),
		shot("05-agent-key"))
	cmd, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#cmd-docker`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cmd, "-e CONTROL_URL="+base) || !strings.Contains(cmd, "-e API_KEY="+api.APIKeyPrefix+"home.") {
		t.Errorf("got docker command %q, want CONTROL_URL and the new API_KEY in it", cmd)
	}
	run("a form with a bad hostname shows the error next to the field",
		chromedp.Navigate(base+"/ui/tunnels"),
		chromedp.WaitVisible(chromedp.CSS(`a.button.primary`)),
		chromedp.Click(chromedp.CSS(`a.button.primary`)),
		chromedp.WaitVisible(chromedp.CSS(`#hostname`)),
		chromedp.SendKeys(chromedp.CSS(`#name`), "web"),
		chromedp.SendKeys(chromedp.CSS(`#hostname`), "not a hostname"),
		chromedp.SendKeys(chromedp.CSS(`#agent`), "home"),
		chromedp.SetValue(chromedp.CSS(`#target`), "http://app:3000"),
		chromedp.Submit(chromedp.CSS(`#hostname`)),
		chromedp.WaitVisible(chromedp.CSS(`#hostname-err`)),
		shot("06-tunnel-form-error"))
	run("fix it and create the tunnel",
		chromedp.SetValue(chromedp.CSS(`#hostname`), "web.example.com"),
		chromedp.Submit(chromedp.CSS(`#hostname`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="web"] .state.pending`)),
		shot("07-tunnel-pending"))

	// Control marks the tunnel Ready; the open page must follow without
	// a reload. A marker on the window would be lost by a reload.
	var obj api.Object
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.kkmNoReload = true`)); err != nil {
		t.Fatal(err)
	}
	obj, err = h.st.Get(context.Background(), "Tunnel", "web")
	if err != nil {
		t.Fatal(err)
	}
	tun := obj.(*api.Tunnel)
	api.SetCondition(&tun.Status.Conditions, api.Condition{Type: api.ConditionReady, Status: api.ConditionTrue, Reason: api.ReasonReady}, time.Now())
	if _, err := h.st.UpdateStatus(context.Background(), tun, store.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	run("the row turns ready live",
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="web"] .state.ready`)),
		shot("08-tunnel-ready"))
	same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.kkmNoReload === true`))
	if err != nil {
		t.Fatal(err)
	}
	if !same {
		t.Errorf("the page was reloaded, want the row updated in place")
	}
	run("disable it",
		chromedp.Click(chromedp.CSS(`tr[data-name="web"] td.actions button`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="web"] .state.disabled`)),
		shot("09-tunnel-disabled"))
	run("delete it after confirming",
		chromedp.Click(chromedp.CSS(`tr[data-name="web"] a.danger`)),
		chromedp.WaitVisible(chromedp.CSS(`button.danger`)),
		shot("10-delete-confirm"),
		chromedp.Click(chromedp.CSS(`button.danger`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
		shot("11-deleted"))
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('tr[data-name="web"]').length`))
	if err != nil {
		t.Fatal(err)
	}
	if rows != 0 {
		t.Errorf("after delete: got %d rows for web, want none", rows)
	}
	if _, err := h.st.Get(context.Background(), "Tunnel", "web"); err == nil {
		t.Errorf("after delete: the tunnel is still stored")
	}
	run("users page",
		chromedp.Navigate(base+"/ui/users"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="alice"]`)),
		shot("12-users"))
	run("a user's page",
		chromedp.Click(chromedp.CSS(`tr[data-name="alice"] a`)),
		chromedp.WaitVisible(chromedp.CSS(`.facts`)),
		shot("12b-user-self"))

	run("create an API token: its secret once, with a copy button",
		chromedp.Navigate(base+"/ui/tokens"),
		chromedp.WaitVisible(chromedp.CSS(`#name`)),
		chromedp.SendKeys(chromedp.CSS(`#name`), "ci-deploy"),
		chromedp.SetValue(chromedp.CSS(`#role`), "editor"),
		chromedp.SendKeys(chromedp.CSS(`#description`), "deploys from CI"),
		chromedp.Submit(chromedp.CSS(`#name`)),
		chromedp.WaitVisible(chromedp.CSS(`#token-secret`)),
		chromedp.Click(chromedp.CSS(`button.copy`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="ci-deploy"]`)),
		shot("13-token-created"))
	secret, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#token-secret`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, api.TokenPrefix+"ci-deploy.") {
		t.Errorf("got token secret %q, want kkm_ci-deploy.…", secret)
	}
	run("revoke it after confirming",
		chromedp.Click(chromedp.CSS(`tr[data-name="ci-deploy"] a.danger`)),
		chromedp.WaitVisible(chromedp.CSS(`button.danger`)),
		shot("14-token-revoke"),
		chromedp.Click(chromedp.CSS(`button.danger`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)))

	// Certificates, and the dashboard following a failure live.
	now := time.Now()
	h.certificate("web", api.CertificateIssued, now.Add(60*24*time.Hour), "", "")
	h.certificate("shop", api.CertificateIssued, now.Add(6*24*time.Hour), "", "")
	run("open the dashboard",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`#certs-attention li[data-name="shop"]`)))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.kkmNoReload = true`)); err != nil {
		t.Fatal(err)
	}
	h.certificate("api", api.CertificateFailed, time.Time{}, api.ReasonDNSNotPointingAtGateway, "the CA could not fetch the challenge from api.example.com")
	run("a failing certificate appears on the open dashboard",
		chromedp.WaitVisible(chromedp.CSS(`#certs-attention li[data-name="api"]`)),
		shot("15-dashboard-live"))
	if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.kkmNoReload === true`)); err != nil || !same {
		t.Errorf("dashboard: got a reloaded page (%v), want it updated in place", err)
	}
	run("certificates page",
		chromedp.Navigate(base+"/ui/certificates"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="api"]`)),
		shot("16-certificates"))

	run("settings: make an invite link",
		chromedp.Navigate(base+"/ui/settings"),
		chromedp.WaitVisible(chromedp.CSS(`#invite-role`)),
		chromedp.SetValue(chromedp.CSS(`#invite-role`), "editor"),
		chromedp.Submit(chromedp.CSS(`#days`)),
		chromedp.WaitVisible(chromedp.CSS(`#invite-link`)),
		shot("17-settings-invite"))
	link, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#invite-link`)))
	if err != nil {
		t.Fatal(err)
	}
	run("account page: change the password",
		chromedp.Navigate(base+"/ui/account"),
		chromedp.WaitVisible(chromedp.CSS(`#current`)),
		chromedp.SendKeys(chromedp.CSS(`#current`), "not my password"),
		chromedp.SendKeys(chromedp.CSS(`#password`), "alices new passphrase"),
		chromedp.SendKeys(chromedp.CSS(`#password2`), "alices new passphrase"),
		chromedp.Submit(chromedp.CSS(`#current`)),
		chromedp.WaitVisible(chromedp.CSS(`#current-err`)),
		shot("18-account-error"),
		chromedp.SendKeys(chromedp.CSS(`#current`), password),
		chromedp.SendKeys(chromedp.CSS(`#password`), "alices new passphrase"),
		chromedp.SendKeys(chromedp.CSS(`#password2`), "alices new passphrase"),
		chromedp.Submit(chromedp.CSS(`#current`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)))

	// A phone-sized view of some pages, to look at.
	run("phone view",
		chromedp.EmulateViewport(390, 844),
		chromedp.Navigate(base+"/ui/tunnels"),
		chromedp.WaitVisible(chromedp.CSS(`h1`)),
		shot("19-phone-tunnels"),
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`.tiles`)),
		shot("20-phone-dashboard"),
		chromedp.Navigate(base+"/ui/tokens"),
		chromedp.WaitVisible(chromedp.CSS(`#tokens`)),
		shot("21-phone-tokens"))

	run("log out and sign up with the invite",
		chromedp.Click(chromedp.CSS(`.who button`)),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.CSS(`#name`)),
		chromedp.SendKeys(chromedp.CSS(`#name`), "bob"),
		chromedp.SendKeys(chromedp.CSS(`#password`), "bobs passphrase"),
		chromedp.SendKeys(chromedp.CSS(`#password2`), "bobs passphrase"),
		shot("22-phone-signup"),
		chromedp.Submit(chromedp.CSS(`#name`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
		chromedp.SendKeys(chromedp.CSS(`#password`), "bobs passphrase"),
		chromedp.Submit(chromedp.CSS(`#password`)),
		chromedp.WaitVisible(chromedp.CSS(`.tiles`)))
	who, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`.who`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(who, "bob") || !strings.Contains(who, "editor") {
		t.Errorf("after signing up with an editor's invite: got %q in the header, want bob (editor)", who)
	}
	t.Logf("screenshots in %s", br.Dir())
}
