package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/kakuremichi/kakuremichi/api"
)

// ListOptions narrow a list.
type ListOptions struct {
	// LabelSelector keeps only objects whose labels match, in the syntax
	// of api.ParseSelector ("app=web,tier!=db"). Empty keeps everything.
	LabelSelector string
}

// WriteOptions apply to Create, Update, UpdateStatus and Patch.
type WriteOptions struct {
	// DryRun has the server check everything and answer with what it
	// would store, without storing it. False (the zero value) writes.
	DryRun bool
}

// DeleteOptions apply to Delete.
type DeleteOptions struct {
	// DryRun has the server check everything without deleting.
	DryRun bool
	// ResourceVersion, when not empty, makes the delete fail with
	// api.ErrConflict unless the stored object is at this version.
	ResourceVersion string
}

// VersionInfo is what /version reports.
type VersionInfo struct {
	// Version is Control's release version, "dev" for a development build.
	Version string `json:"version"`
	// Commit is the VCS revision Control was built from; may be empty.
	Commit string `json:"commit"`
}

func writeQuery(dryRun bool) url.Values {
	q := url.Values{}
	if dryRun {
		q.Set("dryRun", "All")
	}
	return q
}

// objectKind resolves the kind an object to be written says it is.
func objectKind(obj api.Object) (api.KindInfo, string, error) {
	if obj == nil {
		return api.KindInfo{}, "", errors.New("no object given")
	}
	k, err := lookupKind(obj.GetTypeMeta().Kind)
	if err != nil {
		return api.KindInfo{}, "", err
	}
	return k, obj.GetMeta().Name, nil
}

// Get returns the named object of a kind (any name api.LookupKind
// accepts: "tunnel", "tunnels", "Tunnel", "tun").
func (c *Client) Get(ctx context.Context, kind, name string) (api.Object, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, fmt.Errorf("get %s %q: %w", kind, name, err)
	}
	op := fmt.Sprintf("get %s %q", k.Singular, name)
	if name == "" {
		return nil, fmt.Errorf("%s: no name given", op)
	}
	data, _, err := c.do(ctx, request{method: http.MethodGet, path: c.resourcePath(k, name, "")})
	if err != nil {
		return nil, wrap(op, err)
	}
	obj, err := decodeAs(k, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return obj, nil
}

// List returns the objects of a kind and the resourceVersion the list was
// read at: a Watch from it misses nothing and repeats nothing.
func (c *Client) List(ctx context.Context, kind string, opts ListOptions) (objs []api.Object, resourceVersion string, err error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, "", fmt.Errorf("list %s: %w", kind, err)
	}
	op := "list " + k.Plural
	q := url.Values{}
	if opts.LabelSelector != "" {
		q.Set("labelSelector", opts.LabelSelector)
	}
	data, _, err := c.do(ctx, request{method: http.MethodGet, path: c.resourcePath(k, "", ""), query: q})
	if err != nil {
		return nil, "", wrap(op, err)
	}
	var list api.List
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, "", fmt.Errorf("%s: decode list: %w", op, err)
	}
	objs = make([]api.Object, 0, len(list.Items))
	for i, item := range list.Items {
		obj, err := decodeAs(k, item)
		if err != nil {
			return nil, "", fmt.Errorf("%s: item %d: %w", op, i, err)
		}
		objs = append(objs, obj)
	}
	return objs, list.Metadata.ResourceVersion, nil
}

// Create creates obj, of the kind its TypeMeta names, and returns what the
// server stored. Creating a Token returns its secret in Status.Secret,
// the only time it is ever shown.
func (c *Client) Create(ctx context.Context, obj api.Object, opts WriteOptions) (api.Object, error) {
	k, name, err := objectKind(obj)
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	return c.send(ctx, fmt.Sprintf("create %s %q", k.Singular, name), k, http.MethodPost,
		c.resourcePath(k, "", ""), obj, opts)
}

