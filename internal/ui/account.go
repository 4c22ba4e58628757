package ui

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/kakuremichi/kakuremichi/internal/apiserver"
	"github.com/labstack/echo/v4"
)

// fieldErrors turns validation errors into the form's field errors; a
// non-validation error is returned for an error page.
func fieldErrors(err error, into map[string]string) error {
	var fe api.ErrorList
	if !errors.As(err, &fe) {
		return err
	}
	for _, e := range fe {
		into[e.Field] = e.Detail
	}
	return nil
}

// accountData is the page of one's own account.
type accountData struct {
	User   accounts.User
	Errors map[string]string
}

func (u *UI) showAccount(c echo.Context, code int, d accountData, flash string) error {
	usr, err := u.acc.GetUser(c.Request().Context(), sessionOf(c).User)
	if err != nil {
		return u.fail(c, err)
	}
	d.User = usr
	return u.render(c, code, "account", page{Title: "Your account", Nav: "account", Flash: flash, Data: d})
}

func (u *UI) accountPage(c echo.Context) error {
	return u.showAccount(c, http.StatusOK, accountData{}, "")
}

// changePassword sets one's own password, after the current one; every
// other session of the user ends, this one stays.
func (u *UI) changePassword(c echo.Context) error {
	d := accountData{Errors: map[string]string{}}
	if c.FormValue("password") != c.FormValue("password2") {
		d.Errors["password2"] = "The new passwords differ."
		return u.showAccount(c, http.StatusUnprocessableEntity, d, "")
	}
	ck, _ := c.Request().Cookie(apiserver.SessionCookie)
	err := u.acc.ChangePassword(c.Request().Context(), sessionOf(c).User, c.FormValue("current"), c.FormValue("password"),
		apiserver.ClientAddr(c.Request()), ck.Value)
	if err != nil {
		if err = apiserver.LoginError(c, err); fieldErrors(err, d.Errors) != nil {
			return u.fail(c, err)
		}
		return u.showAccount(c, http.StatusUnprocessableEntity, d, "")
	}
	apiserver.SetAuditDetail(c, "own password changed; other sessions ended")
	return u.showAccount(c, http.StatusOK, accountData{}, "Password changed. Your other sessions have been logged out.")
}

// userData is an admin's page of one user.
type userData struct {
	User   accounts.User
	Self   bool
	Errors map[string]string
}

func (u *UI) showUser(c echo.Context, code int, d userData, flash string) error {
	usr, err := u.acc.GetUser(c.Request().Context(), c.Param("name"))
	if err != nil {
		return u.fail(c, err)
	}
	d.User, d.Self = usr, usr.Name == sessionOf(c).User
	return u.render(c, code, "user", page{Title: "User " + usr.Name, Nav: "users", Flash: flash, Data: d})
}

func (u *UI) userPage(c echo.Context) error { return u.showUser(c, http.StatusOK, userData{}, "") }

// resetPassword gives another user a new password; every session of that
// user ends. Admins change their own on the account page, which asks for
// the current one.
func (u *UI) resetPassword(c echo.Context) error {
	name := c.Param("name")
	if name == sessionOf(c).User {
		return u.fail(c, api.NewStatusError(api.ReasonBadRequest, "change your own password on your account page, with your current one"))
	}
	d := userData{Errors: map[string]string{}}
	if c.FormValue("password") != c.FormValue("password2") {
		d.Errors["password2"] = "The passwords differ."
		return u.showUser(c, http.StatusUnprocessableEntity, d, "")
	}
	pw := c.FormValue("password")
	if _, err := u.acc.UpdateUser(c.Request().Context(), name, accounts.UserUpdate{Password: &pw}); err != nil {
		if fieldErrors(err, d.Errors) != nil {
			return u.fail(c, err)
		}
		return u.showUser(c, http.StatusUnprocessableEntity, d, "")
	}
	apiserver.SetAuditDetail(c, "password of "+name+" reset; their sessions ended")
	return u.showUser(c, http.StatusOK, userData{}, "The password of "+name+" is reset and their sessions ended. Hand the new one over safely.")
}

