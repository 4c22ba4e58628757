package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
)

// authCall makes one request to Control's /auth endpoints with the
// configured token and returns the body of an answer with status want.
func (c *cli) authCall(ctx context.Context, op, method, path string, body any, want int) ([]byte, error) {
	cfg, err := c.connection()
	if err != nil {
		return nil, err
	}
	hc, err := rawHTTPClient(cfg.CAFile, cfg.InsecureSkipVerify)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer hc.CloseIdleConnections()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(cfg.Server, "/")+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+cfg.Token)
	req.Header.Set("User-Agent", "kakuremichictl")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode != want {
		return nil, statusError(op, resp, data)
	}
	return data, nil
}

// runRegistration shows or sets who may sign up in the web UI (admins).
func runRegistration(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlagSet("registration")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	var body any
	method, want := http.MethodGet, http.StatusOK
	switch {
	case len(pos) == 0:
	case len(pos) == 1 && (pos[0] == "open" || pos[0] == "invite"):
		body, method = map[string]bool{"openRegistration": pos[0] == "open"}, http.MethodPut
	default:
		return usagef("registration takes nothing (show), open, or invite")
	}
	data, err := c.authCall(ctx, "registration", method, "/auth/settings", body, want)
	if err != nil {
		return err
	}
	var st struct {
		OpenRegistration bool      `json:"openRegistration"`
		UpdatedBy        string    `json:"updatedBy"`
		UpdatedAt        time.Time `json:"updatedAt"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("registration: decode the answer: %w", err)
	}
	if st.OpenRegistration {
		fmt.Fprint(c.stdout, "open: anyone who reaches the web UI may sign up, as a viewer")
	} else {
		fmt.Fprint(c.stdout, "invite: only people with an invite link may sign up")
	}
	if st.UpdatedBy != "" {
		fmt.Fprintf(c.stdout, " (set by %s at %s)", st.UpdatedBy, st.UpdatedAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(c.stdout)
	return nil
}

// runInvite makes, lists or revokes invites to sign up (admins).
func runInvite(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlagSet("invite")
	role := fs.String("role", "", "the role the invited person gets: admin, editor or viewer")
	ttl := fs.String("ttl", "", "how long the invite works, such as 72h (default 7 days, at most 30)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 0:
		if *role == "" {
			return usagef("invite needs --role admin|editor|viewer (or: invite list, invite revoke ID)")
		}
		data, err := c.authCall(ctx, "invite", http.MethodPost, "/auth/invites", map[string]string{"role": *role, "ttl": *ttl}, http.StatusCreated)
		if err != nil {
			return err
		}
		var inv struct {
			ID         string    `json:"id"`
			Role       string    `json:"role"`
			ExpiresAt  time.Time `json:"expiresAt"`
			SignupPath string    `json:"signupPath"`
		}
		if err := json.Unmarshal(data, &inv); err != nil {
			return fmt.Errorf("invite: decode the answer: %w", err)
		}
		cfg, _ := c.connection()
		fmt.Fprintln(c.stdout, strings.TrimSuffix(cfg.Server, "/")+inv.SignupPath)
		fmt.Fprintf(c.stderr, "invite %s: one sign-up as %s until %s; the link is shown only this once\n",
			inv.ID, inv.Role, inv.ExpiresAt.UTC().Format(time.RFC3339))
		return nil
	case len(pos) == 1 && pos[0] == "list":
		data, err := c.authCall(ctx, "invite list", http.MethodGet, "/auth/invites", nil, http.StatusOK)
		if err != nil {
			return err
		}
		var list struct {
			Items []struct {
				ID        string    `json:"id"`
				Role      string    `json:"role"`
				CreatedBy string    `json:"createdBy"`
				ExpiresAt time.Time `json:"expiresAt"`
			} `json:"items"`
		}
		if err := json.Unmarshal(data, &list); err != nil {
			return fmt.Errorf("invite list: decode the answer: %w", err)
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 3, ' ', 0)
		fmt.Fprintln(tw, "ID\tROLE\tMADE BY\tEXPIRES")
		for _, i := range list.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", i.ID, i.Role, i.CreatedBy, i.ExpiresAt.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	case len(pos) == 2 && pos[0] == "revoke":
		if _, err := c.authCall(ctx, "invite revoke", http.MethodDelete, "/auth/invites/"+pos[1], nil, http.StatusNoContent); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "invite %s revoked\n", pos[1])
		return nil
	}
	return usagef("invite takes --role ROLE [--ttl 72h], or list, or revoke ID")
}
