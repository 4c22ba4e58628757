// Package ui is Control's web interface: server-rendered pages (Go
// html/template, a little plain JavaScript and CSS, embedded in the
// binary) for the first-run setup, logging in and signing up, tunnels,
// agents, gateways, certificates, API keys, tokens, users, settings and
// the audit log, with lists and the dashboard updated live over
// server-sent events fed by the store's watch (live.go). Every page checks
// the session and the role on the server; hiding a button is a courtesy,
// never the protection. It imports api, store, internal/accounts,
// internal/audit and internal/apiserver (for the session cookie and CSRF
// checks) and echo.
package ui

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/kakuremichi/kakuremichi/internal/apiserver"
	"github.com/kakuremichi/kakuremichi/internal/audit"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the UI is served.
const Prefix = "/ui"

// ManagedByAnnotation marks an object kept in a GitOps repository: the UI
// shows it and refuses to edit it, so a click does not fight the next sync.
const ManagedByAnnotation = "kakuremichi.io/managed-by"

// Config configures the UI.
type Config struct {
	// Store holds the objects shown and edited. Required.
	Store *store.Store
	// Accounts checks logins and sessions. Required.
	Accounts *accounts.Service
	// Logger receives failures; nil discards.
	Logger *slog.Logger
	// PublicURL is the address agents dial, shown in the commands of "Add
	// an agent"; "" uses the scheme and host the browser used.
	PublicURL string
	// AgentImage is the container image shown in the docker run line and
	// the compose snippet; "" shows only the command for the binary.
	AgentImage string
	// Audit, when set, is shown to admins on the audit page.
	Audit *audit.Log
	// Heartbeat is how often an idle event stream gets a comment, so
	// proxies keep it open; zero means 15 s.
	Heartbeat time.Duration
}

// UI serves the web pages.
type UI struct {
	st         *store.Store
	acc        *accounts.Service
	log        *slog.Logger
	heartbeat  time.Duration
	publicURL  string
	audit      *audit.Log
	agentImage string
	pages      map[string]*template.Template

	stopOnce sync.Once
	stopping chan struct{} // closed by Stop: event streams end
}

