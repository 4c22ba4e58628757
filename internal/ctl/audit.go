package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"text/tabwriter"
	"time"
)

// auditEntry is one line of GET /auth/audit.
type auditEntry struct {
	Time   time.Time `json:"time"`
	User   string    `json:"user"`
	Role   string    `json:"role"`
	Method string    `json:"method"`
	Path   string    `json:"path"`
	Status int       `json:"status"`
	Addr   string    `json:"addr"`
	Detail string    `json:"detail,omitempty"`
}

// runAudit prints the latest changes from the audit log (admins only).
func runAudit(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlagSet("audit")
	limit := fs.Int("limit", 50, "how many changes to show, newest first (at most 10000)")
	output := fs.String("o", "", "output: empty for a table, or json")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("audit takes no arguments")
	}
	if *limit < 1 || *limit > 10000 {
		return usagef("--limit must be from 1 to 10000")
	}
	if *output != "" && *output != "json" {
		return usagef("-o %q: use json, or nothing for a table", *output)
	}
	data, err := c.authCall(ctx, "audit", http.MethodGet, "/auth/audit?limit="+strconv.Itoa(*limit), nil, http.StatusOK)
	if err != nil {
		return err
	}
	var list struct {
		Items []auditEntry `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return fmt.Errorf("audit: decode the answer: %w", err)
	}
	if *output == "json" {
		out, _ := json.MarshalIndent(list.Items, "", "  ")
		fmt.Fprintln(c.stdout, string(out))
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "TIME\tUSER\tROLE\tREQUEST\tSTATUS\tFROM\tDETAIL")
	for _, e := range list.Items {
		user, role := e.User, e.Role
		if user == "" {
			user = "-"
		}
		if role == "" {
			role = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%d\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), user, role, e.Method, e.Path, e.Status, e.Addr, e.Detail)
	}
	return tw.Flush()
}
