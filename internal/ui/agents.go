package ui

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/credential"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

// agentRow is one agent as the agents page shows it.
type agentRow struct {
	Name     string    `json:"name"`
	Online   bool      `json:"online"`
	Reason   string    `json:"reason,omitempty"`
	LastSeen time.Time `json:"lastSeen,omitzero"`
	Version  string    `json:"version,omitempty"`
	Address  string    `json:"address,omitempty"`
	// Gateways names the agent's gateways when its status lists them
	// all. Beyond api.ListedPeers the status lists only those not
	// connected, and GatewayCounts sums them up instead.
	Gateways      []string        `json:"gateways,omitempty"`
	GatewayCounts *api.PeerCounts `json:"gatewayCounts,omitempty"`
}

func agentRowOf(a *api.Agent) agentRow {
	r := agentRow{Name: a.Metadata.Name, Online: api.IsConditionTrue(a.Status.Conditions, api.NodeConnected),
		Version: a.Status.Version, Address: a.Status.OverlayAddress}
	if cond := api.FindCondition(a.Status.Conditions, api.NodeConnected); cond != nil && !r.Online {
		r.Reason = cond.Reason
	}
	if a.Status.LastHeartbeat != nil {
		r.LastSeen = *a.Status.LastHeartbeat
	}
	if a.Status.Peers != nil {
		// The few gateways listed would read as all the agent has.
		c := *a.Status.Peers
		r.GatewayCounts = &c
		return r
	}
	for _, g := range a.Status.Gateways {
		r.Gateways = append(r.Gateways, g.Name)
	}
	return r
}

func (u *UI) agents(c echo.Context) error {
	objs, _, err := u.st.List(c.Request().Context(), "Agent", api.Selector{})
	if err != nil {
		return u.fail(c, err)
	}
	rows := make([]agentRow, 0, len(objs))
	for _, o := range objs {
		rows = append(rows, agentRowOf(o.(*api.Agent)))
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return u.render(c, http.StatusOK, "agents", page{Title: "Agents", Nav: "agents", Data: rows})
}

// agentEvents streams each agent's row as it changes: online, offline,
// last seen (see live.go).
func (u *UI) agentEvents(c echo.Context) error {
	return u.stream(c, u.rowSource(c, "Agent", "agents", func(o api.Object) (string, any) {
		return o.GetMeta().Name, agentRowOf(o.(*api.Agent))
	}))
}

// addAgentForm asks for the agent's name and makes its enrolment key.
type addAgentForm struct {
	Name   string
	Errors map[string]string
	// Set once the key exists: shown once, never again.
	Key, ControlURL, Image string
}

func (u *UI) addAgentPage(c echo.Context) error {
	return u.render(c, http.StatusOK, "agent-add", page{Title: "Add an agent", Nav: "agents", Data: addAgentForm{}})
}

// controlURL is the address agents should dial: the one the browser used,
// which is how people reach Control, unless configured.
func (u *UI) controlURL(c echo.Context) string {
	if u.publicURL != "" {
		return u.publicURL
	}
	scheme := "http"
	if c.Request().TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + c.Request().Host
}

// addAgent creates a single-use agent API key named after the agent and
// shows it with the commands that start the agent. The key is in this
// one response only; the store keeps its hash.
func (u *UI) addAgent(c echo.Context) error {
	f := addAgentForm{Name: strings.TrimSpace(c.FormValue("name")), Errors: map[string]string{}}
	var nameErrs api.ErrorList
	if errors.As(api.ValidateName(f.Name), &nameErrs) {
		f.Errors["name"] = nameErrs[0].Detail
		return u.render(c, http.StatusUnprocessableEntity, "agent-add", page{Title: "Add an agent", Nav: "agents", Data: f})
	}
	secret, err := credential.NewSecret()
	if err != nil {
		return u.fail(c, err)
	}
	key := &api.APIKey{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "APIKey"},
		Metadata: api.ObjectMeta{Name: f.Name},
		Spec: api.APIKeySpec{Role: api.RoleAgent, MaxUses: 1, SecretHash: credential.Hash(secret),
			Description: fmt.Sprintf("enrols agent %s; made in the web UI by %s", f.Name, sessionOf(c).User)}}
	if _, err := u.st.Create(c.Request().Context(), key, store.WriteOptions{}); err != nil {
		if errors.Is(err, api.ErrAlreadyExists) {
			f.Errors["name"] = fmt.Sprintf("an API key named %q exists already; choose another name", f.Name)
			return u.render(c, http.StatusConflict, "agent-add", page{Title: "Add an agent", Nav: "agents", Data: f})
		}
		return u.fail(c, err)
	}
	f.Key, f.ControlURL, f.Image = api.FormatAPIKey(f.Name, secret), u.controlURL(c), u.agentImage
	return u.render(c, http.StatusCreated, "agent-add", page{Title: "Add an agent", Nav: "agents", Data: f})
}
