package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kakuremichi/kakuremichi/api"
)

// Output formats of -o.
const (
	outTable = ""
	outWide  = "wide"
	outYAML  = "yaml"
	outJSON  = "json"
	outName  = "name"
)

func checkOutput(format string, allowed ...string) error {
	for _, a := range allowed {
		if format == a {
			return nil
		}
	}
	var names []string
	for _, a := range allowed {
		if a != "" {
			names = append(names, a)
		}
	}
	return usagef("-o %q is not one of %s", format, strings.Join(names, ", "))
}

// printObjects writes objects as YAML or JSON. In YAML, objects are
// documents separated by "---" lines (which apply -f and
// api.DecodeManifests read back). In JSON, one object asked for by name
// (single) is written as itself, anything else as a
// {"kind":"List","items":[...]} object.
func printObjects(w io.Writer, format string, objs []api.Object, single bool) error {
	switch format {
	case outYAML:
		for i, o := range objs {
			data, err := yaml.Marshal(o)
			if err != nil {
				return fmt.Errorf("encode %s: %w", ref(o), err)
			}
			if i > 0 {
				if _, err := io.WriteString(w, "---\n"); err != nil {
					return err
				}
			}
			if _, err := w.Write(data); err != nil {
				return err
			}
		}
		return nil
	case outJSON:
		var v any = struct {
			Kind  string       `json:"kind"`
			Items []api.Object `json:"items"`
		}{Kind: "List", Items: append([]api.Object{}, objs...)}
		if single && len(objs) == 1 {
			v = objs[0]
		}
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	case outName:
		for _, o := range objs {
			if _, err := fmt.Fprintln(w, ref(o)); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown output format %q", format)
}

// formatAge writes a duration the way a person glances at it: the largest
// whole unit only ("5s", "3m", "2h", "4d", "3y").
func formatAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d < 365*24*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	default:
		return fmt.Sprintf("%dy", int(d/(365*24*time.Hour)))
	}
}

func age(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return formatAge(now.Sub(t))
}

// readyColumn sums up the Ready condition: its status, or for False the
// reason too, "False (HostnameConflict)".
func readyColumn(obj api.Object) string {
	c := api.FindCondition(obj.GetStatus().Conditions, api.ConditionReady)
	switch {
	case c == nil:
		return "Unknown"
	case c.Status == api.ConditionTrue || c.Reason == "":
		return string(c.Status)
	default:
		return fmt.Sprintf("%s (%s)", c.Status, c.Reason)
	}
}

func readyReasonMessage(obj api.Object) (string, string) {
	c := api.FindCondition(obj.GetStatus().Conditions, api.ConditionReady)
	if c == nil {
		return "", ""
	}
	return c.Reason, c.Message
}

