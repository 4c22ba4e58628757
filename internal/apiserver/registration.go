package apiserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/labstack/echo/v4"
)

// SettingsUpdate is the body of PUT /auth/settings.
type SettingsUpdate struct {
	// OpenRegistration lets anyone sign up as a viewer; false keeps
	// registration to invites.
	OpenRegistration *bool `json:"openRegistration"`
}

func (s *Server) getSettings(c echo.Context) error {
	st, err := s.accounts.Settings(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func (s *Server) putSettings(c echo.Context) error {
	data, err := readBody(c)
	if err != nil {
		return err
	}
	var up SettingsUpdate
	if err := json.Unmarshal(data, &up); err != nil {
		return api.NewStatusError(api.ReasonBadRequest, "decode settings: %v", err)
	}
	if up.OpenRegistration == nil {
		return api.ErrorList{{Type: api.FieldRequired, Field: "openRegistration", Detail: "true (anyone may sign up as a viewer) or false (by invite only)"}}
	}
	st, err := s.accounts.SetOpenRegistration(c.Request().Context(), *up.OpenRegistration, principalOf(c).Name)
	if err != nil {
		return err
	}
	if st.OpenRegistration {
		SetAuditDetail(c, "registration open")
	} else {
		SetAuditDetail(c, "registration closed")
	}
	return c.JSON(http.StatusOK, st)
}

// InviteRequest is the body of POST /auth/invites.
type InviteRequest struct {
	Role api.Role `json:"role"`
	// TTL is how long the invite works, a Go duration ("72h"); empty
	// means 7 days, at most 30 days.
	TTL string `json:"ttl,omitempty"`
}

// InviteResponse answers POST /auth/invites.
type InviteResponse struct {
	accounts.Invite
	// Code is the invite's secret, shown only here; SignupPath is where
	// the invited person opens it in the web UI.
	Code       string `json:"code"`
	SignupPath string `json:"signupPath"`
}

func (s *Server) listInvites(c echo.Context) error {
	inv, err := s.accounts.ListInvites(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": inv})
}

func (s *Server) createInvite(c echo.Context) error {
	data, err := readBody(c)
	if err != nil {
		return err
	}
	var req InviteRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return api.NewStatusError(api.ReasonBadRequest, "decode invite: %v", err)
	}
	var ttl time.Duration
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			return api.ErrorList{{Type: api.FieldInvalid, Field: "ttl", Detail: fmt.Sprintf("%q is not a positive duration such as 72h", req.TTL)}}
		}
	}
	code, inv, err := s.accounts.CreateInvite(c.Request().Context(), req.Role, ttl, principalOf(c).Name)
	if err != nil {
		return err
	}
	SetAuditDetail(c, fmt.Sprintf("invite %s, role %s, until %s", inv.ID, inv.Role, inv.ExpiresAt.Format(time.RFC3339)))
	return c.JSON(http.StatusCreated, InviteResponse{Invite: inv, Code: code, SignupPath: "/ui/signup?invite=" + url.QueryEscape(code)})
}

func (s *Server) deleteInvite(c echo.Context) error {
	if err := s.accounts.RevokeInvite(c.Request().Context(), c.Param("id")); err != nil {
		return err
	}
	SetAuditDetail(c, "invite "+c.Param("id")+" revoked")
	return c.NoContent(http.StatusNoContent)
}
