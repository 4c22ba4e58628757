package ui

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

// tunnelRow is one tunnel as the list and the event stream show it.
type tunnelRow struct {
	Name      string `json:"name"`
	Hostname  string `json:"hostname"`
	Agent     string `json:"agent"`
	Target    string `json:"target"`
	Enabled   bool   `json:"enabled"`
	State     string `json:"state"` // ready, pending, disabled
	Reason    string `json:"reason"`
	Message   string `json:"message"`
	ManagedBy string `json:"managedBy,omitempty"`
}

func rowOf(t *api.Tunnel) tunnelRow {
	r := tunnelRow{Name: t.Metadata.Name, Hostname: t.Spec.Hostname, Agent: t.Spec.Agent, Target: t.Spec.Target,
		Enabled: t.Spec.Enabled == nil || *t.Spec.Enabled, ManagedBy: t.Metadata.Annotations[ManagedByAnnotation]}
	ready := api.FindCondition(t.Status.Conditions, api.ConditionReady)
	switch {
	case !r.Enabled:
		r.State, r.Reason = "disabled", api.ReasonDisabled
	case ready != nil && ready.Status == api.ConditionTrue:
		r.State, r.Reason = "ready", ready.Reason
	case ready != nil:
		r.State, r.Reason, r.Message = "pending", ready.Reason, ready.Message
	default:
		r.State, r.Reason, r.Message = "pending", "Pending", "Control has not looked at this tunnel yet."
	}
	return r
}

