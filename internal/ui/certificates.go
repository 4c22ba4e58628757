package ui

import (
	"context"
	"net/http"
	"sort"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/labstack/echo/v4"
)

// certSoon is how close to its end a certificate is shown as needing
// attention: Control renews in the last third of a certificate's life
// (30 days of Let's Encrypt's 90), so one this close has failed to renew
// for a while.
const certSoon = 14 * 24 * time.Hour

// certRow is one Certificate as the certificates page and the dashboard
// show it.
type certRow struct {
	Name       string     `json:"name"`
	Hostname   string     `json:"hostname"`
	State      string     `json:"state"`
	Class      string     `json:"-"` // the CSS class of the state
	Reason     string     `json:"reason,omitempty"`
	Message    string     `json:"message,omitempty"`
	Issuer     string     `json:"issuer,omitempty"`
	NotAfter   *time.Time `json:"notAfter,omitempty"`
	RenewAfter *time.Time `json:"renewAfter,omitempty"`
	Failures   int        `json:"failures,omitempty"`
	// NextAttempt is when Control retries after a failure.
	NextAttempt *time.Time `json:"nextAttempt,omitempty"`
	// Attention: failing, pending, or expiring within certSoon.
	Attention bool `json:"attention"`
}

func certRowOf(c *api.Certificate, now time.Time) certRow {
	r := certRow{Name: c.Metadata.Name, Hostname: c.Spec.Hostname, State: c.Status.State, Issuer: c.Status.Issuer,
		NotAfter: c.Status.NotAfter, RenewAfter: c.Status.RenewAfter, Failures: c.Status.Failures, NextAttempt: c.Status.NextAttempt}
	if r.State == "" {
		r.State = api.CertificatePending
	}
	if cond := api.FindCondition(c.Status.Conditions, api.ConditionReady); cond != nil && cond.Status != api.ConditionTrue {
		r.Reason, r.Message = cond.Reason, cond.Message
	}
	switch r.State {
	case api.CertificateIssued:
		r.Class = "ready"
	case api.CertificateFailed:
		r.Class = "failed"
	default:
		r.Class = "pending"
	}
	soon := r.NotAfter != nil && r.NotAfter.Sub(now) < certSoon
	r.Attention = r.State != api.CertificateIssued || soon
	if soon && r.State == api.CertificateIssued {
		r.Class = "pending"
	}
	return r
}

func (u *UI) certRows(ctx context.Context) ([]certRow, error) {
	objs, _, err := u.st.List(ctx, "Certificate", api.Selector{})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	rows := make([]certRow, 0, len(objs))
	for _, o := range objs {
		rows = append(rows, certRowOf(o.(*api.Certificate), now))
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Hostname < rows[j].Hostname })
	return rows, nil
}

func (u *UI) certificates(c echo.Context) error {
	rows, err := u.certRows(c.Request().Context())
	if err != nil {
		return u.fail(c, err)
	}
	return u.render(c, http.StatusOK, "certificates", page{Title: "Certificates", Nav: "certificates", Data: rows})
}

// certificateEvents streams each certificate's row as it changes.
func (u *UI) certificateEvents(c echo.Context) error {
	return u.stream(c, u.rowSource(c, "Certificate", "certificates", func(o api.Object) (string, any) {
		return o.GetMeta().Name, certRowOf(o.(*api.Certificate), time.Now())
	}))
}
