package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/client"
)

// maxApplyAttempts bounds how often apply re-reads an object that keeps
// changing under it.
const maxApplyAttempts = 5

func runApply(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlagSet("apply")
	var files stringList
	var selector, output string
	var prune, dryRun bool
	fs.Var(&files, "f", "manifest file, directory (recursively: *.yaml, *.yml, *.json) or - for stdin; repeatable")
	fs.BoolVar(&prune, "prune", false, "delete objects matching -l that the manifests do not contain")
	fs.StringVar(&selector, "l", "", "label selector for --prune, e.g. app=web")
	fs.BoolVar(&dryRun, "dry-run", false, "have the server check everything, store nothing")
	fs.StringVar(&output, "o", "", "name, yaml or json: print the resulting objects instead of what happened")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("apply takes manifests with -f, not arguments (got %q)", pos)
	}
	if err := checkOutput(output, outTable, outName, outYAML, outJSON); err != nil {
		return err
	}
	if prune && selector == "" {
		return usagef("--prune needs -l SELECTOR, so it deletes only what these manifests manage")
	}
	if !prune && selector != "" {
		return usagef("-l is used only with --prune")
	}
	if selector != "" {
		if _, err := api.ParseSelector(selector); err != nil {
			return usagef("-l: %v", err)
		}
	}
	manifests, err := c.readManifests(files, true)
	if err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	suffix := ""
	if dryRun {
		suffix = " (dry run)"
	}
	var results []api.Object
	failed := false
	applied := map[string]bool{}
	for _, m := range manifests {
		applied[ref(m.obj)] = true
		out, what, err := applyOne(ctx, cl, m.obj, dryRun)
		if err != nil {
			c.printError(fmt.Errorf("%s: %w", ref(m.obj), err))
			failed = true
			continue
		}
		results = append(results, out)
		if output == outTable {
			fmt.Fprintf(c.stdout, "%s %s%s\n", ref(out), what, suffix)
		}
		if _, ok := m.obj.(api.SecretHolder); ok && what == "created" && !dryRun {
			fmt.Fprintf(c.stderr, "note: %s was created by apply, which does not print secrets; "+
				"to get a usable secret, delete it and use \"kakuremichictl create\"\n", ref(out))
		}
	}
	if prune {
		if failed {
			fmt.Fprintln(c.stderr, "error: not pruning, because some objects failed to apply")
		} else if err := c.prune(ctx, cl, selector, applied, dryRun, output, suffix); err != nil {
			c.printError(err)
			failed = true
		}
	}
	if output != outTable && len(results) > 0 {
		if err := printObjects(c.stdout, output, results, len(manifests) == 1); err != nil {
			return err
		}
	}
	if failed {
		return errReported
	}
	return nil
}

// applyOne makes the stored object match manifest: created when absent,
// else updated with the manifest's spec, labels and annotations at the
// live resourceVersion, re-reading on conflict. It reports what happened:
// created, configured or unchanged.
func applyOne(ctx context.Context, cl *client.Client, manifest api.Object, dryRun bool) (api.Object, string, error) {
	kind, name := manifest.GetTypeMeta().Kind, manifest.GetMeta().Name
	var lastErr error
	for range maxApplyAttempts {
		live, err := cl.Get(ctx, kind, name)
		if errors.Is(err, api.ErrNotFound) {
			out, err := cl.Create(ctx, withoutServerFields(manifest), client.WriteOptions{DryRun: dryRun})
			if errors.Is(err, api.ErrAlreadyExists) {
				lastErr = err
				continue // created by someone else meanwhile: update it instead
			}
			if err != nil {
				return nil, "", err
			}
			return out, "created", nil
		}
		if err != nil {
			return nil, "", err
		}
		desired := desiredFor(live, manifest)
		out, err := cl.Update(ctx, desired, client.WriteOptions{DryRun: dryRun})
		if errors.Is(err, api.ErrConflict) || errors.Is(err, api.ErrNotFound) {
			lastErr = err
			continue
		}
		if err != nil {
			return nil, "", err
		}
		if unchanged(live, out, dryRun) {
			return out, "unchanged", nil
		}
		return out, "configured", nil
	}
	return nil, "", fmt.Errorf("the object kept changing while being applied (%d attempts): %w", maxApplyAttempts, lastErr)
}

