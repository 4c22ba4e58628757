package ui

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

// gatewayRow is one gateway as the gateways page shows it.
type gatewayRow struct {
	Name      string    `json:"name"`
	Enabled   bool      `json:"enabled"`
	Online    bool      `json:"online"`
	Reason    string    `json:"reason,omitempty"`
	LastSeen  time.Time `json:"lastSeen,omitzero"`
	Endpoint  string    `json:"endpoint,omitempty"`
	Version   string    `json:"version,omitempty"`
	DataPath  string    `json:"dataPath,omitempty"`
	Routes    int       `json:"routes"`
	Agents    int       `json:"agents"`
	ManagedBy string    `json:"managedBy,omitempty"`
}

func gatewayRowOf(g *api.Gateway) gatewayRow {
	r := gatewayRow{Name: g.Metadata.Name, Enabled: g.Spec.Enabled == nil || *g.Spec.Enabled,
		Online: api.IsConditionTrue(g.Status.Conditions, api.NodeConnected), Endpoint: g.Spec.PublicEndpoint,
		Version: g.Status.Version, DataPath: g.Status.DataPath, Routes: g.Status.Routes, Agents: len(g.Status.Agents),
		ManagedBy: g.Metadata.Annotations[ManagedByAnnotation]}
	if g.Status.Peers != nil {
		// Beyond api.ListedPeers the status lists only the agents in
		// trouble and counts them all here.
		r.Agents = g.Status.Peers.Total
	}
	if c := api.FindCondition(g.Status.Conditions, api.NodeConnected); c != nil && !r.Online {
		r.Reason = c.Reason
	}
	if g.Status.LastHeartbeat != nil {
		r.LastSeen = *g.Status.LastHeartbeat
	}
	return r
}

func (u *UI) gatewayRows(c echo.Context) ([]gatewayRow, error) {
	objs, _, err := u.st.List(c.Request().Context(), "Gateway", api.Selector{})
	if err != nil {
		return nil, err
	}
	rows := make([]gatewayRow, 0, len(objs))
	for _, o := range objs {
		rows = append(rows, gatewayRowOf(o.(*api.Gateway)))
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows, nil
}

func (u *UI) gateways(c echo.Context) error {
	rows, err := u.gatewayRows(c)
	if err != nil {
		return u.fail(c, err)
	}
	flash := ""
	if w, n := c.QueryParam("flash"), c.QueryParam("name"); (w == "enabled" || w == "disabled") && api.ValidateName(n) == nil {
		flash = "Gateway " + n + " " + w + "."
	}
	return u.render(c, http.StatusOK, "gateways", page{Title: "Gateways", Nav: "gateways", Flash: flash, Data: rows})
}

// gatewayEvents streams each gateway's row as it changes (see live.go).
func (u *UI) gatewayEvents(c echo.Context) error {
	return u.stream(c, u.rowSource(c, "Gateway", "gateways", func(o api.Object) (string, any) {
		return o.GetMeta().Name, gatewayRowOf(o.(*api.Gateway))
	}))
}

func (u *UI) setGatewayEnabled(c echo.Context) error {
	obj, err := u.st.Get(c.Request().Context(), "Gateway", c.Param("name"))
	if err != nil {
		return u.fail(c, err)
	}
	g := api.Clone(obj.(*api.Gateway))
	if m := g.Metadata.Annotations[ManagedByAnnotation]; m != "" {
		return u.fail(c, api.NewStatusError(api.ReasonForbidden, "gateway %s is managed by %s; change it there", g.Metadata.Name, m))
	}
	enabled := c.FormValue("enabled") == "true"
	g.Spec.Enabled = &enabled
	if _, err := u.st.Update(c.Request().Context(), g, store.WriteOptions{}); err != nil {
		return u.fail(c, err)
	}
	word := "disabled"
	if enabled {
		word = "enabled"
	}
	return c.Redirect(http.StatusSeeOther, Prefix+"/gateways?flash="+word+"&name="+url.QueryEscape(g.Metadata.Name))
}

// dashboardData sums up the installation.
type dashboardData struct {
	AgentsOnline, AgentsOffline     int
	GatewaysOnline, GatewaysOffline int
	TunnelsReady                    int
	NotReady                        []tunnelRow
	CertsIssued                     int
	// CertsAttention are the certificates that fail, are still pending,
	// or expire within certSoon.
	CertsAttention []certRow
}

// summary reads what the dashboard shows.
func (u *UI) summary(ctx context.Context) (dashboardData, error) {
	var d dashboardData
	for kind, on := range map[string][2]*int{"Agent": {&d.AgentsOnline, &d.AgentsOffline}, "Gateway": {&d.GatewaysOnline, &d.GatewaysOffline}} {
		objs, _, err := u.st.List(ctx, kind, api.Selector{})
		if err != nil {
			return d, err
		}
		for _, o := range objs {
			var conds []api.Condition
			switch n := o.(type) {
			case *api.Agent:
				conds = n.Status.Conditions
			case *api.Gateway:
				conds = n.Status.Conditions
			}
			if api.IsConditionTrue(conds, api.NodeConnected) {
				*on[0]++
			} else {
				*on[1]++
			}
		}
	}
	objs, _, err := u.st.List(ctx, "Tunnel", api.Selector{})
	if err != nil {
		return d, err
	}
	for _, o := range objs {
		r := rowOf(o.(*api.Tunnel))
		switch r.State {
		case "ready":
			d.TunnelsReady++
		case "pending":
			d.NotReady = append(d.NotReady, r)
		}
	}
	sort.Slice(d.NotReady, func(i, j int) bool { return d.NotReady[i].Name < d.NotReady[j].Name })
	certs, err := u.certRows(ctx)
	if err != nil {
		return d, err
	}
	for _, r := range certs {
		if r.State == api.CertificateIssued {
			d.CertsIssued++
		}
		if r.Attention {
			d.CertsAttention = append(d.CertsAttention, r)
		}
	}
	return d, nil
}

func (u *UI) dashboard(c echo.Context) error {
	d, err := u.summary(c.Request().Context())
	if err != nil {
		return u.fail(c, err)
	}
	return u.render(c, http.StatusOK, "dashboard", page{Title: "Dashboard", Nav: "dashboard", Data: d})
}

// dashboardEvents sends the dashboard's summary again after each burst
// of changes to what it counts (see live.go).
func (u *UI) dashboardEvents(c echo.Context) error {
	p := u.fill(c, page{})
	return u.stream(c, liveSource{
		Kinds:    []string{"Agent", "Gateway", "Tunnel", "Certificate"},
		Coalesce: 300 * time.Millisecond,
		Snapshot: func(ctx context.Context, out *sse) error {
			d, err := u.summary(ctx)
			if err != nil {
				return err
			}
			p.Data = d
			html, err := u.fragment("dashboard", "summary", p)
			if err != nil {
				return err
			}
			return out.send("replace", map[string]any{"html": html, "summary": d})
		},
	})
}
