package apiserver

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/kakuremichi/kakuremichi/internal/credential"
	"github.com/labstack/echo/v4"
)

// SessionCookie names the login session cookie. The __Host- prefix makes
// browsers insist on Secure, Path=/ and no Domain, so a sibling subdomain
// cannot plant or overwrite it. Browsers treat http://localhost and
// http://127.0.0.1 as secure, so the cookie works there too; anywhere else
// the UI must be served over HTTPS.
const SessionCookie = "__Host-kkm_session"

// CSRFHeader carries a session's CSRF token on state-changing requests
// made with the session cookie; HTML forms send it as the field CSRFField.
const (
	CSRFHeader = "X-CSRF-Token"
	CSRFField  = "csrf"
)

const sessionKeyCtx = "kakuremichi.session"

func sessionOf(c echo.Context) (accounts.Session, bool) {
	s, ok := c.Get(sessionKeyCtx).(accounts.Session)
	return s, ok
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// ClientAddr is the address login attempts are counted against: the TCP
// peer, never a header a client could set (quality.md 19).
func ClientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// SameOrigin refuses a browser request that another site caused: a
// Sec-Fetch-Site other than same-origin (or none, typed by the user), or
// an Origin header that is not this server's own. Requests without either
// header come from programs, not from a browser tricked by a page.
func SameOrigin(r *http.Request) error {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return api.NewStatusError(api.ReasonForbidden, "refusing a %s request from another site (Sec-Fetch-Site: %s)", r.Method, site)
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || o == "null" || !strings.EqualFold(u.Host, r.Host) {
			return api.NewStatusError(api.ReasonForbidden, "refusing a %s request from origin %q", r.Method, o)
		}
	}
	return nil
}

// CheckCSRF checks a state-changing request made with a session: it must
// come from our own pages (SameOrigin) and carry the session's CSRF token
// in the CSRFHeader header or the CSRFField form field.
func CheckCSRF(c echo.Context, sess accounts.Session) error {
	r := c.Request()
	if err := SameOrigin(r); err != nil {
		return err
	}
	tok := r.Header.Get(CSRFHeader)
	if tok == "" && strings.HasPrefix(r.Header.Get("Content-Type"), echo.MIMEApplicationForm) {
		tok = c.FormValue(CSRFField)
	}
	if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(sess.CSRF)) != 1 {
		return api.NewStatusError(api.ReasonForbidden, "a %s with a session cookie needs the session's CSRF token (header %s)", r.Method, CSRFHeader)
	}
	return nil
}

// sessionPrincipal authenticates the session cookie, if there is one. It
// returns ok=false when the request carries no session cookie.
func (s *Server) sessionPrincipal(c echo.Context) (credential.Principal, bool, error) {
	if s.accounts == nil {
		return credential.Principal{}, false, nil
	}
	ck, err := c.Request().Cookie(SessionCookie)
	if err != nil || ck.Value == "" {
		return credential.Principal{}, false, nil
	}
	sess, err := s.accounts.Authenticate(c.Request().Context(), ck.Value)
	if err != nil {
		return credential.Principal{}, true, err
	}
	if !safeMethod(c.Request().Method) {
		if err := CheckCSRF(c, sess); err != nil {
			return credential.Principal{}, true, err
		}
	}
	c.Set(sessionKeyCtx, sess)
	return credential.Principal{Name: sess.User, Role: sess.Role}, true, nil
}

