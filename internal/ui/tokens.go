package ui

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/accounts"
	"github.com/kakuremichi/kakuremichi/internal/apiserver"
	"github.com/kakuremichi/kakuremichi/internal/credential"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

// CreatedByAnnotation names the user who made a token in the UI.
const CreatedByAnnotation = "kakuremichi.io/created-by"

// tokenRow is one token as the tokens page shows it: never its secret or
// its hash.
type tokenRow struct {
	Name, Role, Description, CreatedBy string
	// Node is the Agent or Gateway of a node credential; empty for
	// people's tokens.
	Node      string
	Created   time.Time
	ExpiresAt *time.Time
	Expired   bool
}

// tokenExpiries are the lifetimes the form offers, in its order.
var tokenExpiries = []struct{ Value, Label string }{
	{"7d", "7 days"}, {"30d", "30 days"}, {"90d", "90 days"}, {"365d", "1 year"}, {"never", "never"}}

// tokensData is the tokens page: people's tokens, node credentials, the
// form, and, once, the secret of the token just made.
type tokensData struct {
	Tokens, Nodes []tokenRow
	Roles         []api.Role
	Expiries      []struct{ Value, Label string }
	New           struct{ Name, Role, Expires, Description string }
	Errors        map[string]string
	// Secret is the new token's bearer string, shown in this response
	// only.
	Secret, SecretName string
}

func tokenRowOf(t *api.Token, now time.Time) tokenRow {
	r := tokenRow{Name: t.Metadata.Name, Role: string(t.Spec.Role), Description: t.Spec.Description, Node: t.Spec.Node,
		Created: t.Metadata.CreationTimestamp, ExpiresAt: t.Spec.ExpiresAt,
		Expired: t.Spec.ExpiresAt != nil && now.After(*t.Spec.ExpiresAt)}
	switch {
	case t.Metadata.Annotations[CreatedByAnnotation] != "":
		r.CreatedBy = t.Metadata.Annotations[CreatedByAnnotation]
	case t.Metadata.Labels[accounts.UserLabel] != "":
		r.CreatedBy = t.Metadata.Labels[accounts.UserLabel] + " (kakuremichictl login)"
	case t.Metadata.Name == apiserver.BootstrapTokenName:
		r.CreatedBy = "Control, on first start"
	case r.Node != "":
		r.CreatedBy = "enrolment of " + r.Node
	}
	return r
}

func (u *UI) showTokens(c echo.Context, code int, d tokensData, flash string) error {
	objs, _, err := u.st.List(c.Request().Context(), "Token", api.Selector{})
	if err != nil {
		return u.fail(c, err)
	}
	now := time.Now()
	for _, o := range objs {
		r := tokenRowOf(o.(*api.Token), now)
		if r.Node != "" {
			d.Nodes = append(d.Nodes, r)
		} else {
			d.Tokens = append(d.Tokens, r)
		}
	}
	sort.Slice(d.Tokens, func(i, j int) bool { return d.Tokens[i].Name < d.Tokens[j].Name })
	sort.Slice(d.Nodes, func(i, j int) bool { return d.Nodes[i].Name < d.Nodes[j].Name })
	d.Roles, d.Expiries = api.Roles, tokenExpiries
	if d.New.Role == "" {
		d.New.Role = string(api.RoleViewer)
	}
	if d.New.Expires == "" {
		d.New.Expires = "90d"
	}
	if flash == "" {
		if n := c.QueryParam("revoked"); api.ValidateName(n) == nil {
			flash = "Token " + n + " revoked."
		}
	}
	return u.render(c, code, "tokens", page{Title: "API tokens", Nav: "tokens", Flash: flash, Data: d})
}

func (u *UI) tokens(c echo.Context) error { return u.showTokens(c, http.StatusOK, tokensData{}, "") }

// tokenFields maps the API's field paths to the form's fields.
var tokenFields = map[string]string{"metadata.name": "name", "spec.role": "role", "spec.description": "description", "spec.expiresAt": "expires"}

