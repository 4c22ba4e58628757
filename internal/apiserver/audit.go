package apiserver

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/audit"
	"github.com/labstack/echo/v4"
)

const auditActorKey = "kakuremichi.audit.actor"

// SetActor names who makes the request, for the audit log. The API's
// authentication sets it; the web UI sets it for its session.
func SetActor(c echo.Context, user string, role api.Role) {
	c.Set(auditActorKey, [2]string{user, string(role)})
}

const auditDetailKey = "kakuremichi.audit.detail"

// SetAuditDetail adds to the audit entry of the request what the method
// and path do not say (a setting's new value, a role granted); never a
// secret.
func SetAuditDetail(c echo.Context, detail string) { c.Set(auditDetailKey, detail) }

// audited reports whether a request changes something worth recording:
// every write through the API, the auth endpoints and the UI. Node
// heartbeats on the bridge are not people's changes.
func audited(r *http.Request) bool {
	if safeMethod(r.Method) {
		return false
	}
	p := r.URL.Path
	return strings.HasPrefix(p, APIPrefix+"/") || strings.HasPrefix(p, "/auth/") || strings.HasPrefix(p, "/ui/")
}

// auditMiddleware records each change once it is answered, whether it
// succeeded or not. A failure to record is logged, not turned into a
// failed request: the change has happened by then.
func (s *Server) auditMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		if s.audit == nil || !audited(c.Request()) {
			return err
		}
		status := c.Response().Status
		if err != nil {
			var he *echo.HTTPError
			if errors.As(err, &he) {
				status = he.Code
			} else {
				status = api.StatusFromError(err).Code
			}
		}
		e := audit.Entry{Time: s.now(), Method: c.Request().Method, Path: c.Request().URL.Path, Status: status, Addr: ClientAddr(c.Request())}
		if who, ok := c.Get(auditActorKey).([2]string); ok {
			e.User, e.Role = who[0], who[1]
		}
		e.Detail, _ = c.Get(auditDetailKey).(string)
		// The request's context may end with the request; the entry must
		// still be written.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), 5*time.Second)
		defer cancel()
		if rerr := s.audit.Record(ctx, e); rerr != nil {
			s.log.Error("could not record a change in the audit log", "method", e.Method, "path", e.Path, "user", e.User, "err", rerr)
		}
		return err
	}
}

func (s *Server) listAudit(c echo.Context) error {
	limit := 100
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return api.NewStatusError(api.ReasonBadRequest, "limit %q is not a number from 1 to 10000", v)
		}
		limit = n
	}
	entries, err := s.audit.List(c.Request().Context(), limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": entries})
}