func boolColumn(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func labelsColumn(labels map[string]string) string {
	if len(labels) == 0 {
		return "<none>"
	}
	parts := make([]string, 0, len(labels))
	for _, k := range sortedKeys(labels) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// table is rows of text under a header.
type table struct {
	header []string
	rows   [][]string
}

// tableHeader returns the columns of a kind's table.
func tableHeader(k api.KindInfo, wide bool) []string {
	var h []string
	switch k.Kind {
	case "Tunnel":
		h = []string{"NAME", "HOSTNAME", "TARGET", "AGENT", "READY", "AGE"}
		if wide {
			h = append(h, "GATEWAYS", "ENABLED", "REASON", "MESSAGE", "LABELS")
		}
	case "Gateway":
		h = []string{"NAME", "ENDPOINT", "ADDRESS", "VERSION", "READY", "LAST-SEEN", "AGE"}
		if wide {
			h = append(h, "AGENTS", "ROUTES", "DATA-PATH", "PUBLIC KEY", "MESSAGE", "LABELS")
		}
	case "Agent":
		h = []string{"NAME", "ADDRESS", "VERSION", "CONNECTED", "READY", "LAST-SEEN", "AGE"}
		if wide {
			h = append(h, "GATEWAYS", "TARGETS", "PUBLIC KEY", "MESSAGE", "LABELS")
		}
	case "Token":
		h = []string{"NAME", "ROLE", "EXPIRES", "AGE"}
		if wide {
			h = append(h, "NODE", "DESCRIPTION", "LABELS")
		}
	case "Certificate":
		h = []string{"NAME", "HOSTNAME", "STATE", "NOT-AFTER", "SERIAL", "AGE"}
		if wide {
			h = append(h, "RENEW-AFTER", "ISSUER", "REASON", "MESSAGE", "LABELS")
		}
	case "APIKey":
		h = []string{"NAME", "ROLE", "USES", "EXPIRES", "AGE"}
		if wide {
			h = append(h, "LAST USED", "DESCRIPTION", "LABELS")
		}
	default:
		h = []string{"NAME", "READY", "AGE"}
		if wide {
			h = append(h, "LABELS")
		}
	}
	return h
}

// tableRow returns an object's row; name is what the NAME column shows.
func tableRow(obj api.Object, name string, wide bool, now time.Time) []string {
	m := obj.GetMeta()
	created := age(m.CreationTimestamp, now)
	reason, message := readyReasonMessage(obj)
	switch o := obj.(type) {
	case *api.Tunnel:
		host := o.Spec.Hostname
		if o.Spec.PublicPort != 0 {
			// A tcp tunnel is reached at its own port: show where.
			host = fmt.Sprintf("%s:%d", host, o.Spec.PublicPort)
		}
		r := []string{name, host, o.Spec.Target, o.Spec.Agent, readyColumn(o), created}
		if wide {
			r = append(r, servingColumn(o.Status.Gateways), boolColumn(o.Spec.IsEnabled()), orNone(reason), orNone(message), labelsColumn(m.Labels))
		}
		return r
	case *api.Gateway:
		ns := &o.Status.NodeStatus
		r := []string{name, orNone(o.Spec.PublicEndpoint), orNone(ns.OverlayAddress), orNone(ns.Version),
			readyColumn(o), lastSeen(ns.LastHeartbeat, now), created}
		if wide {
			r = append(r, probedColumn(o.Status.Agents, ns.Peers), fmt.Sprintf("%d", o.Status.Routes), orNone(ns.DataPath),
				orNone(o.Spec.PublicKey), orNone(message), labelsColumn(m.Labels))
		}
		return r
	case *api.Agent:
		ns := &o.Status.NodeStatus
		r := []string{name, orNone(ns.OverlayAddress), orNone(ns.Version), conditionStatus(o.Status.Conditions, api.NodeConnected),
			readyColumn(o), lastSeen(ns.LastHeartbeat, now), created}
		if wide {
			r = append(r, handshakesColumn(o.Status.Gateways, ns.Peers, now), reachableColumn(o.Status.Targets),
				orNone(o.Spec.PublicKey), orNone(message), labelsColumn(m.Labels))
		}
		return r
	case *api.Token:
		r := []string{name, string(o.Spec.Role), expiresColumn(o.Spec.ExpiresAt, now), created}
		if wide {
			r = append(r, orNone(o.Spec.Node), orNone(o.Spec.Description), labelsColumn(m.Labels))
		}
		return r
	case *api.Certificate:
		at := func(t *time.Time) string {
			if t == nil {
				return "<none>"
			}
			return t.UTC().Format(time.RFC3339)
		}
		r := []string{name, o.Spec.Hostname, orNone(o.Status.State), at(o.Status.NotAfter), orNone(o.Status.Serial), created}
		if wide {
			r = append(r, at(o.Status.RenewAfter), orNone(o.Status.Issuer), orNone(reason), orNone(message), labelsColumn(m.Labels))
		}
		return r
	case *api.APIKey:
		uses := fmt.Sprintf("%d", o.Status.Uses)
		if o.Spec.MaxUses > 0 {
			uses += fmt.Sprintf("/%d", o.Spec.MaxUses)
		}
		r := []string{name, string(o.Spec.Role), uses, expiresColumn(o.Spec.ExpiresAt, now), created}
		if wide {
			lastUsed := "never"
			if o.Status.LastUsed != nil {
				lastUsed = age(*o.Status.LastUsed, now) + " ago"
			}
			r = append(r, lastUsed, orNone(o.Spec.Description), labelsColumn(m.Labels))
		}
		return r
	default:
		r := []string{name, readyColumn(obj), created}
		if wide {
			r = append(r, labelsColumn(m.Labels))
		}
		return r
	}
}

// conditionStatus is a condition's status, Unknown when it is missing.
func conditionStatus(conds []api.Condition, typ string) string {
	if c := api.FindCondition(conds, typ); c != nil {
		return string(c.Status)
	}
	return string(api.ConditionUnknown)
}

// lastSeen says how long ago t was, "4s ago", or "never" for nil.
func lastSeen(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	return formatAge(now.Sub(*t)) + " ago"
}

// handshakeFresh is how old a peer's latest WireGuard handshake may be, as
// a node's status shows it, for the peer to count as connected. WireGuard
// renews a session every two minutes while packets flow (the agents'
// keepalives see to that) and rejects one older than three
// (Reject-After-Time); Control rewrites a status for newer handshake
// times alone once a minute, so a handshake shown older than four minutes
// means the path is down.
const handshakeFresh = 4 * time.Minute

// handshakeIsFresh reports whether a peer handshook within handshakeFresh
// of now; where the status shows no handshake times (a node of more than
// api.TimedPeers peers), whether Control found it connected.
func handshakeIsFresh(p api.NodePeerStatus, now time.Time) bool {
	if p.LastHandshake == nil || p.LastHandshake.IsZero() {
		return p.Connected
	}
	return now.Sub(*p.LastHandshake) <= handshakeFresh
}

// handshakesColumn counts a node's peers with a fresh handshake: "2/3".
// A status that sums its peers up (counts not nil) lists only those in
// trouble, so its counts say how many are connected, not the list.
func handshakesColumn(peers []api.NodePeerStatus, counts *api.PeerCounts, now time.Time) string {
	if counts != nil {
		return fmt.Sprintf("%d/%d", counts.Connected, counts.Total)
	}
	n := 0
	for _, p := range peers {
		if handshakeIsFresh(p, now) {
			n++
		}
	}
	return fmt.Sprintf("%d/%d", n, len(peers))
}

// probedColumn counts a gateway's peers whose probe answered: "1/2";
// from the counts when the status sums its peers up (see
// handshakesColumn).
func probedColumn(peers []api.NodePeerStatus, counts *api.PeerCounts) string {
	if counts != nil {
		return fmt.Sprintf("%d/%d", counts.Answered, counts.Total)
	}
	n := 0
	for _, p := range peers {
		if p.Probe == api.ProbeOK {
			n++
		}
	}
	return fmt.Sprintf("%d/%d", n, len(peers))
}

// reachableColumn counts the targets an agent reaches: "1/2".
func reachableColumn(targets []api.TargetStatus) string {
	n := 0
	for _, t := range targets {
		if t.Reachable {
			n++
		}
	}
	return fmt.Sprintf("%d/%d", n, len(targets))
}

// servingColumn counts the gateways serving a tunnel: "2/3".
func servingColumn(gateways []api.TunnelGatewayStatus) string {
	n := 0
	for _, g := range gateways {
		if g.Serving {
			n++
		}
	}
	return fmt.Sprintf("%d/%d", n, len(gateways))
}

func expiresColumn(at *time.Time, now time.Time) string {
	switch {
	case at == nil:
		return "never"
	case !at.After(now):
		return "expired"
	default:
		return "in " + formatAge(at.Sub(now))
	}
}

// buildTable makes a kind's table; with prefix, names read "tunnel/web".
func buildTable(k api.KindInfo, objs []api.Object, wide, prefix bool, now time.Time) table {
	sorted := append([]api.Object(nil), objs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].GetMeta().Name < sorted[j].GetMeta().Name })
	t := table{header: tableHeader(k, wide)}
	for _, o := range sorted {
		name := o.GetMeta().Name
		if prefix {
			name = ref(o)
		}
		t.rows = append(t.rows, tableRow(o, name, wide, now))
	}
	return t
}