// createToken makes a token as POST /apis/.../tokens would, with the same
// validation, and shows its secret once. Only people's roles are offered:
// node credentials are made by enrolment.
func (u *UI) createToken(c echo.Context) error {
	d := tokensData{Errors: map[string]string{}}
	d.New.Name = strings.TrimSpace(c.FormValue("name"))
	d.New.Role = c.FormValue("role")
	d.New.Expires = c.FormValue("expires")
	d.New.Description = strings.TrimSpace(c.FormValue("description"))
	tok := &api.Token{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Token"},
		Metadata: api.ObjectMeta{Name: d.New.Name, Annotations: map[string]string{CreatedByAnnotation: sessionOf(c).User}},
		Spec:     api.TokenSpec{Role: api.Role(d.New.Role), Description: d.New.Description}}
	if r := api.Role(d.New.Role); r.IsNodeRole() {
		d.Errors["role"] = fmt.Sprintf("%s credentials are made when a node enrols; choose admin, editor or viewer", r)
	}
	switch d.New.Expires {
	case "never":
	case "7d", "30d", "90d", "365d":
		var days int
		fmt.Sscanf(d.New.Expires, "%dd", &days)
		exp := time.Now().Add(time.Duration(days) * 24 * time.Hour).UTC().Truncate(time.Second)
		tok.Spec.ExpiresAt = &exp
	default:
		d.Errors["expires"] = fmt.Sprintf("%q is not one of the offered lifetimes", d.New.Expires)
	}
	if len(d.Errors) > 0 {
		return u.showTokens(c, http.StatusUnprocessableEntity, d, "")
	}
	secret, err := credential.NewSecret()
	if err != nil {
		return u.fail(c, err)
	}
	tok.Spec.SecretHash = credential.Hash(secret)
	if _, err := u.st.Create(c.Request().Context(), tok, store.WriteOptions{}); err != nil {
		var fe api.ErrorList
		switch {
		case errors.As(err, &fe):
			for _, e := range fe {
				if f, ok := tokenFields[e.Field]; ok {
					d.Errors[f] = e.Detail
				} else {
					d.Errors["name"] = e.Error()
				}
			}
			return u.showTokens(c, http.StatusUnprocessableEntity, d, "")
		case errors.Is(err, api.ErrAlreadyExists):
			d.Errors["name"] = fmt.Sprintf("a token named %q exists already", d.New.Name)
			return u.showTokens(c, http.StatusConflict, d, "")
		}
		return u.fail(c, err)
	}
	apiserver.SetAuditDetail(c, fmt.Sprintf("token %s, role %s, expires %s", tok.Metadata.Name, tok.Spec.Role, d.New.Expires))
	return u.showTokens(c, http.StatusCreated, tokensData{Secret: api.FormatToken(tok.Metadata.Name, secret), SecretName: tok.Metadata.Name},
		"Token "+tok.Metadata.Name+" created.")
}

func (u *UI) getToken(c echo.Context) (*api.Token, error) {
	obj, err := u.st.Get(c.Request().Context(), "Token", c.Param("name"))
	if err != nil {
		return nil, err
	}
	return obj.(*api.Token), nil
}

func (u *UI) confirmRevokeToken(c echo.Context) error {
	t, err := u.getToken(c)
	if err != nil {
		return u.fail(c, err)
	}
	return u.render(c, http.StatusOK, "token-revoke", page{Title: "Revoke " + t.Metadata.Name, Nav: "tokens", Data: tokenRowOf(t, time.Now())})
}

// revokeToken deletes a token: every program using it is refused from
// the next request on.
func (u *UI) revokeToken(c echo.Context) error {
	t, err := u.getToken(c)
	if err != nil {
		return u.fail(c, err)
	}
	if _, err := u.st.Delete(c.Request().Context(), "Token", t.Metadata.Name, store.DeleteOptions{}); err != nil {
		return u.fail(c, err)
	}
	return c.Redirect(http.StatusSeeOther, Prefix+"/tokens?revoked="+url.QueryEscape(t.Metadata.Name))
}