// SetSessionCookie sends a new session's cookie.
func SetSessionCookie(c echo.Context, id string) {
	c.SetCookie(&http.Cookie{Name: SessionCookie, Value: id, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// ClearSessionCookie tells the browser to forget the session cookie.
func ClearSessionCookie(c echo.Context) {
	c.SetCookie(&http.Cookie{Name: SessionCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: -1})
}

// LoginError turns a login failure into the API's error, with Retry-After
// on a rate limit.
func LoginError(c echo.Context, err error) error {
	var rl *accounts.RateLimitedError
	if errors.As(err, &rl) {
		secs := int(rl.RetryAfter.Seconds() + 0.999)
		c.Response().Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
		return &api.StatusError{Status: api.Status{TypeMeta: api.TypeMeta{APIVersion: "v1", Kind: "Status"},
			Code: http.StatusTooManyRequests, Reason: "TooManyRequests", Message: rl.Error()}}
	}
	return err
}

// LoginRequest is the body of POST /auth/login and POST /auth/token.
type LoginRequest struct {
	Username string `json:"username" form:"username"`
	Password string `json:"password" form:"password"`
	// TTL is how long a minted token lives (a Go duration, "720h");
	// empty means the longest allowed. Only /auth/token reads it.
	TTL string `json:"ttl,omitempty" form:"ttl"`
}

// SessionInfo answers a login and GET /auth/session.
type SessionInfo struct {
	User string   `json:"user"`
	Role api.Role `json:"role"`
	// CSRFToken must accompany state-changing requests made with the
	// session cookie, in the X-CSRF-Token header. Empty for bearer tokens.
	CSRFToken string `json:"csrfToken,omitempty"`
}

// TokenResponse answers POST /auth/token.
type TokenResponse struct {
	// Token is the bearer string, shown only here.
	Token     string    `json:"token"`
	Name      string    `json:"name"`
	Role      api.Role  `json:"role"`
	ExpiresAt time.Time `json:"expiresAt"`
}

func (s *Server) readLogin(c echo.Context) (LoginRequest, error) {
	var req LoginRequest
	if strings.HasPrefix(c.Request().Header.Get("Content-Type"), echo.MIMEApplicationForm) {
		req.Username, req.Password, req.TTL = c.FormValue("username"), c.FormValue("password"), c.FormValue("ttl")
	} else {
		data, err := readBody(c)
		if err != nil {
			return req, err
		}
		if err := json.Unmarshal(data, &req); err != nil {
			return req, api.NewStatusError(api.ReasonBadRequest, "decode login: %v", err)
		}
	}
	if req.Username == "" || req.Password == "" {
		return req, api.NewStatusError(api.ReasonBadRequest, "a username and a password are required")
	}
	return req, nil
}

func (s *Server) login(c echo.Context) error {
	// A login form posted from another site would log the victim into
	// the attacker's account.
	if err := SameOrigin(c.Request()); err != nil {
		return err
	}
	req, err := s.readLogin(c)
	if err != nil {
		return err
	}
	id, sess, err := s.accounts.Login(c.Request().Context(), req.Username, req.Password, ClientAddr(c.Request()))
	if err != nil {
		return LoginError(c, err)
	}
	// The old session, if any, ends: its id may have been seen by
	// someone else.
	if ck, err := c.Request().Cookie(SessionCookie); err == nil {
		_ = s.accounts.Logout(c.Request().Context(), ck.Value)
	}
	SetSessionCookie(c, id)
	SetActor(c, sess.User, sess.Role)
	return c.JSON(http.StatusOK, SessionInfo{User: sess.User, Role: sess.Role, CSRFToken: sess.CSRF})
}

func (s *Server) logout(c echo.Context) error {
	if ck, err := c.Request().Cookie(SessionCookie); err == nil {
		if err := s.accounts.Logout(c.Request().Context(), ck.Value); err != nil {
			return err
		}
	}
	ClearSessionCookie(c)
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) whoami(c echo.Context) error {
	p := principalOf(c)
	info := SessionInfo{User: p.Name, Role: p.Role}
	if sess, ok := sessionOf(c); ok {
		info.CSRFToken = sess.CSRF
	}
	return c.JSON(http.StatusOK, info)
}

func (s *Server) mintToken(c echo.Context) error {
	req, err := s.readLogin(c)
	if err != nil {
		return err
	}
	var ttl time.Duration
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			return api.NewStatusError(api.ReasonBadRequest, "ttl %q is not a positive duration such as 720h", req.TTL)
		}
	}
	bearer, tok, err := s.accounts.MintToken(c.Request().Context(), req.Username, req.Password, ClientAddr(c.Request()), ttl)
	if err != nil {
		return LoginError(c, err)
	}
	return c.JSON(http.StatusCreated, TokenResponse{Token: bearer, Name: tok.Metadata.Name, Role: tok.Spec.Role, ExpiresAt: *tok.Spec.ExpiresAt})
}

// SetupState answers GET /auth/setup.
type SetupState struct {
	// SetupNeeded is true until the first account exists.
	SetupNeeded bool `json:"setupNeeded"`
}

func (s *Server) setupState(c echo.Context) error {
	need, err := s.accounts.SetupNeeded(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, SetupState{SetupNeeded: need})
}

// setup makes the first admin account. It sits behind authentication as
// an admin route; the service checks the bearer token again itself,
// because only a token (not a session) can exist before the first user.
func (s *Server) setup(c echo.Context) error {
	data, err := readBody(c)
	if err != nil {
		return err
	}
	var nu accounts.NewUser
	if err := json.Unmarshal(data, &nu); err != nil {
		return api.NewStatusError(api.ReasonBadRequest, "decode account: %v", err)
	}
	bearer, _ := strings.CutPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
	u, err := s.accounts.Setup(c.Request().Context(), bearer, nu)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, u)
}

func (s *Server) listUsers(c echo.Context) error {
	us, err := s.accounts.ListUsers(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": us})
}

func (s *Server) getUser(c echo.Context) error {
	u, err := s.accounts.GetUser(c.Request().Context(), c.Param("name"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

func (s *Server) createUser(c echo.Context) error {
	data, err := readBody(c)
	if err != nil {
		return err
	}
	var nu accounts.NewUser
	if err := json.Unmarshal(data, &nu); err != nil {
		return api.NewStatusError(api.ReasonBadRequest, "decode user: %v", err)
	}
	u, err := s.accounts.CreateUser(c.Request().Context(), nu, principalOf(c).Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, u)
}

func (s *Server) updateUser(c echo.Context) error {
	data, err := readBody(c)
	if err != nil {
		return err
	}
	var up accounts.UserUpdate
	if err := json.Unmarshal(data, &up); err != nil {
		return api.NewStatusError(api.ReasonBadRequest, "decode user update: %v", err)
	}
	u, err := s.accounts.UpdateUser(c.Request().Context(), c.Param("name"), up)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

// requireRole refuses callers below role.
func requireRole(role api.Role) echo.MiddlewareFunc {
	rank := map[api.Role]int{api.RoleViewer: 1, api.RoleEditor: 2, api.RoleAdmin: 3}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			p := principalOf(c)
			if rank[p.Role] < rank[role] {
				return api.NewStatusError(api.ReasonForbidden, "%q with role %s may not %s %s (needs %s)", p.Name, p.Role, c.Request().Method, c.Path(), role)
			}
			return next(c)
		}
	}
}
