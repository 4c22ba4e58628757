package apiserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/kakuremichi/kakuremichi/internal/audit"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

// Config configures a Server.
type Config struct {
	// Store holds every object. Required.
	Store *store.Store
	// Logger receives request errors; nil discards.
	Logger *slog.Logger
	// Version is reported by /version; "" reports "dev".
	Version string
	// Commit is reported by /version; may be empty.
	Commit string
	// Now returns the current time; nil uses time.Now. Tests set it.
	Now func() time.Time
	// BookmarkInterval is how often an idle watch gets a BOOKMARK event;
	// zero means 15 seconds.
	BookmarkInterval time.Duration
	// Accounts, when set, adds users, login sessions and the /auth routes;
	// nil serves bearer tokens only.
	Accounts *accounts.Service
	// Audit, when set, records every change (API, /auth and UI) and
	// serves GET /auth/audit to admins; nil records nothing.
	Audit *audit.Log
}

// Server is Control's REST API.
type Server struct {
	store    *store.Store
	log      *slog.Logger
	version  string
	commit   string
	now      func() time.Time
	bookmark time.Duration
	echo     *echo.Echo
	accounts *accounts.Service
	audit    *audit.Log

	stopOnce sync.Once
	stopping chan struct{} // closed when shutdown starts: watches end
}

// StopWatches ends every open watch, so a shutdown does not wait its whole
// grace period for streams that never go idle; ordinary requests finish.
// Register it with http.Server.RegisterOnShutdown.
func (s *Server) StopWatches() { s.stopOnce.Do(func() { close(s.stopping) }) }

// APIPrefix is the path under which every resource is served.
const APIPrefix = "/apis/" + api.APIVersion

