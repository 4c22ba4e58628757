package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kakuremichi/kakuremichi/api"
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
	for i, name := range pos[1:] {
		obj, err := cl.Get(ctx, k.Plural, name)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if i > 0 {
			fmt.Fprintln(c.stdout)
		}
		if err := describe(c.stdout, obj, c.now()); err != nil {
			return err
		}
	}
	if len(problems) > 0 {
		return problems
	}
	return nil
}

// describe writes an object for a person: metadata, spec, what the
// status says, and its conditions.
func describe(w io.Writer, obj api.Object, now time.Time) error {
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

	if len(st.Conditions) == 0 {
		fmt.Fprintln(w, "Conditions:  <none>")
		return nil
	}
	fmt.Fprintln(w, "Conditions:")
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tAGE\tMESSAGE")
	for _, cond := range st.Conditions {
		fmt.Fprintf(tw, "  %s\n", strings.Join(cleanCells([]string{cond.Type, string(cond.Status), orNone(cond.Reason),
			age(cond.LastTransitionTime, now), cond.Message}), "\t"))
	}
	return tw.Flush()
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
