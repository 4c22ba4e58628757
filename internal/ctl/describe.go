package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/client"
)

func runDescribe(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlagSet("describe")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return usagef("describe needs a KIND and a NAME")
	}
	k, err := parseKind(pos[0])
	if err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var problems lineErrors
	// An agent's data path is judged by the gateways that probe it, so
	// describing agents reads the gateways too, once for all names.
	var gateways *gatewayProbes
	printed := 0
	for _, name := range pos[1:] {
		obj, err := cl.Get(ctx, k.Plural, name)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		var extra describeExtra
		if _, isAgent := obj.(*api.Agent); isAgent {
			if gateways == nil {
				gateways = &gatewayProbes{}
				gateways.objs, _, gateways.err = cl.List(ctx, "gateways", client.ListOptions{})
				if gateways.err != nil {
					problems = append(problems, fmt.Sprintf("read the gateways' probes of agents: %v", gateways.err))
				}
			}
			if gateways.err == nil {
				extra.probes = gateways.of(name)
			}
		}
		if printed > 0 {
			fmt.Fprintln(c.stdout)
		}
		printed++
		if err := describe(c.stdout, obj, c.now(), extra); err != nil {
			return err
		}
	}
	if len(problems) > 0 {
		return problems
	}
	return nil
}

// gatewayProbes are the gateways as listed once by describe, or the
// error listing them.
type gatewayProbes struct {
	objs []api.Object
	err  error
}

// probeUnknown is a probe describe cannot tell, as the PROBE column shows
// it.
const probeUnknown = "<unknown>"

// probeUnlisted stands, in what gatewayProbes.of returns, for an agent a
// gateway summing its peers up does not list. It is no probe report a
// gateway can make (those are "", api.ProbeOK or "failed: ...").
const probeUnlisted = "\x00unlisted"

// probeOfUnlisted resolves probeUnlisted on the row of an agent's peer p:
// the gateway has the agent as a peer, and so its probe answered, when
// the agent shows a session with it (a session needs both ends); else
// the gateway's status cannot tell.
func probeOfUnlisted(p api.NodePeerStatus, now time.Time) string {
	if handshakeIsFresh(p, now) {
		return api.ProbeOK
	}
	return probeUnknown
}

// of returns what each gateway reports of probing an agent, by gateway
// name; gateways that do not list the agent as a peer are left out.
//
// A gateway whose status sums its peers up lists only those in trouble:
// an agent it does not list answered its probe, or is no peer of the
// gateway. of says probeUnlisted, which the agent's own row resolves
// (probeOfUnlisted).
func (g *gatewayProbes) of(agent string) map[string]string {
	out := map[string]string{}
	for _, obj := range g.objs {
		gw, ok := obj.(*api.Gateway)
		if !ok {
			continue
		}
		listed := false
		for _, p := range gw.Status.Agents {
			if p.Name == agent {
				out[gw.Metadata.Name] = p.Probe
				listed = true
				break
			}
		}
		if !listed && gw.Status.Peers != nil {
			out[gw.Metadata.Name] = probeUnlisted
		}
	}
	return out
}

// describeExtra is what describe shows of an object beyond the object
// itself.
type describeExtra struct {
	// probes are, for an agent, what each gateway reports of probing it,
	// by gateway name. Nil when they could not be read: the PROBE column
	// then says <unknown> (probeUnknown).
	probes map[string]string
}