// New builds the server and its routes.
func New(cfg Config) *Server {
	s := &Server{store: cfg.Store, log: cfg.Logger, version: cfg.Version, commit: cfg.Commit,
		now: cfg.Now, bookmark: cfg.BookmarkInterval, accounts: cfg.Accounts, audit: cfg.Audit, stopping: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.version == "" {
		s.version = "dev"
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.bookmark == 0 {
		s.bookmark = 15 * time.Second
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Use(s.recoverMiddleware)
	e.Use(s.auditMiddleware)

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)

	authed := e.Group("", s.authMiddleware)
	authed.GET("/version", s.versionInfo)
	authed.GET("/apis", s.discovery)
	authed.GET(APIPrefix, s.discovery)
	authed.GET(APIPrefix+"/:plural", s.list)
	authed.POST(APIPrefix+"/:plural", s.create)
	authed.GET(APIPrefix+"/:plural/:name", s.get)
	authed.PUT(APIPrefix+"/:plural/:name", s.update)
	authed.PATCH(APIPrefix+"/:plural/:name", s.patch)
	authed.DELETE(APIPrefix+"/:plural/:name", s.delete)
	authed.GET(APIPrefix+"/:plural/:name/status", s.get)
	authed.PUT(APIPrefix+"/:plural/:name/status", s.updateStatus)
	authed.PATCH(APIPrefix+"/:plural/:name/status", s.patchStatus)
	if s.accounts != nil {
		e.GET("/auth/setup", s.setupState)
		e.POST("/auth/login", s.login)
		e.POST("/auth/token", s.mintToken)
		authed.POST("/auth/setup", s.setup, requireRole(api.RoleAdmin))
		authed.POST("/auth/logout", s.logout)
		authed.GET("/auth/session", s.whoami)
		admin := authed.Group("/auth/users", requireRole(api.RoleAdmin))
		admin.GET("", s.listUsers)
		admin.POST("", s.createUser)
		admin.GET("/:name", s.getUser)
		admin.PATCH("/:name", s.updateUser)
		authed.GET("/auth/settings", s.getSettings, requireRole(api.RoleAdmin))
		authed.PUT("/auth/settings", s.putSettings, requireRole(api.RoleAdmin))
		invites := authed.Group("/auth/invites", requireRole(api.RoleAdmin))
		invites.GET("", s.listInvites)
		invites.POST("", s.createInvite)
		invites.DELETE("/:id", s.deleteInvite)
	}
	if s.audit != nil {
		authed.GET("/auth/audit", s.listAudit, requireRole(api.RoleAdmin))
	}
	s.echo = e
	return s
}

// Handler returns the HTTP handler serving the API.
func (s *Server) Handler() http.Handler { return s.echo }

// Echo returns the router, so Control can serve other endpoints (the
// node bridge) on the same listener.
func (s *Server) Echo() *echo.Echo { return s.echo }

// Routes lists every (method, path) the server answers, for tests that
// must cover each one.
func (s *Server) Routes() []*echo.Route { return s.echo.Routes() }

// NewHTTPServer wraps a handler in an http.Server with the timeouts every
// server of ours must have (quality.md 20). Watches lift the write
// deadline for themselves.
func NewHTTPServer(h http.Handler, tlsConfig *tls.Config, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// Serve serves h on ln until ctx is done, then shuts down gracefully,
// giving in-flight requests up to grace to finish.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		var err error
		if srv.TLSConfig != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(shutCtx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 3*time.Second)
	defer cancel()
	if err := s.store.Ready(ctx); err != nil {
		return api.NewStatusError(api.ReasonUnavailable, "the store is not ready: %v", err)
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) versionInfo(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"version": s.version, "commit": s.commit})
}

// Discovery describes one served resource.
type Discovery struct {
	Kind       string   `json:"kind"`
	Plural     string   `json:"name"`
	Singular   string   `json:"singularName"`
	ShortNames []string `json:"shortNames,omitempty"`
	Verbs      []string `json:"verbs"`
}

func (s *Server) discovery(c echo.Context) error {
	var out []Discovery
	for _, k := range api.Kinds() {
		out = append(out, Discovery{Kind: k.Kind, Plural: k.Plural, Singular: k.Singular, ShortNames: k.ShortNames,
			Verbs: []string{"create", "delete", "get", "list", "patch", "update", "watch"}})
	}
	return c.JSON(http.StatusOK, map[string]any{"groupVersion": api.APIVersion, "resources": out})
}

// handleError writes every error as an api.Status.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var st api.Status
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		msg := fmt.Sprint(he.Message)
		switch he.Code {
		case http.StatusNotFound:
			st = api.NewStatusError(api.ReasonNotFound, "no such route: %s %s", c.Request().Method, c.Request().URL.Path).Status
		case http.StatusMethodNotAllowed:
			st = api.NewStatusError(api.ReasonMethodNotAllowed, "%s is not allowed on %s", c.Request().Method, c.Request().URL.Path).Status
		case http.StatusRequestEntityTooLarge:
			st = api.NewStatusError(api.ReasonTooLarge, "the request body is larger than %d bytes", api.MaxObjectBytes).Status
		default:
			st = api.NewStatusError(api.ReasonBadRequest, "%s", msg).Status
			st.Code = he.Code
		}
	default:
		st = api.StatusFromError(err)
	}
	if st.Code >= 500 {
		s.log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(st.Code)
		return
	}
	_ = c.JSON(st.Code, st)
}

func (s *Server) recoverMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("panic serving request", "path", c.Request().URL.Path, "panic", fmt.Sprint(r))
				err = api.NewStatusError(api.ReasonInternalError, "internal error")
			}
		}()
		return next(c)
	}
}

// readBody reads at most api.MaxObjectBytes of the request body.
func readBody(c echo.Context) ([]byte, error) {
	r := io.LimitReader(c.Request().Body, api.MaxObjectBytes+1)
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, api.NewStatusError(api.ReasonBadRequest, "read request body: %v", err)
	}
	if len(data) > api.MaxObjectBytes {
		return nil, api.NewStatusError(api.ReasonTooLarge, "the request body is larger than %d bytes", api.MaxObjectBytes)
	}
	return data, nil
}

func writeJSON(c echo.Context, code int, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Blob(code, echo.MIMEApplicationJSON, data)
}