// New parses the templates and builds the UI.
func New(cfg Config) (*UI, error) {
	if cfg.Store == nil || cfg.Accounts == nil {
		return nil, errors.New("ui: a store and accounts are required")
	}
	u := &UI{st: cfg.Store, acc: cfg.Accounts, log: cfg.Logger, heartbeat: cfg.Heartbeat,
		publicURL: strings.TrimSuffix(cfg.PublicURL, "/"), agentImage: cfg.AgentImage, audit: cfg.Audit,
		pages: map[string]*template.Template{}, stopping: make(chan struct{})}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	if u.heartbeat == 0 {
		u.heartbeat = 15 * time.Second
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	funcs := template.FuncMap{"since": since, "until": until,
		"row": func(p page, r any) rowData { return rowData{P: p, Row: r} }}
	for _, n := range names {
		if n == "templates/layout.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, err
		}
		u.pages[strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")] = t
	}
	return u, nil
}

// Stop ends every open event stream, so a shutdown does not wait for
// them. Register it with http.Server.RegisterOnShutdown.
func (u *UI) Stop() { u.stopOnce.Do(func() { close(u.stopping) }) }

// Register adds the UI's routes to e.
func (u *UI) Register(e *echo.Echo) {
	e.GET("/", func(c echo.Context) error { return c.Redirect(http.StatusSeeOther, Prefix+"/") })
	static, _ := fs.Sub(staticFS, "static")
	e.GET(Prefix+"/static/*", echo.WrapHandler(http.StripPrefix(Prefix+"/static/", http.FileServer(http.FS(static)))))
	e.GET(Prefix+"/login", u.loginPage)
	e.POST(Prefix+"/login", u.login)
	e.GET(Prefix+"/setup", u.setupPage)
	e.POST(Prefix+"/setup", u.setup)
	e.GET(Prefix+"/signup", u.signupPage)
	e.POST(Prefix+"/signup", u.signup)
	viewer, editor := u.need(api.RoleViewer), u.need(api.RoleEditor)
	e.POST(Prefix+"/logout", u.logout, viewer)
	e.GET(Prefix+"/account", u.accountPage, viewer)
	e.POST(Prefix+"/account/password", u.changePassword, viewer)
	e.GET(Prefix+"/", u.dashboard, viewer)
	e.GET(Prefix+"/events", u.dashboardEvents, viewer)
	e.GET(Prefix+"/gateways", u.gateways, viewer)
	e.GET(Prefix+"/gateways/events", u.gatewayEvents, viewer)
	e.POST(Prefix+"/gateways/:name/enabled", u.setGatewayEnabled, editor)
	e.GET(Prefix+"/tunnels", u.tunnels, viewer)
	e.GET(Prefix+"/tunnels/events", u.tunnelEvents, viewer)
	e.GET(Prefix+"/tunnels/new", u.newTunnel, editor)
	e.POST(Prefix+"/tunnels", u.createTunnel, editor)
	e.GET(Prefix+"/tunnels/:name", u.tunnel, viewer)
	e.POST(Prefix+"/tunnels/:name", u.updateTunnel, editor)
	e.POST(Prefix+"/tunnels/:name/enabled", u.setEnabled, editor)
	e.GET(Prefix+"/tunnels/:name/delete", u.confirmDelete, editor)
	e.POST(Prefix+"/tunnels/:name/delete", u.deleteTunnel, editor)
	e.GET(Prefix+"/certificates", u.certificates, viewer)
	e.GET(Prefix+"/certificates/events", u.certificateEvents, viewer)
	e.GET(Prefix+"/agents", u.agents, viewer)
	e.GET(Prefix+"/agents/events", u.agentEvents, viewer)
	e.GET(Prefix+"/agents/new", u.addAgentPage, editor)
	e.POST(Prefix+"/agents/new", u.addAgent, editor)
	e.GET(Prefix+"/yaml/:plural/:name", u.objectYAML, viewer)
	// API keys enrol nodes: editors manage them, viewers do not see them,
	// as in the API.
	e.GET(Prefix+"/apikeys", u.apiKeys, editor)
	e.POST(Prefix+"/apikeys/:name/revoke", u.revokeAPIKey, editor)
	admin := u.need(api.RoleAdmin)
	// Tokens grant access: admins only, as in the API.
	e.GET(Prefix+"/tokens", u.tokens, admin)
	e.POST(Prefix+"/tokens", u.createToken, admin)
	e.GET(Prefix+"/tokens/:name/revoke", u.confirmRevokeToken, admin)
	e.POST(Prefix+"/tokens/:name/revoke", u.revokeToken, admin)
	e.GET(Prefix+"/users", u.users, admin)
	e.POST(Prefix+"/users", u.createUser, admin)
	e.GET(Prefix+"/users/:name", u.userPage, admin)
	e.POST(Prefix+"/users/:name/disabled", u.setUserDisabled, admin)
	e.POST(Prefix+"/users/:name/password", u.resetPassword, admin)
	e.GET(Prefix+"/settings", u.settingsPage, admin)
	e.POST(Prefix+"/settings/registration", u.setRegistration, admin)
	e.POST(Prefix+"/settings/invites", u.createInvite, admin)
	e.POST(Prefix+"/settings/invites/:id/revoke", u.revokeInvite, admin)
	if u.audit != nil {
		e.GET(Prefix+"/audit", u.auditPage, admin)
	}
}

const sessionCtx = "kakuremichi.ui.session"

func sessionOf(c echo.Context) accounts.Session {
	s, _ := c.Get(sessionCtx).(accounts.Session)
	return s
}

var roleRank = map[api.Role]int{api.RoleViewer: 1, api.RoleEditor: 2, api.RoleAdmin: 3}

// need admits a request with a live session of at least role; without a
// session it sends the browser to the login page and back; a state change
// must carry the session's CSRF token and come from our own pages.
func (u *UI) need(role api.Role) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			ck, err := r.Cookie(apiserver.SessionCookie)
			var sess accounts.Session
			if err == nil {
				sess, err = u.acc.Authenticate(r.Context(), ck.Value)
			}
			if err != nil {
				if !errors.Is(err, api.ErrUnauthorized) && !errors.Is(err, http.ErrNoCookie) {
					return u.fail(c, err)
				}
				next := r.URL.Path
				if r.Method != http.MethodGet {
					next = Prefix + "/"
				}
				return c.Redirect(http.StatusSeeOther, Prefix+"/login?next="+url.QueryEscape(next))
			}
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				if err := apiserver.CheckCSRF(c, sess); err != nil {
					return u.fail(c, err)
				}
			}
			c.Set(sessionCtx, sess)
			apiserver.SetActor(c, sess.User, sess.Role)
			if roleRank[sess.Role] < roleRank[role] {
				return u.fail(c, api.NewStatusError(api.ReasonForbidden, "your role, %s, may not do this; it needs %s", sess.Role, role))
			}
			return next(c)
		}
	}
}