// describe writes an object for a person: metadata, what the status says,
// spec, the status's tables (peers, targets, gateways) and conditions.
func describe(w io.Writer, obj api.Object, now time.Time, extra describeExtra) error {
	m := obj.GetMeta()
	st := obj.GetStatus()
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	field := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	field("Name", m.Name)
	field("Kind", obj.GetTypeMeta().Kind)
	field("Labels", labelsColumn(m.Labels))
	field("Annotations", labelsColumn(m.Annotations))
	if m.CreationTimestamp.IsZero() {
		field("Created", "<unknown>")
	} else {
		field("Created", fmt.Sprintf("%s (%s ago)", m.CreationTimestamp.UTC().Format(time.RFC3339), age(m.CreationTimestamp, now)))
	}
	gen := fmt.Sprintf("%d", m.Generation)
	switch {
	case st.ObservedGeneration == 0:
		gen += " (not observed by Control yet)"
	case st.ObservedGeneration < m.Generation:
		gen += fmt.Sprintf(" (status describes generation %d: Control has not caught up)", st.ObservedGeneration)
	default:
		gen += fmt.Sprintf(" (observed %d)", st.ObservedGeneration)
	}
	field("Generation", gen)
	if m.DeletionTimestamp != nil {
		field("Deleting", fmt.Sprintf("since %s, waiting for finalizers", m.DeletionTimestamp.UTC().Format(time.RFC3339)))
	}
	if len(m.Finalizers) > 0 {
		field("Finalizers", strings.Join(m.Finalizers, ", "))
	}
	for _, o := range m.OwnerReferences {
		field("Owned by", fmt.Sprintf("%s/%s", strings.ToLower(o.Kind), o.Name))
	}
	for _, line := range statusSummary(obj, now) {
		field(line[0], line[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	spec, err := specYAML(obj)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "Spec:")
	for _, line := range splitLines(spec) {
		fmt.Fprintf(w, "  %s\n", line)
	}

	for _, sec := range statusTables(obj, now, extra) {
		if err := sec.write(w); err != nil {
			return err
		}
	}
	conds := section{title: "Conditions", header: []string{"TYPE", "STATUS", "REASON", "AGE", "MESSAGE"}}
	for _, cond := range st.Conditions {
		conds.rows = append(conds.rows, []string{cond.Type, string(cond.Status), orNone(cond.Reason),
			age(cond.LastTransitionTime, now), cond.Message})
	}
	return conds.write(w)
}

// section is a titled table of describe's, indented under its title.
type section struct {
	title string
	// note, when set, is a line under the title that says what the rows
	// are, shown even when there are none.
	note   string
	header []string
	rows   [][]string
}

// write prints the section, or "Title:  <none>" when it has no rows and
// no note.
func (s section) write(w io.Writer) error {
	if len(s.rows) == 0 && s.note == "" {
		_, err := fmt.Fprintf(w, "%s:  <none>\n", s.title)
		return err
	}
	if _, err := fmt.Fprintf(w, "%s:\n", s.title); err != nil {
		return err
	}
	if s.note != "" {
		if _, err := fmt.Fprintf(w, "  %s\n", s.note); err != nil {
			return err
		}
	}
	if len(s.rows) == 0 {
		return nil
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "  %s\n", strings.Join(cleanCells(s.header), "\t"))
	for _, r := range s.rows {
		fmt.Fprintf(tw, "  %s\n", strings.Join(cleanCells(r), "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// An empty last cell (a condition without a message) would leave
	// the padding of the one before it at the end of the line.
	var out strings.Builder
	for _, line := range splitLines(b.String()) {
		out.WriteString(strings.TrimRight(line, " "))
		out.WriteString("\n")
	}
	_, err := io.WriteString(w, out.String())
	return err
}

// statusTables returns the tables of a kind's status that describe shows
// before the conditions: a node's WireGuard peers (and an agent's
// targets), a tunnel's gateways.
func statusTables(obj api.Object, now time.Time, extra describeExtra) []section {
	switch o := obj.(type) {
	case *api.Agent:
		// The agent reports its gateways; each gateway reports its
		// probe of the agent.
		peers, total := peersSection(o.Status.Gateways, o.Status.Peers, false)
		for _, p := range sortedPeers(o.Status.Gateways) {
			probe := probeUnknown
			if extra.probes != nil {
				reported, ok := extra.probes[p.Name]
				probe = probeCell(reported, ok)
				if reported == probeUnlisted {
					probe = probeOfUnlisted(p, now)
				}
			}
			peers.rows = append(peers.rows, peerRow(p, total, now, probe))
		}
		targets := section{title: "Targets", header: []string{"TUNNEL", "REACHABLE", "MESSAGE"}}
		ts := append([]api.TargetStatus(nil), o.Status.Targets...)
		sort.SliceStable(ts, func(i, j int) bool { return ts[i].Tunnel < ts[j].Tunnel })
		for _, t := range ts {
			targets.rows = append(targets.rows, []string{t.Tunnel, boolColumn(t.Reachable), t.Message})
		}
		return []section{peers, targets}
	case *api.Gateway:
		peers, total := peersSection(o.Status.Agents, o.Status.Peers, true)
		for _, p := range sortedPeers(o.Status.Agents) {
			peers.rows = append(peers.rows, peerRow(p, total, now, probeCell(p.Probe, true)))
		}
		return []section{peers}
	case *api.Tunnel:
		gws := section{title: "Gateways", header: []string{"NAME", "SERVING", "REASON"}}
		gs := append([]api.TunnelGatewayStatus(nil), o.Status.Gateways...)
		sort.SliceStable(gs, func(i, j int) bool { return gs[i].Name < gs[j].Name })
		for _, g := range gs {
			gws.rows = append(gws.rows, []string{g.Name, boolColumn(g.Serving), orNone(g.Reason)})
		}
		return []section{gws}
	}
	return nil
}

// peersSection returns the (empty) Peers table of a node that lists peers
// and sums them up in counts (nil when the list has every peer), and how
// many peers the node has. A list beside counts names only the peers in
// trouble, so the table then says so above them, with the counts: else a
// table of a few peers would read as all there are. On an agent, trouble
// is a gateway not connected; on a gateway, an agent not connected or
// whose probe has not answered.
func peersSection(listed []api.NodePeerStatus, counts *api.PeerCounts, gateway bool) (section, int) {
	s := section{title: "Peers", header: []string{"NAME", "ENDPOINT", "LAST-HANDSHAKE", "PROBE"}}
	if counts == nil {
		return s, len(listed)
	}
	trouble := "not connected"
	s.note = fmt.Sprintf("%d peers: %d connected", counts.Total, counts.Connected)
	if gateway {
		trouble = "in trouble"
		s.note += fmt.Sprintf(", %d answered probes", counts.Answered)
	}
	if len(listed) == 0 {
		s.note += "; none in trouble"
	} else {
		s.note += fmt.Sprintf("; showing the %d %s", len(listed), trouble)
	}
	return s, counts.Total
}

func sortedPeers(peers []api.NodePeerStatus) []api.NodePeerStatus {
	out := append([]api.NodePeerStatus(nil), peers...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// peerRow shows p, one of a node's peers in all (not only those its
// status lists); beyond api.TimedPeers peers the status says of each only
// whether its session is current.
func peerRow(p api.NodePeerStatus, peers int, now time.Time, probe string) []string {
	seen := lastSeen(p.LastHandshake, now)
	switch {
	case peers <= api.TimedPeers:
	case p.Connected:
		seen = "within " + formatAge(api.SessionFresh)
	default:
		seen = "not within " + formatAge(api.SessionFresh)
	}
	return []string{p.Name, orNone(p.Endpoint), seen, probe}
}

// probeCell shows one gateway's probe of an agent: ok, the failure as the
// gateway put it, "pending" when it has the agent as a peer but has not
// probed it yet, <none> when it does not report the agent at all.
func probeCell(probe string, reported bool) string {
	switch {
	case !reported:
		return "<none>"
	case probe == "":
		return "pending"
	default:
		return probe
	}
}

// statusSummary turns a kind's status into lines a person reads first.
// It reads only the status: what Control observed, never what spec asks.
func statusSummary(obj api.Object, now time.Time) [][2]string {
	conds := obj.GetStatus().Conditions
	var out [][2]string
	switch o := obj.(type) {
	case *api.Tunnel:
		c := api.FindCondition(conds, api.TunnelHostnameAvailable)
		switch {
		case c == nil:
			out = append(out, [2]string{"Hostname", "not checked by Control yet"})
		case c.Status == api.ConditionTrue:
			out = append(out, [2]string{"Hostname", "owned by this tunnel"})
		default:
			msg := c.Message
			if msg == "" {
				msg = "not available"
			}
			out = append(out, [2]string{"Hostname", fmt.Sprintf("%s (%s)", msg, c.Reason)})
		}
	case *api.Agent:
		out = append(out, nodeSummary(&o.Status.NodeStatus, now)...)
	case *api.Gateway:
		out = append(out, nodeSummary(&o.Status.NodeStatus, now)...)
	case *api.Token:
		if o.Spec.ExpiresAt != nil {
			out = append(out, [2]string{"Expires", fmt.Sprintf("%s (%s)", o.Spec.ExpiresAt.UTC().Format(time.RFC3339), expiresColumn(o.Spec.ExpiresAt, now))})
		}
	case *api.APIKey:
		if o.Spec.ExpiresAt != nil {
			out = append(out, [2]string{"Expires", fmt.Sprintf("%s (%s)", o.Spec.ExpiresAt.UTC().Format(time.RFC3339), expiresColumn(o.Spec.ExpiresAt, now))})
		}
		uses := fmt.Sprintf("%d", o.Status.Uses)
		if o.Spec.MaxUses > 0 {
			uses += fmt.Sprintf(" of %d", o.Spec.MaxUses)
		}
		if o.Status.LastUsed != nil {
			uses += fmt.Sprintf(", last %s ago", age(*o.Status.LastUsed, now))
		}
		out = append(out, [2]string{"Uses", uses})
	}
	if c := api.FindCondition(conds, api.ConditionReady); c != nil {
		ready := readyColumn(obj)
		if c.Message != "" {
			ready += ": " + c.Message
		}
		out = append(out, [2]string{"Ready", ready})
	}
	return out
}

// nodeSummary is what a gateway or agent reported of itself.
func nodeSummary(ns *api.NodeStatus, now time.Time) [][2]string {
	heartbeat := "never"
	if ns.LastHeartbeat != nil && !ns.LastHeartbeat.IsZero() {
		heartbeat = fmt.Sprintf("%s (%s)", ns.LastHeartbeat.UTC().Format(time.RFC3339), lastSeen(ns.LastHeartbeat, now))
	}
	revision := "none reported"
	if ns.Revision != 0 {
		revision = fmt.Sprintf("%d", ns.Revision)
	}
	return [][2]string{
		{"Address", orNone(ns.OverlayAddress)},
		{"Version", orNone(ns.Version)},
		{"Last heartbeat", heartbeat},
		{"Revision", revision},
	}
}

// specYAML renders an object's spec.
func specYAML(obj api.Object) (string, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return "", err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return "", err
	}
	spec, ok := top["spec"]
	if !ok || string(spec) == "{}" || string(spec) == "null" {
		return "<empty>\n", nil
	}
	out, err := yaml.JSONToYAML(spec)
	if err != nil {
		return "", err
	}
	return string(out), nil
}
