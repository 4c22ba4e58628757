package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/credential"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

// kindOf resolves the :plural path parameter and checks that the caller
// may do v to it.
func (s *Server) kindOf(c echo.Context, v verb) (api.KindInfo, error) {
	plural := c.Param("plural")
	k, ok := api.LookupKind(plural)
	if !ok || k.Plural != plural {
		return api.KindInfo{}, api.NewStatusError(api.ReasonNotFound, "the server has no resource %q (served: %s)", plural, strings.Join(api.KindNames(), ", "))
	}
	p := principalOf(c)
	if !allowed(p.Role, v, k.Kind) {
		return api.KindInfo{}, api.NewStatusError(api.ReasonForbidden, "token %q with role %s may not %s %s", p.Name, p.Role, v, k.Plural)
	}
	return k, nil
}

// writeTarget resolves the kind a write is for, checks that the caller may
// do v to it, and reads ?dryRun.
func (s *Server) writeTarget(c echo.Context, v verb) (api.KindInfo, bool, error) {
	k, err := s.kindOf(c, v)
	if err != nil {
		return api.KindInfo{}, false, err
	}
	dry, err := dryRun(c)
	return k, dry, err
}

func dryRun(c echo.Context) (bool, error) {
	switch v := c.QueryParam("dryRun"); v {
	case "":
		return false, nil
	case "All":
		return true, nil
	default:
		return false, api.NewStatusError(api.ReasonBadRequest, "dryRun=%q is not supported (use All)", v)
	}
}

// redact removes what must never leave Control: secret hashes.
func redact(obj api.Object) api.Object {
	if sh, ok := obj.(api.SecretHolder); ok {
		if hash, _ := sh.Secrets(); *hash != "" {
			sh = api.Clone(sh)
			hash, _ = sh.Secrets()
			*hash = ""
			return sh
		}
	}
	return obj
}

var errSecretHashSent = api.ErrorList{{Type: api.FieldForbidden, Field: "spec.secretHash", Detail: "set by Control; leave it out"}}

func (s *Server) list(c echo.Context) error {
	k, err := s.kindOf(c, verbRead)
	if err != nil {
		return err
	}
	sel, err := api.ParseSelector(c.QueryParam("labelSelector"))
	if err != nil {
		return api.NewStatusError(api.ReasonBadRequest, "%v", err)
	}
	if w := c.QueryParam("watch"); w == "true" || w == "1" {
		return s.watch(c, k, sel)
	}
	objs, rev, err := s.store.List(c.Request().Context(), k.Kind, sel)
	if err != nil {
		return err
	}
	list := api.List{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: k.Kind + "List"},
		Metadata: api.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10)}, Items: []json.RawMessage{}}
	for _, o := range objs {
		data, err := json.Marshal(redact(o))
		if err != nil {
			return err
		}
		list.Items = append(list.Items, data)
	}
	return writeJSON(c, http.StatusOK, list)
}

func (s *Server) get(c echo.Context) error {
	k, err := s.kindOf(c, verbRead)
	if err != nil {
		return err
	}
	obj, err := s.store.Get(c.Request().Context(), k.Kind, c.Param("name"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, redact(obj))
}

// decodeBody strictly decodes a JSON or YAML body into an object of kind
// k, named name when name is not empty.
func decodeBody(c echo.Context, k api.KindInfo, name string) (api.Object, error) {
	data, err := readBody(c)
	if err != nil {
		return nil, err
	}
	obj, err := api.Decode(data)
	if err != nil {
		var el api.ErrorList
		if errors.As(err, &el) || errors.Is(err, api.ErrTooLarge) {
			return nil, err
		}
		return nil, api.NewStatusError(api.ReasonBadRequest, "decode body: %v", err)
	}
	if obj.GetTypeMeta().Kind != k.Kind {
		return nil, api.ErrorList{{Type: api.FieldInvalid, Field: "kind",
			Detail: fmt.Sprintf("%q does not match the resource %s in the URL", obj.GetTypeMeta().Kind, k.Plural)}}
	}
	if name != "" && obj.GetMeta().Name != name {
		if obj.GetMeta().Name == "" {
			obj.GetMeta().Name = name
		} else {
			return nil, api.ErrorList{{Type: api.FieldInvalid, Field: "metadata.name",
				Detail: fmt.Sprintf("%q does not match the name %q in the URL", obj.GetMeta().Name, name)}}
		}
	}
	return obj, nil
}

func (s *Server) create(c echo.Context) error {
	k, dry, err := s.writeTarget(c, verbWrite)
	if err != nil {
		return err
	}
	obj, err := decodeBody(c, k, "")
	if err != nil {
		return err
	}
	var secret string
	if sh, ok := obj.(api.SecretHolder); ok {
		if hash, _ := sh.Secrets(); *hash != "" {
			return errSecretHashSent
		}
		if secret, err = credential.NewSecret(); err != nil {
			return err
		}
		hash, _ := sh.Secrets()
		*hash = credential.Hash(secret)
	}
	created, err := s.store.Create(c.Request().Context(), obj, store.WriteOptions{DryRun: dry})
	if err != nil {
		return err
	}
	out := redact(created)
	if sh, ok := out.(api.SecretHolder); ok && !dry {
		_, shown := sh.Secrets()
		*shown = sh.FormatSecret(sh.GetMeta().Name, secret)
	}
	return writeJSON(c, http.StatusCreated, out)
}

// keepSystemFields copies what clients never own onto obj before an
// update: a secret's hash. A secret shown once is never stored.
func keepSystemFields(obj, current api.Object) {
	sh, ok := obj.(api.SecretHolder)
	if !ok {
		return
	}
	hash, shown := sh.Secrets()
	*shown = ""
	if cur, ok := current.(api.SecretHolder); ok {
		curHash, _ := cur.Secrets()
		*hash = *curHash
	}
}

func (s *Server) update(c echo.Context) error {
	k, dry, err := s.writeTarget(c, verbWrite)
	if err != nil {
		return err
	}
	obj, err := decodeBody(c, k, c.Param("name"))
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if sh, ok := obj.(api.SecretHolder); ok {
		if hash, _ := sh.Secrets(); *hash != "" {
			return errSecretHashSent
		}
		cur, err := s.store.Get(ctx, k.Kind, obj.GetMeta().Name)
		if err != nil {
			return err
		}
		keepSystemFields(obj, cur)
	}
	updated, err := s.store.Update(ctx, obj, store.WriteOptions{DryRun: dry})
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, redact(updated))
}