// page is what every template gets.
type page struct {
	Title   string
	Nav     string
	Session accounts.Session
	CanEdit bool
	IsAdmin bool
	Flash   string
	Error   string
	Data    any
}

func (u *UI) render(c echo.Context, code int, name string, p page) error {
	t, ok := u.pages[name]
	if !ok {
		return api.NewStatusError(api.ReasonInternalError, "no template %q", name)
	}
	p = u.fill(c, p)
	var buf bytes.Buffer
	if err := t.Execute(&buf, p); err != nil {
		u.log.Error("render page", "page", name, "err", err)
		return api.NewStatusError(api.ReasonInternalError, "render %s: %v", name, err)
	}
	h := c.Response().Header()
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	return c.HTMLBlob(code, buf.Bytes())
}

// fill sets what every page knows of the session.
func (u *UI) fill(c echo.Context, p page) page {
	p.Session = sessionOf(c)
	p.CanEdit = roleRank[p.Session.Role] >= roleRank[api.RoleEditor]
	p.IsAdmin = p.Session.Role == api.RoleAdmin
	return p
}

// fail shows an error as a page with the API's status code.
func (u *UI) fail(c echo.Context, err error) error {
	st := api.StatusFromError(err)
	if st.Code >= 500 {
		u.log.Error("ui request failed", "path", c.Request().URL.Path, "err", err)
	}
	return u.render(c, st.Code, "error", page{Title: http.StatusText(st.Code), Error: st.Message})
}

// LocalPath reports whether next is a path on this server, safe to
// redirect to after login: "/x" but never "//host", "/\host" or a URL
// with a scheme, which browsers would take to another site.
func LocalPath(next string) bool {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return false
	}
	for _, r := range next {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return false
		}
	}
	p, err := url.Parse(next)
	return err == nil && p.Scheme == "" && p.Host == "" && p.User == nil
}

func since(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return d.String() + " ago"
	case d < time.Hour:
		return d.Round(time.Minute).String() + " ago"
	case d < 48*time.Hour:
		return d.Round(time.Hour).String() + " ago"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// until says how far off t is, for expiry dates: "in 3 days", "in 5h0m0s",
// or "expired".
func until(t time.Time) string {
	d := time.Until(t)
	switch {
	case d <= 0:
		return "expired"
	case d < time.Hour:
		return "in " + d.Round(time.Minute).String()
	case d < 48*time.Hour:
		return "in " + d.Round(time.Hour).String()
	}
	return fmt.Sprintf("in %d days", int(d.Hours()/24+0.5))
}

func (u *UI) auditPage(c echo.Context) error {
	entries, err := u.audit.List(c.Request().Context(), 200)
	if err != nil {
		return u.fail(c, err)
	}
	return u.render(c, http.StatusOK, "audit", page{Title: "Audit log", Nav: "audit", Data: entries})
}
