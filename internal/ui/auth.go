package ui

import (
	"errors"
	"net/http"
	"strings"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/kakuremichi/kakuremichi/internal/apiserver"
	"github.com/labstack/echo/v4"
)

type loginData struct {
	Username string
	Next     string
	// Open says registration is open, so the page links to sign-up.
	Open bool
}

func nextOf(c echo.Context) string {
	n := c.FormValue("next")
	if n == "" {
		n = c.QueryParam("next")
	}
	if !LocalPath(n) {
		return Prefix + "/"
	}
	return n
}

func (u *UI) loginPage(c echo.Context) error {
	need, err := u.acc.SetupNeeded(c.Request().Context())
	if err != nil {
		return u.fail(c, err)
	}
	if need {
		return c.Redirect(http.StatusSeeOther, Prefix+"/setup")
	}
	st, err := u.acc.Settings(c.Request().Context())
	if err != nil {
		return u.fail(c, err)
	}
	return u.render(c, http.StatusOK, "login", page{Title: "Log in", Data: loginData{Next: nextOf(c), Open: st.OpenRegistration}})
}

func (u *UI) login(c echo.Context) error {
	if err := apiserver.SameOrigin(c.Request()); err != nil {
		return u.fail(c, err)
	}
	d := loginData{Username: c.FormValue("username"), Next: nextOf(c)}
	if d.Username == "" || c.FormValue("password") == "" {
		return u.render(c, http.StatusBadRequest, "login", page{Title: "Log in", Error: "Enter your username and password.", Data: d})
	}
	id, _, err := u.acc.Login(c.Request().Context(), d.Username, c.FormValue("password"), apiserver.ClientAddr(c.Request()))
	if err != nil {
		err = apiserver.LoginError(c, err)
		st := api.StatusFromError(err)
		if st.Code >= 500 {
			return u.fail(c, err)
		}
		return u.render(c, st.Code, "login", page{Title: "Log in", Error: st.Message, Data: d})
	}
	if ck, err := c.Request().Cookie(apiserver.SessionCookie); err == nil {
		_ = u.acc.Logout(c.Request().Context(), ck.Value)
	}
	apiserver.SetSessionCookie(c, id)
	apiserver.SetActor(c, d.Username, "")
	return c.Redirect(http.StatusSeeOther, d.Next)
}

func (u *UI) logout(c echo.Context) error {
	if ck, err := c.Request().Cookie(apiserver.SessionCookie); err == nil {
		if err := u.acc.Logout(c.Request().Context(), ck.Value); err != nil {
			return u.fail(c, err)
		}
	}
	apiserver.ClearSessionCookie(c)
	return c.Redirect(http.StatusSeeOther, Prefix+"/login")
}

type setupData struct {
	Name, Email string
	Errors      map[string]string
}

func (u *UI) setupPage(c echo.Context) error {
	need, err := u.acc.SetupNeeded(c.Request().Context())
	if err != nil {
		return u.fail(c, err)
	}
	if !need {
		return c.Redirect(http.StatusSeeOther, Prefix+"/login")
	}
	return u.render(c, http.StatusOK, "setup", page{Title: "Set up kakuremichi", Data: setupData{}})
}

func (u *UI) setup(c echo.Context) error {
	if err := apiserver.SameOrigin(c.Request()); err != nil {
		return u.fail(c, err)
	}
	d := setupData{Name: c.FormValue("name"), Email: c.FormValue("email"), Errors: map[string]string{}}
	if c.FormValue("password") != c.FormValue("password2") {
		d.Errors["password2"] = "The passwords differ."
		return u.render(c, http.StatusUnprocessableEntity, "setup", page{Title: "Set up kakuremichi", Data: d})
	}
	_, err := u.acc.Setup(c.Request().Context(), c.FormValue("token"),
		accounts.NewUser{Name: d.Name, Email: d.Email, Password: c.FormValue("password")})
	var fe api.ErrorList
	switch {
	case errors.As(err, &fe):
		for _, e := range fe {
			d.Errors[e.Field] = e.Detail
		}
		return u.render(c, http.StatusUnprocessableEntity, "setup", page{Title: "Set up kakuremichi", Data: d})
	case errors.Is(err, api.ErrUnauthorized), errors.Is(err, api.ErrForbidden):
		d.Errors["token"] = "This is not the bootstrap token (or another admin token)."
		return u.render(c, http.StatusUnauthorized, "setup", page{Title: "Set up kakuremichi", Data: d})
	case errors.Is(err, api.ErrAlreadyExists):
		return c.Redirect(http.StatusSeeOther, Prefix+"/login")
	case err != nil:
		return u.fail(c, err)
	}
	apiserver.SetActor(c, d.Name, api.RoleAdmin)
	return u.render(c, http.StatusCreated, "login", page{Title: "Log in",
		Flash: "Your admin account " + strings.TrimSpace(d.Name) + " is ready. Log in with it.", Data: loginData{Username: d.Name, Next: Prefix + "/"}})
}
