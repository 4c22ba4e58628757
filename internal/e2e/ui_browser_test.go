package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kakuremichi/kakuremichi/internal/browsertest"
)

// TestBrowserRunsTheSystem is issue 5's walk through the web UI with a
// real chromium and real processes: the first run with the bootstrap
// token, login, "Add an agent" (whose key then starts a real agent), a
// gateway and a demo app, a tunnel created in the UI that turns Ready on
// the open page without a reload, opened through the gateway, then
// disabled (503) and deleted (404) from the UI.
func TestBrowserRunsTheSystem(t *testing.T) {
	br := browsertest.Start(t, "e2e-ui", 3*time.Minute)
	c := newCluster(t)
	base := c.control.url()

	ctx, shot, run := br.Context(), br.Shot, br.Run
	const password = "a long passphrase"
	run("first run: set up the admin with the bootstrap token",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		chromedp.SendKeys(chromedp.CSS(`#token`), c.token),
		chromedp.SendKeys(chromedp.CSS(`#name`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`#password`), password),
		chromedp.SendKeys(chromedp.CSS(`#password2`), password),
		shot("01-setup"),
		chromedp.Submit(chromedp.CSS(`#password2`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)))
	run("log in",
		chromedp.SendKeys(chromedp.CSS(`#password`), password),
		chromedp.Submit(chromedp.CSS(`#password`)),
		chromedp.WaitVisible(chromedp.CSS(`.tiles`)),
		shot("02-dashboard"))
	run("add an agent",
		chromedp.Navigate(base+"/ui/agents/new"),
		chromedp.WaitVisible(chromedp.CSS(`#name`)),
		chromedp.SendKeys(chromedp.CSS(`#name`), "home"),
		chromedp.Submit(chromedp.CSS(`#name`)),
		chromedp.WaitVisible(chromedp.CSS(`#cmd-binary`)),
		shot("03-agent-key"))
	cmd, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#cmd-binary`)))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`CONTROL_URL=(\S+) API_KEY=(kka_home\.\S+)`).FindStringSubmatch(cmd)
	if m == nil || m[1] != base {
		t.Fatalf("got command %q, want CONTROL_URL=%s and the agent's API_KEY", cmd, base)
	}

	// The agents page is open before the agent exists; the agent then
	// appears on it, online, without a reload.
	run("open the agents page",
		chromedp.Navigate(base+"/ui/agents"),
		chromedp.WaitVisible(chromedp.CSS(`a.button.primary`)))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.kkmNoReload = true`)); err != nil {
		t.Fatal(err)
	}
	// The agent starts with the key the page showed, as a person would.
	state := filepath.Join(t.TempDir(), "state")
	c.agents["home"] = c.proc("agent-home", []string{"agent", "--name", "home", "--state-dir", state, "--control-url", m[1], "--shutdown-grace", "5s"},
		[]string{"API_KEY=" + m[2]}, "-")
	run("the agent comes online on the open page",
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="home"] .state.ready`)),
		shot("03b-agent-online-live"))
	if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.kkmNoReload === true`)); err != nil || !same {
		t.Errorf("agents page: got a reloaded page (%v), want the agent's row added in place", err)
	}
	run("open the dashboard",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`.tiles`)))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.kkmNoReload = true`)); err != nil {
		t.Fatal(err)
	}
	gw := c.addGateway("gw1")
	app := c.addApp("app")
	c.waitNodesReady(60 * time.Second)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector('a.tile[href="/ui/gateways"] .big').textContent === "1"`,
		chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the gateway online on the open dashboard: %v", err)
	}
	run("the dashboard counts the gateway", shot("03c-dashboard-live"))
	if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.kkmNoReload === true`)); err != nil || !same {
		t.Errorf("dashboard: got a reloaded page (%v), want the counts updated in place", err)
	}

	run("create a tunnel in the UI",
		chromedp.Navigate(base+"/ui/tunnels/new"),
		chromedp.WaitVisible(chromedp.CSS(`#hostname`)),
		chromedp.SendKeys(chromedp.CSS(`#name`), "web"),
		chromedp.SendKeys(chromedp.CSS(`#hostname`), "web.example.com"),
		chromedp.SetValue(chromedp.CSS(`#agent`), "home"),
		chromedp.SetValue(chromedp.CSS(`#target`), app),
		shot("04-tunnel-form"),
		chromedp.Submit(chromedp.CSS(`#hostname`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="web"]`)))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.kkmNoReload = true`)); err != nil {
		t.Fatal(err)
	}
	run("the tunnel turns ready on the open page",
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="web"] .state.ready`)),
		shot("05-tunnel-ready"))
	if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.kkmNoReload === true`)); err != nil || !same {
		t.Errorf("got a reloaded page (%v), want the row updated in place", err)
	}
	client := gatewayClient(gw.httpsAddr, 5*time.Second)
	waitServing(t, client, "https://web.example.com/", 200, "Hello from app", 30*time.Second)

	run("disable it",
		chromedp.Click(chromedp.CSS(`tr[data-name="web"] td.actions button`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="web"] .state.disabled`)),
		shot("06-tunnel-disabled"))
	waitServing(t, client, "https://web.example.com/", 503, "", 15*time.Second)
	run("delete it",
		chromedp.Click(chromedp.CSS(`tr[data-name="web"] a.danger`)),
		chromedp.WaitVisible(chromedp.CSS(`button.danger`)),
		chromedp.Click(chromedp.CSS(`button.danger`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
		shot("07-deleted"))
	waitServing(t, client, "https://web.example.com/", 404, "", 15*time.Second)
	run("agents and gateways pages",
		chromedp.Navigate(base+"/ui/agents"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="home"]`)),
		shot("08-agents"),
		chromedp.Navigate(base+"/ui/gateways"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="gw1"]`)),
		shot("09-gateways"),
		chromedp.Navigate(base+"/ui/apikeys"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="home"]`)),
		shot("10-apikeys"),
		chromedp.Navigate(base+"/ui/tokens"),
		chromedp.WaitVisible(chromedp.CSS(`#node-tokens`)),
		shot("11-tokens"),
		chromedp.Navigate(base+"/ui/certificates"),
		chromedp.WaitVisible(chromedp.CSS(`h1`)),
		shot("12-certificates"),
		chromedp.Navigate(base+"/ui/settings"),
		chromedp.WaitVisible(chromedp.CSS(`#invite-role`)),
		shot("13-settings"),
		chromedp.Navigate(base+"/ui/account"),
		chromedp.WaitVisible(chromedp.CSS(`#current`)),
		shot("14-account"),
		chromedp.Navigate(base+"/ui/audit"),
		chromedp.WaitVisible(chromedp.CSS(`#audit`)),
		shot("15-audit"))
	audit, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#audit`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"POST /ui/tunnels/web/delete", "POST /ui/agents/new", "alice"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit page: got no %q", want)
		}
	}
	t.Logf("screenshots in %s", br.Dir())
}