// settingsData is the admin settings page: registration and invites.
type settingsData struct {
	Settings accounts.Settings
	Invites  []accounts.Invite
	Roles    []api.Role
	New      struct{ Role, Days string }
	Errors   map[string]string
	// Link is the sign-up link of the invite just made, shown once.
	Link string
}

func (u *UI) showSettings(c echo.Context, code int, d settingsData, flash string) error {
	ctx := c.Request().Context()
	st, err := u.acc.Settings(ctx)
	if err != nil {
		return u.fail(c, err)
	}
	inv, err := u.acc.ListInvites(ctx)
	if err != nil {
		return u.fail(c, err)
	}
	d.Settings, d.Invites, d.Roles = st, inv, api.Roles
	if d.New.Role == "" {
		d.New.Role = string(api.RoleViewer)
	}
	if d.New.Days == "" {
		d.New.Days = "7"
	}
	if flash == "" {
		switch c.QueryParam("flash") {
		case "open":
			flash = "Registration is open: anyone who reaches this page can sign up as a viewer."
		case "closed":
			flash = "Registration is by invite only."
		case "revoked":
			flash = "Invite revoked."
		}
	}
	return u.render(c, code, "settings", page{Title: "Settings", Nav: "settings", Flash: flash, Data: d})
}

func (u *UI) settingsPage(c echo.Context) error {
	return u.showSettings(c, http.StatusOK, settingsData{}, "")
}

func (u *UI) setRegistration(c echo.Context) error {
	var open bool
	switch c.FormValue("registration") {
	case "open":
		open = true
	case "invite":
	default:
		d := settingsData{Errors: map[string]string{"registration": fmt.Sprintf("%q is neither open nor invite", c.FormValue("registration"))}}
		return u.showSettings(c, http.StatusUnprocessableEntity, d, "")
	}
	if _, err := u.acc.SetOpenRegistration(c.Request().Context(), open, sessionOf(c).User); err != nil {
		return u.fail(c, err)
	}
	word := "closed"
	if open {
		word = "open"
	}
	apiserver.SetAuditDetail(c, "registration "+word)
	return c.Redirect(http.StatusSeeOther, Prefix+"/settings?flash="+word)
}

// createInvite makes a single-use invite link and shows it once.
func (u *UI) createInvite(c echo.Context) error {
	d := settingsData{Errors: map[string]string{}}
	d.New.Role, d.New.Days = c.FormValue("role"), strings.TrimSpace(c.FormValue("days"))
	days, err := strconv.Atoi(d.New.Days)
	if err != nil || days < 1 || days > int(accounts.MaxInviteTTL.Hours()/24) {
		d.Errors["days"] = fmt.Sprintf("%q is not a whole number of days from 1 to %d", d.New.Days, int(accounts.MaxInviteTTL.Hours()/24))
	}
	if r := api.Role(d.New.Role); r != api.RoleAdmin && r != api.RoleEditor && r != api.RoleViewer {
		d.Errors["role"] = fmt.Sprintf("%q is not admin, editor or viewer", d.New.Role)
	}
	if len(d.Errors) > 0 {
		return u.showSettings(c, http.StatusUnprocessableEntity, d, "")
	}
	code, inv, err := u.acc.CreateInvite(c.Request().Context(), api.Role(d.New.Role), time.Duration(days)*24*time.Hour, sessionOf(c).User)
	if err != nil {
		if fieldErrors(err, d.Errors) != nil {
			return u.fail(c, err)
		}
		return u.showSettings(c, http.StatusUnprocessableEntity, d, "")
	}
	apiserver.SetAuditDetail(c, fmt.Sprintf("invite %s, role %s, %d days", inv.ID, inv.Role, days))
	link := u.controlURL(c) + Prefix + "/signup?invite=" + url.QueryEscape(code)
	return u.showSettings(c, http.StatusCreated, settingsData{Link: link}, "Invite made: whoever signs up with it becomes "+string(inv.Role)+".")
}

