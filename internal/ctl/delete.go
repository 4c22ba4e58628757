package ctl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/client"
)

func runDelete(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlagSet("delete")
	var files stringList
	var ignoreNotFound, dryRun bool
	fs.Var(&files, "f", "delete the objects of these manifests (file, directory or -); repeatable")
	fs.BoolVar(&ignoreNotFound, "ignore-not-found", false, "treat objects that do not exist as deleted")
	fs.BoolVar(&dryRun, "dry-run", false, "have the server check everything, delete nothing")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	type target struct{ kind, name string }
	var targets []target
	switch {
	case len(files) > 0 && len(pos) > 0:
		return usagef("give either -f or KIND NAME..., not both")
	case len(files) > 0:
		// A manifest need not be valid to name what to delete.
		manifests, err := c.readManifests(files, false)
		if err != nil {
			return err
		}
		for _, m := range manifests {
			targets = append(targets, target{m.obj.GetTypeMeta().Kind, m.obj.GetMeta().Name})
		}
	case len(pos) >= 2:
		k, err := parseKind(pos[0])
		if err != nil {
			return err
		}
		for _, n := range pos[1:] {
			targets = append(targets, target{k.Kind, n})
		}
	default:
		return usagef("delete what? give -f FILE or KIND NAME...")
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	suffix := ""
	if dryRun {
		suffix = " (dry run)"
	}
	failed := false
	for _, t := range targets {
		k, _ := api.LookupKind(t.kind)
		what := k.Singular + "/" + t.name
		out, err := cl.Delete(ctx, t.kind, t.name, client.DeleteOptions{DryRun: dryRun})
		switch {
		case errors.Is(err, api.ErrNotFound) && ignoreNotFound:
			continue
		case err != nil:
			c.printError(err)
			failed = true
			continue
		}
		if m := out.GetMeta(); len(m.Finalizers) > 0 {
			fmt.Fprintf(c.stdout, "%s marked for deletion, waiting for finalizers: %s%s\n", what, strings.Join(m.Finalizers, ", "), suffix)
		} else {
			fmt.Fprintf(c.stdout, "%s deleted%s\n", what, suffix)
		}
	}
	if failed {
		return errReported
	}
	return nil
}
