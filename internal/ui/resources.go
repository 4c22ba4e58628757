package ui

import (
	"net/http"
	"sort"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
	"sigs.k8s.io/yaml"
)

// yamlKinds are the kinds whose YAML the UI shows: those without secrets.
var yamlKinds = map[string]string{"tunnels": "Tunnel", "agents": "Agent", "gateways": "Gateway", "certificates": "Certificate"}

// yamlView is one object as the manifest a GitOps repository would hold,
// with its status.
type yamlView struct {
	Kind, Name, YAML, Back string
}

func (u *UI) objectYAML(c echo.Context) error {
	kind, ok := yamlKinds[c.Param("plural")]
	if !ok {
		return u.fail(c, api.NewStatusError(api.ReasonNotFound, "the UI shows YAML of tunnels, agents, gateways and certificates only"))
	}
	obj, err := u.st.Get(c.Request().Context(), kind, c.Param("name"))
	if err != nil {
		return u.fail(c, err)
	}
	data, err := yaml.Marshal(obj)
	if err != nil {
		return u.fail(c, err)
	}
	v := yamlView{Kind: kind, Name: obj.GetMeta().Name, YAML: string(data), Back: Prefix + "/" + c.Param("plural")}
	return u.render(c, http.StatusOK, "yaml", page{Title: kind + " " + v.Name, Nav: c.Param("plural"), Data: v})
}

// apiKeyRow is one API key, without its hash.
type apiKeyRow struct {
	Name, Role, Description string
	Uses, MaxUses           int64
	LastUsed, ExpiresAt     *time.Time
	Expired                 bool
}

func (u *UI) apiKeys(c echo.Context) error {
	objs, _, err := u.st.List(c.Request().Context(), "APIKey", api.Selector{})
	if err != nil {
		return u.fail(c, err)
	}
	rows := make([]apiKeyRow, 0, len(objs))
	for _, o := range objs {
		k := o.(*api.APIKey)
		rows = append(rows, apiKeyRow{Name: k.Metadata.Name, Role: string(k.Spec.Role), Description: k.Spec.Description,
			Uses: k.Status.Uses, MaxUses: k.Spec.MaxUses, LastUsed: k.Status.LastUsed, ExpiresAt: k.Spec.ExpiresAt,
			Expired: k.Spec.ExpiresAt != nil && time.Now().After(*k.Spec.ExpiresAt)})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	flash := ""
	if n := c.QueryParam("revoked"); n != "" && api.ValidateName(n) == nil {
		flash = "API key " + n + " revoked."
	}
	return u.render(c, http.StatusOK, "apikeys", page{Title: "API keys", Nav: "apikeys", Flash: flash, Data: rows})
}

// revokeAPIKey deletes a key; nodes it enrolled keep their own
// credentials, so revoking only stops new enrolments.
func (u *UI) revokeAPIKey(c echo.Context) error {
	name := c.Param("name")
	if _, err := u.st.Delete(c.Request().Context(), "APIKey", name, store.DeleteOptions{}); err != nil {
		return u.fail(c, err)
	}
	return c.Redirect(http.StatusSeeOther, Prefix+"/apikeys?revoked="+name)
}