func (u *UI) revokeInvite(c echo.Context) error {
	if err := u.acc.RevokeInvite(c.Request().Context(), c.Param("id")); err != nil {
		return u.fail(c, err)
	}
	apiserver.SetAuditDetail(c, "invite "+c.Param("id")+" revoked")
	return c.Redirect(http.StatusSeeOther, Prefix+"/settings?flash=revoked")
}

// signupData is the sign-up page.
type signupData struct {
	Invite     string
	InvitedAs  api.Role
	InvitedBy  string
	Open       bool
	Name       string
	Email      string
	Errors     map[string]string
	Refused    string // why signing up is not possible here
	Registered bool
}

// signupState reads whether this request may sign up: with a valid
// invite, or while registration is open.
func (u *UI) signupState(c echo.Context, d *signupData) error {
	ctx := c.Request().Context()
	if d.Invite != "" {
		inv, err := u.acc.CheckInvite(ctx, d.Invite)
		if errors.Is(err, api.ErrForbidden) {
			d.Refused = api.StatusFromError(err).Message
			return nil
		}
		if err != nil {
			return err
		}
		d.InvitedAs, d.InvitedBy = inv.Role, inv.CreatedBy
		return nil
	}
	st, err := u.acc.Settings(ctx)
	if err != nil {
		return err
	}
	d.Open = st.OpenRegistration
	if !d.Open {
		d.Refused = "Registration is by invite only. Ask an admin for an invite link."
	}
	return nil
}

func (u *UI) signupPage(c echo.Context) error {
	need, err := u.acc.SetupNeeded(c.Request().Context())
	if err != nil {
		return u.fail(c, err)
	}
	if need {
		return c.Redirect(http.StatusSeeOther, Prefix+"/setup")
	}
	d := signupData{Invite: c.QueryParam("invite"), Errors: map[string]string{}}
	if err := u.signupState(c, &d); err != nil {
		return u.fail(c, err)
	}
	code := http.StatusOK
	if d.Refused != "" {
		code = http.StatusForbidden
	}
	return u.render(c, code, "signup", page{Title: "Create an account", Data: d})
}

func (u *UI) signup(c echo.Context) error {
	if err := apiserver.SameOrigin(c.Request()); err != nil {
		return u.fail(c, err)
	}
	d := signupData{Invite: c.FormValue("invite"), Name: strings.TrimSpace(c.FormValue("name")),
		Email: strings.TrimSpace(c.FormValue("email")), Errors: map[string]string{}}
	if err := u.signupState(c, &d); err != nil {
		return u.fail(c, err)
	}
	if d.Refused != "" {
		return u.render(c, http.StatusForbidden, "signup", page{Title: "Create an account", Data: d})
	}
	if c.FormValue("password") != c.FormValue("password2") {
		d.Errors["password2"] = "The passwords differ."
		return u.render(c, http.StatusUnprocessableEntity, "signup", page{Title: "Create an account", Data: d})
	}
	usr, err := u.acc.Register(c.Request().Context(), d.Invite, accounts.NewUser{Name: d.Name, Email: d.Email, Password: c.FormValue("password")},
		apiserver.ClientAddr(c.Request()))
	if err != nil {
		err = apiserver.LoginError(c, err)
		if errors.Is(err, api.ErrForbidden) {
			d.Refused = api.StatusFromError(err).Message
			return u.render(c, http.StatusForbidden, "signup", page{Title: "Create an account", Data: d})
		}
		if fieldErrors(err, d.Errors) != nil {
			return u.fail(c, err)
		}
		return u.render(c, http.StatusUnprocessableEntity, "signup", page{Title: "Create an account", Data: d})
	}
	apiserver.SetActor(c, usr.Name, usr.Role)
	how := "open registration"
	if d.Invite != "" {
		how = "an invite of " + d.InvitedBy
	}
	apiserver.SetAuditDetail(c, fmt.Sprintf("signed up as %s through %s", usr.Role, how))
	return u.render(c, http.StatusCreated, "login", page{Title: "Log in",
		Flash: "Your account " + usr.Name + " (" + string(usr.Role) + ") is ready. Log in with it.", Data: loginData{Username: usr.Name, Next: Prefix + "/"}})
}