// unchanged reports whether an update left the object as it was. A real
// write shows it by keeping the resourceVersion; a dry run keeps it
// anyway, so the objects are compared.
func unchanged(live, out api.Object, dryRun bool) bool {
	if !dryRun {
		return out.GetMeta().ResourceVersion == live.GetMeta().ResourceVersion
	}
	a, err1 := json.Marshal(live)
	b, err2 := json.Marshal(out)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// withoutServerFields returns a copy of a manifest fit for create: no
// resourceVersion, uid, timestamps or status, which may be there when the
// manifest was written by "get -o yaml".
func withoutServerFields(manifest api.Object) api.Object {
	out := withoutStatus(manifest)
	m := out.GetMeta()
	m.ResourceVersion, m.UID, m.Generation = "", "", 0
	m.CreationTimestamp = time.Time{}
	m.DeletionTimestamp = nil
	return out
}

// desiredFor is what apply sends to update live to manifest: live's
// metadata at live's resourceVersion (the precondition), with the
// manifest's labels and annotations, the manifest's finalizers and owner
// references when it sets them (else live's), the manifest's spec and no
// status.
func desiredFor(live, manifest api.Object) api.Object {
	out := withoutStatus(manifest)
	m := out.GetMeta()
	labels, annotations, finalizers, owners := m.Labels, m.Annotations, m.Finalizers, m.OwnerReferences
	*m = *api.Clone(live).GetMeta()
	m.Labels, m.Annotations = labels, annotations
	if finalizers != nil {
		m.Finalizers = finalizers
	}
	if owners != nil {
		m.OwnerReferences = owners
	}
	return out
}

// withoutStatus returns a copy of obj with an empty status.
func withoutStatus(obj api.Object) api.Object {
	out, err := api.New(obj.GetTypeMeta().Kind)
	if err != nil {
		panic(err) // obj came from a decoder that knows every kind
	}
	var top map[string]json.RawMessage
	data, _ := json.Marshal(obj)
	_ = json.Unmarshal(data, &top)
	delete(top, "status")
	data, _ = json.Marshal(top)
	if err := json.Unmarshal(data, out); err != nil {
		panic(fmt.Sprintf("re-decode %s without status: %v", ref(obj), err))
	}
	return out
}

// prune deletes every object matching selector that was not applied.
// Each delete carries the resourceVersion the object was listed at, so an
// object relabelled meanwhile is looked at again, not deleted blindly.
func (c *cli) prune(ctx context.Context, cl *client.Client, selector string, applied map[string]bool, dryRun bool, output, suffix string) error {
	sel, _ := api.ParseSelector(selector)
	appliedKinds := map[string]bool{}
	for key := range applied {
		k, _, _ := strings.Cut(key, "/")
		appliedKinds[k] = true
	}
	var problems lineErrors
	for _, k := range api.Kinds() {
		objs, _, err := cl.List(ctx, k.Plural, client.ListOptions{LabelSelector: selector})
		if errors.Is(err, api.ErrForbidden) && !appliedKinds[k.Singular] {
			fmt.Fprintf(c.stderr, "note: %s not pruned: this token may not list them\n", k.Plural)
			continue
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("prune %s: %v", k.Plural, err))
			continue
		}
		for _, o := range objs {
			if applied[ref(o)] || o.GetMeta().DeletionTimestamp != nil {
				continue
			}
			pruned, err := pruneOne(ctx, cl, o, sel, applied, dryRun)
			if err != nil {
				problems = append(problems, fmt.Sprintf("prune %s: %v", ref(o), err))
				continue
			}
			if pruned && output == outTable {
				fmt.Fprintf(c.stdout, "%s pruned%s\n", ref(o), suffix)
			}
		}
	}
	if len(problems) > 0 {
		return problems
	}
	return nil
}

func pruneOne(ctx context.Context, cl *client.Client, o api.Object, sel api.Selector, applied map[string]bool, dryRun bool) (bool, error) {
	kind, name := o.GetTypeMeta().Kind, o.GetMeta().Name
	for range maxApplyAttempts {
		_, err := cl.Delete(ctx, kind, name, client.DeleteOptions{ResourceVersion: o.GetMeta().ResourceVersion, DryRun: dryRun})
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, api.ErrNotFound):
			return false, nil
		case !errors.Is(err, api.ErrConflict):
			return false, err
		}
		if o, err = cl.Get(ctx, kind, name); errors.Is(err, api.ErrNotFound) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		if !sel.Matches(o.GetMeta().Labels) || applied[ref(o)] || o.GetMeta().DeletionTimestamp != nil {
			return false, nil
		}
	}
	return false, fmt.Errorf("the object kept changing while being pruned (%d attempts)", maxApplyAttempts)
}
