package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"sigs.k8s.io/yaml"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/client"
)

// Exit codes of diff, as kubectl diff's.
const (
	diffNone    = 0
	diffFound   = 1
	diffFailure = 2
)

// runDiff shows, as a unified diff of YAML, what apply would change: the
// server answers a dry run of exactly what apply would send, and that is
// compared with the live object.
func runDiff(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlagSet("diff")
	var files stringList
	fs.Var(&files, "f", "manifest file, directory or - for stdin; repeatable")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("diff takes manifests with -f, not arguments (got %q)", pos)
	}
	fail := func(err error) error { return &exitCodeError{code: diffFailure, err: err} }
	manifests, err := c.readManifests(files, true)
	if err != nil {
		var usage *usageError
		if errors.As(err, &usage) {
			return err
		}
		return fail(err)
	}
	cl, err := c.client()
	if err != nil {
		return fail(err)
	}
	differs, failed := false, false
	for _, m := range manifests {
		live, merged, err := dryRunApply(ctx, cl, m.obj)
		if err != nil {
			c.printError(fmt.Errorf("%s: %w", ref(m.obj), err))
			failed = true
			continue
		}
		a, err := comparable(live)
		if err != nil {
			return fail(err)
		}
		b, err := comparable(merged)
		if err != nil {
			return fail(err)
		}
		changed, err := writeUnifiedDiff(c.stdout, "live/"+ref(m.obj), "merged/"+ref(m.obj), splitLines(a), splitLines(b), 3)
		if err != nil {
			return fail(err)
		}
		differs = differs || changed
	}
	switch {
	case failed:
		return &exitCodeError{code: diffFailure, err: errReported}
	case differs:
		return &exitCodeError{code: diffFound}
	}
	return nil
}

// dryRunApply returns the live object (nil when absent) and what the
// server would store if apply sent the manifest.
func dryRunApply(ctx context.Context, cl *client.Client, manifest api.Object) (live, merged api.Object, err error) {
	kind, name := manifest.GetTypeMeta().Kind, manifest.GetMeta().Name
	for range maxApplyAttempts {
		live, err = cl.Get(ctx, kind, name)
		if errors.Is(err, api.ErrNotFound) {
			merged, err = cl.Create(ctx, withoutServerFields(manifest), client.WriteOptions{DryRun: true})
			if errors.Is(err, api.ErrAlreadyExists) {
				continue
			}
			return nil, merged, err
		}
		if err != nil {
			return nil, nil, err
		}
		merged, err = cl.Update(ctx, desiredFor(live, manifest), client.WriteOptions{DryRun: true})
		if errors.Is(err, api.ErrConflict) || errors.Is(err, api.ErrNotFound) {
			continue
		}
		return live, merged, err
	}
	return nil, nil, fmt.Errorf("the object kept changing while being compared (%d attempts)", maxApplyAttempts)
}

// comparable renders an object as YAML without what apply never sets:
// metadata.resourceVersion, managedFields and status. Nil is "".
func comparable(obj api.Object) (string, error) {
	if obj == nil {
		return "", nil
	}
	data, err := json.Marshal(obj)
	if err != nil {
		return "", err
	}
	var top map[string]any
	if err := json.Unmarshal(data, &top); err != nil {
		return "", err
	}
	delete(top, "status")
	if md, ok := top["metadata"].(map[string]any); ok {
		delete(md, "resourceVersion")
		delete(md, "managedFields")
	}
	out, err := yaml.Marshal(top)
	if err != nil {
		return "", err
	}
	return string(out), nil
}
