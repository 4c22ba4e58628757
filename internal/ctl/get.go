package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/client"
)

// allKinds are what "get all" lists: the resources of the system, not
// the credentials (tokens), which only admins may read.
var allKinds = []string{"tunnels", "gateways", "agents"}

// parseKinds resolves "tunnels,agents" or "all".
func parseKinds(arg string) ([]api.KindInfo, error) {
	var names []string
	for _, n := range strings.Split(arg, ",") {
		if n == "all" {
			names = append(names, allKinds...)
		} else if n != "" {
			names = append(names, n)
		}
	}
	var out []api.KindInfo
	seen := map[string]bool{}
	for _, n := range names {
		k, err := parseKind(n)
		if err != nil {
			return nil, err
		}
		if !seen[k.Kind] {
			seen[k.Kind] = true
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, usagef("no kind given (known: %s, or all)", strings.Join(api.KindNames(), ", "))
	}
	return out, nil
}

func runGet(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlagSet("get")
	var selector, output string
	var watch bool
	fs.StringVar(&selector, "l", "", "label selector, e.g. app=web,tier!=db")
	fs.StringVar(&output, "o", "", "wide, yaml, json or name")
	fs.BoolVar(&watch, "w", false, "after listing, print a row for every change until interrupted")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("get what? one of %s, or all", strings.Join(api.KindNames(), ", "))
	}
	if pos[0] == "ca" {
		return c.getCA(ctx, pos[1:], output)
	}
	if err := checkOutput(output, outTable, outWide, outYAML, outJSON, outName); err != nil {
		return err
	}
	if selector != "" {
		if _, err := api.ParseSelector(selector); err != nil {
			return usagef("-l: %v", err)
		}
	}
	kinds, err := parseKinds(pos[0])
	if err != nil {
		return err
	}
	names := pos[1:]
	if len(names) > 0 && len(kinds) > 1 {
		return usagef("names can be given only with a single kind")
	}
	if len(names) > 0 && selector != "" {
		return usagef("give names or -l, not both")
	}
	if watch && len(kinds) > 1 {
		return usagef("-w watches a single kind")
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	if watch {
		return c.watch(ctx, cl, kinds[0], names, selector, output)
	}
	if len(names) > 0 {
		return c.getNamed(ctx, cl, kinds[0], names, output)
	}
	return c.list(ctx, cl, kinds, selector, output)
}

func (c *cli) getNamed(ctx context.Context, cl *client.Client, k api.KindInfo, names []string, output string) error {
	var objs []api.Object
	var problems lineErrors
	for _, n := range names {
		obj, err := cl.Get(ctx, k.Plural, n)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		objs = append(objs, obj)
	}
	if len(objs) > 0 {
		if err := c.printGot([]api.KindInfo{k}, map[string][]api.Object{k.Kind: objs}, output, len(names) == 1); err != nil {
			return err
		}
	}
	if len(problems) > 0 {
		return problems
	}
	return nil
}

func (c *cli) list(ctx context.Context, cl *client.Client, kinds []api.KindInfo, selector, output string) error {
	byKind := map[string][]api.Object{}
	total := 0
	for _, k := range kinds {
		objs, _, err := cl.List(ctx, k.Plural, client.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		byKind[k.Kind] = objs
		total += len(objs)
	}
	if total == 0 {
		fmt.Fprintln(c.stderr, "No resources found.")
		if output == outJSON {
			return printObjects(c.stdout, outJSON, nil, false)
		}
		return nil
	}
	return c.printGot(kinds, byKind, output, false)
}

// printGot prints what get found: a table per kind (names prefixed by
// their kind when there are several kinds), or the objects.
func (c *cli) printGot(kinds []api.KindInfo, byKind map[string][]api.Object, output string, single bool) error {
	if output == outYAML || output == outJSON || output == outName {
		var all []api.Object
		for _, k := range kinds {
			all = append(all, byKind[k.Kind]...)
		}
		return printObjects(c.stdout, output, all, single)
	}
	printed := 0
	for _, k := range kinds {
		objs := byKind[k.Kind]
		if len(objs) == 0 {
			continue
		}
		if printed > 0 {
			fmt.Fprintln(c.stdout)
		}
		printed++
		if err := buildTable(k, objs, output == outWide, len(kinds) > 1, c.now()).write(c.stdout); err != nil {
			return err
		}
	}
	return nil
}

// watch lists, prints, then prints every change until ctx ends. When the
// watch expires (the history it resumed from was compacted) it lists
// again and prints what changed meanwhile.
func (c *cli) watch(ctx context.Context, cl *client.Client, k api.KindInfo, names []string, selector, output string) error {
	wanted := func(o api.Object) bool {
		if len(names) == 0 {
			return true
		}
		for _, n := range names {
			if o.GetMeta().Name == n {
				return true
			}
		}
		return false
	}
	known := map[string]api.Object{}
	var widths []int
	docs := 0
	emit := func(o api.Object) error {
		switch output {
		case outYAML:
			if docs++; docs > 1 {
				if _, err := io.WriteString(c.stdout, "---\n"); err != nil {
					return err
				}
			}
			return printObjects(c.stdout, outYAML, []api.Object{o}, true)
		case outJSON, outName:
			return printObjects(c.stdout, output, []api.Object{o}, true)
		}
		return writeRow(c.stdout, tableRow(o, o.GetMeta().Name, output == outWide, c.now()), widths)
	}

	first := true
	for {
		objs, rv, err := cl.List(ctx, k.Plural, client.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		var current []api.Object
		for _, o := range objs {
			if wanted(o) {
				current = append(current, o)
			}
		}
		if first {
			first = false
			if len(current) == 0 {
				fmt.Fprintln(c.stderr, "No resources found.")
			}
			t := buildTable(k, current, output == outWide, false, c.now())
			widths = t.widths()
			switch {
			case output == outTable || output == outWide:
				if err := t.write(c.stdout); err != nil {
					return err
				}
			default:
				for _, o := range current {
					if err := emit(o); err != nil {
						return err
					}
				}
			}
			for _, o := range current {
				known[o.GetMeta().Name] = o
			}
		} else {
			// Relisted after the watch expired: print what changed.
			seen := map[string]bool{}
			for _, o := range current {
				seen[o.GetMeta().Name] = true
				if prev, ok := known[o.GetMeta().Name]; !ok || prev.GetMeta().ResourceVersion != o.GetMeta().ResourceVersion {
					if err := emit(o); err != nil {
						return err
					}
				}
				known[o.GetMeta().Name] = o
			}
			for _, n := range sortedKeys(known) {
				if !seen[n] {
					if err := emit(known[n]); err != nil {
						return err
					}
					delete(known, n)
				}
			}
		}
		ch, err := cl.Watch(ctx, k.Plural, client.WatchOptions{ResourceVersion: rv, LabelSelector: selector})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		expired := false
		for ev := range ch {
			if ev.Type == api.Error {
				if errors.Is(ev.Err, api.ErrGone) {
					expired = true
					break
				}
				return ev.Err
			}
			if !wanted(ev.Object) {
				continue
			}
			if ev.Type == api.Deleted {
				delete(known, ev.Object.GetMeta().Name)
			} else {
				known[ev.Object.GetMeta().Name] = ev.Object
			}
			if err := emit(ev.Object); err != nil {
				return err
			}
		}
		if !expired {
			return nil // ctx ended: the user interrupted
		}
	}
}