// write prints the table aligned by text/tabwriter.
func (t table) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(cleanCells(t.header), "\t"))
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(cleanCells(r), "\t"))
	}
	return tw.Flush()
}

// widths returns each column's width as tabwriter lays the table out, so
// rows printed later (by get -w) line up under it.
func (t table) widths() []int {
	w := make([]int, len(t.header))
	for _, r := range append([][]string{t.header}, t.rows...) {
		for i, cell := range cleanCells(r) {
			if i < len(w) && len([]rune(cell)) > w[i] {
				w[i] = len([]rune(cell))
			}
		}
	}
	return w
}

// writeRow prints one row padded to widths, growing them if it must.
func writeRow(w io.Writer, row []string, widths []int) error {
	var b strings.Builder
	for i, cell := range cleanCells(row) {
		b.WriteString(cell)
		if i == len(row)-1 {
			break
		}
		n := len([]rune(cell))
		if i < len(widths) {
			if n > widths[i] {
				widths[i] = n
			}
			n = widths[i] - n
		} else {
			n = 0
		}
		b.WriteString(strings.Repeat(" ", n+3))
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// cleanCells keeps a cell on one line and out of tabwriter's way.
func cleanCells(r []string) []string {
	out := make([]string, len(r))
	for i, c := range r {
		out[i] = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, c)
	}
	return out
}
