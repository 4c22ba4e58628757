package ui

import (
	"errors"
	"net/http"
	"strings"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/labstack/echo/v4"
)

// usersData is the users page: the list and the form for a new user.
type usersData struct {
	Users  []accounts.User
	Roles  []api.Role
	New    accounts.NewUser
	Errors map[string]string
}

func (u *UI) showUsers(c echo.Context, code int, d usersData, flash string) error {
	users, err := u.acc.ListUsers(c.Request().Context())
	if err != nil {
		return u.fail(c, err)
	}
	d.Users, d.Roles = users, api.Roles
	if d.New.Role == "" {
		d.New.Role = api.RoleViewer
	}
	return u.render(c, code, "users", page{Title: "Users", Nav: "users", Flash: flash, Data: d})
}

func (u *UI) users(c echo.Context) error { return u.showUsers(c, http.StatusOK, usersData{}, "") }

// createUser makes an account with the role an admin chose; the admin
// hands the password over, and the user can be given a new one later.
func (u *UI) createUser(c echo.Context) error {
	nu := accounts.NewUser{Name: strings.TrimSpace(c.FormValue("name")), Role: api.Role(c.FormValue("role")),
		Email: strings.TrimSpace(c.FormValue("email")), Password: c.FormValue("password")}
	_, err := u.acc.CreateUser(c.Request().Context(), nu, sessionOf(c).User)
	d := usersData{New: accounts.NewUser{Name: nu.Name, Role: nu.Role, Email: nu.Email}, Errors: map[string]string{}}
	var fe api.ErrorList
	switch {
	case errors.As(err, &fe):
		for _, e := range fe {
			d.Errors[e.Field] = e.Detail
		}
		return u.showUsers(c, http.StatusUnprocessableEntity, d, "")
	case errors.Is(err, api.ErrAlreadyExists):
		d.Errors["name"] = "a user of that name exists already"
		return u.showUsers(c, http.StatusConflict, d, "")
	case err != nil:
		return u.fail(c, err)
	}
	return u.showUsers(c, http.StatusCreated, usersData{}, "User "+nu.Name+" created.")
}

// setUserDisabled disables or enables an account; a disabled user's
// sessions stop working at once. Admins cannot disable themselves, so the
// last admin cannot lock everyone out by a slip.
func (u *UI) setUserDisabled(c echo.Context) error {
	name := c.Param("name")
	disabled := c.FormValue("disabled") == "true"
	if disabled && name == sessionOf(c).User {
		return u.fail(c, api.NewStatusError(api.ReasonBadRequest, "you cannot disable your own account"))
	}
	if _, err := u.acc.UpdateUser(c.Request().Context(), name, accounts.UserUpdate{Disabled: &disabled}); err != nil {
		return u.fail(c, err)
	}
	word := "enabled"
	if disabled {
		word = "disabled"
	}
	return u.showUsers(c, http.StatusOK, usersData{}, "User "+name+" "+word+".")
}