// Update replaces obj's spec, labels, annotations, finalizers and owner
// references with obj's. A non-empty metadata.resourceVersion is a
// precondition: a stale one fails with api.ErrConflict. The server never
// takes status from an Update.
func (c *Client) Update(ctx context.Context, obj api.Object, opts WriteOptions) (api.Object, error) {
	return c.put(ctx, obj, opts, "")
}

// UpdateStatus replaces obj's status and nothing else, with Update's
// resourceVersion rules.
func (c *Client) UpdateStatus(ctx context.Context, obj api.Object, opts WriteOptions) (api.Object, error) {
	return c.put(ctx, obj, opts, "status")
}

// put replaces a named object, or its subresource ("status").
func (c *Client) put(ctx context.Context, obj api.Object, opts WriteOptions, sub string) (api.Object, error) {
	what := strings.TrimSpace("update " + sub)
	k, name, err := objectKind(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	op := fmt.Sprintf("update %s %q", k.Singular, name)
	if sub != "" {
		op = fmt.Sprintf("update %s of %s %q", sub, k.Singular, name)
	}
	if name == "" {
		return nil, fmt.Errorf("%s: the object has no name", op)
	}
	return c.send(ctx, op, k, http.MethodPut, c.resourcePath(k, name, sub), obj, opts)
}

func (c *Client) send(ctx context.Context, op string, k api.KindInfo, method, path string, obj api.Object, opts WriteOptions) (api.Object, error) {
	body, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: encode: %w", op, err)
	}
	data, _, err := c.do(ctx, request{method: method, path: path, query: writeQuery(opts.DryRun), body: body})
	if err != nil {
		return nil, wrap(op, err)
	}
	out, err := decodeAs(k, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}

// Patch applies an RFC 7386 JSON merge patch to the named object. A
// metadata.resourceVersion in the patch is a precondition; without one
// the server applies the patch to whatever is stored.
func (c *Client) Patch(ctx context.Context, kind, name string, patch []byte, opts WriteOptions) (api.Object, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, fmt.Errorf("patch %s %q: %w", kind, name, err)
	}
	op := fmt.Sprintf("patch %s %q", k.Singular, name)
	if name == "" {
		return nil, fmt.Errorf("%s: no name given", op)
	}
	if !json.Valid(patch) {
		return nil, fmt.Errorf("%s: the patch is not valid JSON", op)
	}
	data, _, err := c.do(ctx, request{method: http.MethodPatch, path: c.resourcePath(k, name, ""),
		query: writeQuery(opts.DryRun), body: patch, contentType: "application/merge-patch+json"})
	if err != nil {
		return nil, wrap(op, err)
	}
	out, err := decodeAs(k, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}

// Delete deletes the named object and returns its last state. An object
// with finalizers is only marked for deletion: it is returned with its
// deletionTimestamp set and goes once its finalizers are removed.
func (c *Client) Delete(ctx context.Context, kind, name string, opts DeleteOptions) (api.Object, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, fmt.Errorf("delete %s %q: %w", kind, name, err)
	}
	op := fmt.Sprintf("delete %s %q", k.Singular, name)
	if name == "" {
		return nil, fmt.Errorf("%s: no name given", op)
	}
	q := writeQuery(opts.DryRun)
	if opts.ResourceVersion != "" {
		q.Set("resourceVersion", opts.ResourceVersion)
	}
	data, _, err := c.do(ctx, request{method: http.MethodDelete, path: c.resourcePath(k, name, ""), query: q})
	if err != nil {
		return nil, wrap(op, err)
	}
	out, err := decodeAs(k, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}

// Version asks the server for its version. It needs a valid token, so it
// also checks the credential.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	data, _, err := c.do(ctx, request{method: http.MethodGet, path: c.base.Path + "/version"})
	if err != nil {
		return VersionInfo{}, wrap("get server version", err)
	}
	var v VersionInfo
	if err := json.Unmarshal(data, &v); err != nil {
		return VersionInfo{}, fmt.Errorf("get server version: decode: %w", err)
	}
	return v, nil
}