func (u *UI) tunnels(c echo.Context) error {
	objs, _, err := u.st.List(c.Request().Context(), "Tunnel", api.Selector{})
	if err != nil {
		return u.fail(c, err)
	}
	rows := make([]tunnelRow, 0, len(objs))
	for _, o := range objs {
		rows = append(rows, rowOf(o.(*api.Tunnel)))
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return u.render(c, http.StatusOK, "tunnels", page{Title: "Tunnels", Nav: "tunnels", Flash: flashOf(c), Data: rows})
}

// tunnelEvents streams each change of a tunnel as a "row" event (see
// live.go), so the list updates without a reload.
func (u *UI) tunnelEvents(c echo.Context) error {
	return u.stream(c, u.rowSource(c, "Tunnel", "tunnels", func(o api.Object) (string, any) {
		return o.GetMeta().Name, rowOf(o.(*api.Tunnel))
	}))
}

// tunnelForm is the create and edit form with its field errors.
type tunnelForm struct {
	New        bool
	Name       string
	Hostname   string
	Agent      string
	Target     string
	PublicPort string
	Insecure   bool
	Redirect   bool
	Enabled    bool
	Agents     []string
	ManagedBy  string
	ReadOnly   bool
	Row        tunnelRow
	Errors     map[string]string
	Other      []string // errors of fields the form does not show
	Conditions []api.Condition
	// ResourceVersion is the version the form was made from.
	ResourceVersion string
}

func (u *UI) agentNames(c echo.Context) ([]string, error) {
	objs, _, err := u.st.List(c.Request().Context(), "Agent", api.Selector{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.GetMeta().Name)
	}
	sort.Strings(names)
	return names, nil
}

func (u *UI) showForm(c echo.Context, code int, f tunnelForm) error {
	agents, err := u.agentNames(c)
	if err != nil {
		return u.fail(c, err)
	}
	f.Agents = agents
	f.ReadOnly = f.ManagedBy != "" || !(roleRank[sessionOf(c).Role] >= roleRank[api.RoleEditor])
	title := "New tunnel"
	if !f.New {
		title = "Tunnel " + f.Name
	}
	return u.render(c, code, "tunnel", page{Title: title, Nav: "tunnels", Flash: flashOf(c), Data: f})
}

func (u *UI) newTunnel(c echo.Context) error {
	return u.showForm(c, http.StatusOK, tunnelForm{New: true, Enabled: true, Redirect: true, Target: "http://"})
}

func formOf(t *api.Tunnel) tunnelForm {
	f := tunnelForm{Name: t.Metadata.Name, Hostname: t.Spec.Hostname, Agent: t.Spec.Agent, Target: t.Spec.Target,
		Insecure: t.Spec.InsecureSkipVerify, Redirect: t.RedirectsHTTP(), Enabled: t.Spec.Enabled == nil || *t.Spec.Enabled,
		ManagedBy: t.Metadata.Annotations[ManagedByAnnotation], Row: rowOf(t), Conditions: t.Status.Conditions,
		ResourceVersion: t.Metadata.ResourceVersion}
	if t.Spec.PublicPort != 0 {
		f.PublicPort = strconv.Itoa(t.Spec.PublicPort)
	}
	return f
}

func (u *UI) getTunnel(c echo.Context) (*api.Tunnel, error) {
	obj, err := u.st.Get(c.Request().Context(), "Tunnel", c.Param("name"))
	if err != nil {
		return nil, err
	}
	return obj.(*api.Tunnel), nil
}

func (u *UI) tunnel(c echo.Context) error {
	t, err := u.getTunnel(c)
	if err != nil {
		return u.fail(c, err)
	}
	return u.showForm(c, http.StatusOK, formOf(t))
}

// readForm copies the posted fields into f and t's spec.
func readForm(c echo.Context, f *tunnelForm, t *api.Tunnel) {
	f.Hostname = strings.TrimSpace(c.FormValue("hostname"))
	f.Agent = strings.TrimSpace(c.FormValue("agent"))
	f.Target = strings.TrimSpace(c.FormValue("target"))
	f.PublicPort = strings.TrimSpace(c.FormValue("publicPort"))
	f.Insecure = c.FormValue("insecureSkipVerify") == "on"
	f.Redirect = c.FormValue("httpRedirect") == "on"
	f.Enabled = c.FormValue("enabled") == "on"
	// The redirect is written only when it changes, so that a tunnel left
	// on the default (or on the older annotation) stays as it was stored;
	// a tcp tunnel has none.
	switch redirect := f.Redirect; {
	case strings.HasPrefix(f.Target, "tcp://"):
		t.Spec.HTTPRedirect = nil
	case redirect != t.RedirectsHTTP():
		t.Spec.HTTPRedirect = &redirect
	}
	t.Spec.Hostname, t.Spec.Agent, t.Spec.Target, t.Spec.InsecureSkipVerify = f.Hostname, f.Agent, f.Target, f.Insecure
	enabled := f.Enabled
	t.Spec.Enabled = &enabled
	t.Spec.PublicPort = 0
	if f.PublicPort != "" {
		if n, err := strconv.Atoi(f.PublicPort); err == nil {
			t.Spec.PublicPort = n
		} else {
			t.Spec.PublicPort = -1 // validation names the field
		}
	}
}

// fieldOf maps an API field path to the form field it came from.
var fieldOf = map[string]string{"metadata.name": "name", "spec.hostname": "hostname", "spec.agent": "agent",
	"spec.target": "target", "spec.publicPort": "publicPort", "spec.insecureSkipVerify": "insecureSkipVerify",
	"spec.httpRedirect": "httpRedirect"}

// saveFailed shows the form again with each validation error next to its
// field; other failures become an error page.
func (u *UI) saveFailed(c echo.Context, f tunnelForm, err error) error {
	var fe api.ErrorList
	if !errors.As(err, &fe) {
		if errors.Is(err, api.ErrAlreadyExists) {
			fe = api.ErrorList{{Field: "metadata.name", Detail: fmt.Sprintf("a tunnel named %q exists already", f.Name)}}
		} else if errors.Is(err, api.ErrConflict) {
			f.Other = append(f.Other, "Someone changed this tunnel meanwhile; reload it and make your change again.")
			return u.showForm(c, http.StatusConflict, f)
		} else {
			return u.fail(c, err)
		}
	}
	f.Errors = map[string]string{}
	for _, e := range fe {
		if name, ok := fieldOf[e.Field]; ok {
			f.Errors[name] = e.Detail
		} else {
			f.Other = append(f.Other, e.Error())
		}
	}
	return u.showForm(c, http.StatusUnprocessableEntity, f)
}

func (u *UI) createTunnel(c echo.Context) error {
	f := tunnelForm{New: true, Name: strings.TrimSpace(c.FormValue("name"))}
	t := &api.Tunnel{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tunnel"}, Metadata: api.ObjectMeta{Name: f.Name}}
	readForm(c, &f, t)
	if _, err := u.st.Create(c.Request().Context(), t, store.WriteOptions{}); err != nil {
		return u.saveFailed(c, f, err)
	}
	return c.Redirect(http.StatusSeeOther, Prefix+"/tunnels?flash=created&name="+url.QueryEscape(f.Name))
}

// editable refuses changes to objects a GitOps repository manages.
func editable(t *api.Tunnel) error {
	if m := t.Metadata.Annotations[ManagedByAnnotation]; m != "" {
		return api.NewStatusError(api.ReasonForbidden, "tunnel %s is managed by %s; change it there", t.Metadata.Name, m)
	}
	return nil
}

func (u *UI) updateTunnel(c echo.Context) error {
	cur, err := u.getTunnel(c)
	if err != nil {
		return u.fail(c, err)
	}
	if err := editable(cur); err != nil {
		return u.fail(c, err)
	}
	t := api.Clone(cur)
	// The form carries the version it was made from, so an edit over
	// someone else's change is refused, not silently merged.
	t.Metadata.ResourceVersion = c.FormValue("resourceVersion")
	f := formOf(cur)
	readForm(c, &f, t)
	if _, err := u.st.Update(c.Request().Context(), t, store.WriteOptions{}); err != nil {
		return u.saveFailed(c, f, err)
	}
	return c.Redirect(http.StatusSeeOther, Prefix+"/tunnels?flash=saved&name="+url.QueryEscape(t.Metadata.Name))
}

func (u *UI) setEnabled(c echo.Context) error {
	cur, err := u.getTunnel(c)
	if err != nil {
		return u.fail(c, err)
	}
	if err := editable(cur); err != nil {
		return u.fail(c, err)
	}
	t := api.Clone(cur)
	enabled := c.FormValue("enabled") == "true"
	t.Spec.Enabled = &enabled
	if _, err := u.st.Update(c.Request().Context(), t, store.WriteOptions{}); err != nil {
		return u.fail(c, err)
	}
	word := "disabled"
	if enabled {
		word = "enabled"
	}
	return c.Redirect(http.StatusSeeOther, Prefix+"/tunnels?flash="+word+"&name="+url.QueryEscape(t.Metadata.Name))
}

func (u *UI) confirmDelete(c echo.Context) error {
	t, err := u.getTunnel(c)
	if err != nil {
		return u.fail(c, err)
	}
	if err := editable(t); err != nil {
		return u.fail(c, err)
	}
	return u.render(c, http.StatusOK, "delete", page{Title: "Delete " + t.Metadata.Name, Nav: "tunnels", Data: rowOf(t)})
}

func (u *UI) deleteTunnel(c echo.Context) error {
	t, err := u.getTunnel(c)
	if err != nil {
		return u.fail(c, err)
	}
	if err := editable(t); err != nil {
		return u.fail(c, err)
	}
	if _, err := u.st.Delete(c.Request().Context(), "Tunnel", t.Metadata.Name, store.DeleteOptions{}); err != nil {
		return u.fail(c, err)
	}
	return c.Redirect(http.StatusSeeOther, Prefix+"/tunnels?flash=deleted&name="+url.QueryEscape(t.Metadata.Name))
}

// flashOf turns the flash query of a redirect after a change into its
// sentence. Only known words and valid names are shown, so a crafted link
// cannot put words of its own on our page.
func flashOf(c echo.Context) string {
	what, name := c.QueryParam("flash"), c.QueryParam("name")
	switch what {
	case "created", "saved", "enabled", "disabled", "deleted":
	default:
		return ""
	}
	if api.ValidateName(name) != nil {
		return ""
	}
	return "Tunnel " + name + " " + what + "."
}