func (s *Server) updateStatus(c echo.Context) error {
	k, dry, err := s.writeTarget(c, verbWriteStatus)
	if err != nil {
		return err
	}
	obj, err := decodeBody(c, k, c.Param("name"))
	if err != nil {
		return err
	}
	if sh, ok := obj.(api.SecretHolder); ok {
		_, shown := sh.Secrets()
		*shown = "" // secrets are shown once and never stored
	}
	updated, err := s.store.UpdateStatus(c.Request().Context(), obj, store.WriteOptions{DryRun: dry})
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, redact(updated))
}

func (s *Server) patch(c echo.Context) error       { return s.mergePatch(c, false) }
func (s *Server) patchStatus(c echo.Context) error { return s.mergePatch(c, true) }

// mergePatch applies an RFC 7386 JSON merge patch. Without a
// resourceVersion in the patch it is applied to whatever is stored, and a
// concurrent write makes it start again from the new state; with one, a
// stale version is a conflict.
func (s *Server) mergePatch(c echo.Context, status bool) error {
	v := verbWrite
	if status {
		v = verbWriteStatus
	}
	k, dry, err := s.writeTarget(c, v)
	if err != nil {
		return err
	}
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if mt, _, _ := strings.Cut(ct, ";"); strings.TrimSpace(mt) != "application/merge-patch+json" {
		return &api.StatusError{Status: api.Status{TypeMeta: api.TypeMeta{APIVersion: "v1", Kind: "Status"},
			Code: http.StatusUnsupportedMediaType, Reason: "UnsupportedMediaType",
			Message: fmt.Sprintf("Content-Type %q is not supported for PATCH (use application/merge-patch+json)", ct)}}
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var patch any
	if err := json.Unmarshal(body, &patch); err != nil {
		return api.NewStatusError(api.ReasonBadRequest, "the patch is not valid JSON: %v", err)
	}
	pm, ok := patch.(map[string]any)
	if !ok {
		return api.NewStatusError(api.ReasonBadRequest, "a merge patch must be a JSON object")
	}
	if _, ok := k.New().(api.SecretHolder); ok {
		if spec, ok := pm["spec"].(map[string]any); ok {
			if _, has := spec["secretHash"]; has {
				return errSecretHashSent
			}
		}
	}
	ctx := c.Request().Context()
	name := c.Param("name")
	meta, _ := pm["metadata"].(map[string]any)
	_, pinned := meta["resourceVersion"]
	for attempt := 0; ; attempt++ {
		cur, err := s.store.Get(ctx, k.Kind, name)
		if err != nil {
			return err
		}
		base, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		var doc any
		if err := json.Unmarshal(base, &doc); err != nil {
			return err
		}
		merged, err := json.Marshal(applyMergePatch(doc, patch))
		if err != nil {
			return err
		}
		obj, err := api.Decode(merged)
		if err != nil {
			return err
		}
		if obj.GetMeta().Name != name || obj.GetTypeMeta().Kind != k.Kind {
			return api.ErrorList{{Type: api.FieldForbidden, Field: "metadata.name", Detail: "a patch may not change the name or kind"}}
		}
		keepSystemFields(obj, cur)
		var out api.Object
		if status {
			out, err = s.store.UpdateStatus(ctx, obj, store.WriteOptions{DryRun: dry})
		} else {
			out, err = s.store.Update(ctx, obj, store.WriteOptions{DryRun: dry})
		}
		if errors.Is(err, api.ErrConflict) && !pinned && attempt < 5 {
			continue
		}
		if err != nil {
			return err
		}
		return writeJSON(c, http.StatusOK, redact(out))
	}
}

// applyMergePatch implements RFC 7386.
func applyMergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = applyMergePatch(tm[k], v)
	}
	return tm
}

func (s *Server) delete(c echo.Context) error {
	k, dry, err := s.writeTarget(c, verbWrite)
	if err != nil {
		return err
	}
	rv := c.QueryParam("resourceVersion")
	if rv != "" {
		if _, err := strconv.ParseInt(rv, 10, 64); err != nil {
			return api.NewStatusError(api.ReasonBadRequest, "resourceVersion=%q is not a number", rv)
		}
	}
	obj, err := s.store.Delete(c.Request().Context(), k.Kind, c.Param("name"), store.DeleteOptions{ResourceVersion: rv, DryRun: dry})
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, redact(obj))
}

// watch streams events as newline-delimited JSON until the client goes
// away, the store watch ends, or Control shuts down.
func (s *Server) watch(c echo.Context, k api.KindInfo, sel api.Selector) error {
	var from int64
	if rv := c.QueryParam("resourceVersion"); rv != "" && rv != "0" {
		n, err := strconv.ParseInt(rv, 10, 64)
		if err != nil || n < 0 {
			return api.NewStatusError(api.ReasonBadRequest, "resourceVersion=%q is not a number", rv)
		}
		from = n + 1
	} else {
		// "From now" is pinned to a revision so bookmarks can name it and
		// a client can resume from them.
		rev, err := s.store.Revision(c.Request().Context())
		if err != nil {
			return err
		}
		from = rev + 1
	}
	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	var opts []store.WatchOption
	if !sel.Empty() {
		opts = append(opts, store.WithOld()) // to tell an object that stops matching
	}
	events, err := s.store.Watch(ctx, k.Kind, from, opts...)
	if err != nil {
		return err
	}
	rc := http.NewResponseController(c.Response())
	// A watch lives longer than any write timeout; each write below sets
	// its own deadline instead, so a stuck client is still cut off.
	_ = rc.SetWriteDeadline(time.Time{})
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	c.Response().WriteHeader(http.StatusOK)
	enc := json.NewEncoder(c.Response())
	lastRev := from - 1
	send := func(ev api.WatchEvent) error {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if err := enc.Encode(ev); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := rc.Flush(); err != nil {
		return nil
	}
	ticker := time.NewTicker(s.bookmark)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return nil
		case <-ticker.C:
			if lastRev < 0 {
				lastRev = 0
			}
			bm := k.New()
			bm.GetMeta().ResourceVersion = strconv.FormatInt(lastRev, 10)
			data, _ := json.Marshal(bm)
			if err := send(api.WatchEvent{Type: api.Bookmark, Object: data}); err != nil {
				return nil
			}
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			if ev.Type == api.Error {
				st := api.StatusFromError(ev.Err)
				if errors.Is(ev.Err, api.ErrGone) {
					st = api.NewStatusError(api.ReasonExpired, "resourceVersion %d is too old: the history was compacted; list again and watch from the list's resourceVersion", from-1).Status
				}
				data, _ := json.Marshal(st)
				_ = send(api.WatchEvent{Type: api.Error, Object: data})
				return nil
			}
			lastRev = ev.Revision
			typ, ok := filterEvent(ev, sel)
			if !ok {
				continue
			}
			data, err := json.Marshal(redact(ev.Object))
			if err != nil {
				return nil
			}
			if err := send(api.WatchEvent{Type: typ, Object: data}); err != nil {
				return nil
			}
		}
	}
}

// filterEvent applies a label selector to a watch event the way a
// filtered list would see it change: an object that starts matching is
// ADDED, one that stops matching is DELETED.
func filterEvent(ev store.Event, sel api.Selector) (api.WatchEventType, bool) {
	now := sel.Matches(ev.Object.GetMeta().Labels)
	if ev.Type != api.Modified || sel.Empty() {
		return ev.Type, now
	}
	before := ev.Old == nil || sel.Matches(ev.Old.GetMeta().Labels)
	switch {
	case now && before:
		return api.Modified, true
	case now:
		return api.Added, true
	case before && ev.Old != nil:
		return api.Deleted, true
	default:
		return "", false
	}
}
