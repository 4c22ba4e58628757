// Package clienttest serves Control's REST contract over an in-memory map,
// so that API clients (package client, kakuremichictl) can be tested
// without Control, its store and etcd. It is a test double, kept small and
// honest: one mutex instead of etcd, but the same wire behaviour —
// resourceVersions from one revision counter, preconditions and conflicts,
// dry runs, defaulting and validation, finalizers, label selectors,
// generations, watches with bookmarks and compaction, bearer tokens and
// roles. End-to-end tests against the real server live elsewhere.
//
// It imports only the standard library and package api.
package clienttest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// Config configures a Server.
type Config struct {
	// Tokens maps bearer tokens to their roles. Tokens created through
	// the API are added with their own roles. Nil accepts only those.
	Tokens map[string]api.Role
	// BookmarkInterval is how often an idle watch gets a BOOKMARK. Zero
	// means 15 seconds, as Control.
	BookmarkInterval time.Duration
	// Version is what /version reports; empty reports "test".
	Version string
}

// Request is one request the server received.
type Request struct {
	// Method is the HTTP method.
	Method string
	// Path is the URL path.
	Path string
	// Query is the raw query string, e.g. "dryRun=All".
	Query string
}

// Server is the in-memory API server. Its exported methods are safe for
// concurrent use.
type Server struct {
	// URL is the server's base URL, http://127.0.0.1:port.
	URL string

	srv      *httptest.Server
	bookmark time.Duration
	version  string
	done     chan struct{}

	mu sync.Mutex // guards every field below
	// static maps bearer strings given in Config to roles.
	static map[string]api.Role
	// secrets maps bearer strings of tokens created through the API to
	// the token's name.
	secrets map[string]string
	// objects maps kind to name to the stored object's JSON.
	objects   map[string]map[string][]byte
	rev       int64
	compacted int64
	events    []event
	// changed is closed, and replaced, on every write, to wake watches.
	changed chan struct{}
	// drop is closed, and replaced, by DropWatches.
	drop chan struct{}
	// watchesDown makes new watches fail with 503, as while Control
	// restarts.
	watchesDown bool
	requests    []Request
}

type event struct {
	kind string
	typ  api.WatchEventType
	rev  int64
	obj  []byte
}

// New starts a server on a random loopback port. Close it when done.
func New(cfg Config) *Server {
	s := &Server{bookmark: cfg.BookmarkInterval, version: cfg.Version, done: make(chan struct{}),
		static: map[string]api.Role{}, secrets: map[string]string{}, objects: map[string]map[string][]byte{},
		changed: make(chan struct{}), drop: make(chan struct{})}
	if s.bookmark == 0 {
		s.bookmark = 15 * time.Second
	}
	if s.version == "" {
		s.version = "test"
	}
	for k, v := range cfg.Tokens {
		s.static[k] = v
	}
	for _, k := range api.Kinds() {
		s.objects[k.Kind] = map[string][]byte{}
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the server, ending open watches.
func (s *Server) Close() {
	select {
	case <-s.done:
		return
	default:
	}
	close(s.done)
	s.srv.Close()
}

// Requests returns every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Writes returns the requests that were not GETs.
func (s *Server) Writes() []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Method != http.MethodGet {
			out = append(out, r)
		}
	}
	return out
}

// Seed stores objects as given, status, creationTimestamp and finalizers
// included, as controllers would have left them. Missing uid, generation
// and creationTimestamp are filled in; each object gets a new revision.
func (s *Server) Seed(objs ...api.Object) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range objs {
		o = api.Clone(o)
		m := o.GetMeta()
		if m.UID == "" {
			m.UID = newID()
		}
		if m.Generation == 0 {
			m.Generation = 1
		}
		if m.CreationTimestamp.IsZero() {
			m.CreationTimestamp = time.Now().UTC().Truncate(time.Second)
		}
		typ := api.Added
		if _, ok := s.objects[o.GetTypeMeta().Kind][m.Name]; ok {
			typ = api.Modified
		}
		s.store(o, typ)
	}
}

// Get returns the stored object, for assertions.
func (s *Server) Get(kind, name string) (api.Object, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.objects[kind][name]
	if !ok {
		return nil, false
	}
	obj, err := api.DecodeObject(data)
	if err != nil {
		panic(err)
	}
	return obj, true
}

// Revision returns the current revision.
func (s *Server) Revision() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

// Compact forgets the history up to the current revision: a watch from an
// older revision then gets an ERROR event with reason Expired.
func (s *Server) Compact() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.compacted = s.rev
	s.events = nil
}

// DropWatches ends every open watch connection, as a restart would.
func (s *Server) DropWatches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.drop)
	s.drop = make(chan struct{})
}

// SetWatchesUnavailable makes new watch requests fail with 503 Service
// Unavailable (down) or be served again (!down). Together with
// DropWatches and Compact it holds clients off while history is lost.
func (s *Server) SetWatchesUnavailable(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchesDown = down
}

// store writes obj at a new revision and records the event. s.mu is held.
func (s *Server) store(obj api.Object, typ api.WatchEventType) api.Object {
	s.rev++
	obj.GetMeta().ResourceVersion = strconv.FormatInt(s.rev, 10)
	data := mustJSON(obj)
	kind := obj.GetTypeMeta().Kind
	if typ == api.Deleted {
		delete(s.objects[kind], obj.GetMeta().Name)
	} else {
		s.objects[kind][obj.GetMeta().Name] = data
	}
	s.events = append(s.events, event{kind: kind, typ: typ, rev: s.rev, obj: data})
	close(s.changed)
	s.changed = make(chan struct{})
	return obj
}

func (s *Server) current(kind, name string) api.Object {
	data, ok := s.objects[kind][name]
	if !ok {
		return nil
	}
	obj, err := api.DecodeObject(data)
	if err != nil {
		panic(err)
	}
	return obj
}

const prefix = "/apis/" + api.APIVersion + "/"

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery})
	s.mu.Unlock()
	switch r.URL.Path {
	case "/healthz", "/readyz":
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	}
	role, err := s.authenticate(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if r.URL.Path == "/version" {
		writeJSON(w, http.StatusOK, map[string]string{"version": s.version, "commit": ""})
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok {
		writeError(w, api.NewStatusError(api.ReasonNotFound, "no such route: %s %s", r.Method, r.URL.Path))
		return
	}
	parts := strings.Split(rest, "/")
	k, ok := api.LookupKind(parts[0])
	if !ok || k.Plural != parts[0] || len(parts) > 3 || (len(parts) == 3 && parts[2] != "status") {
		writeError(w, api.NewStatusError(api.ReasonNotFound, "no such route: %s %s", r.Method, r.URL.Path))
		return
	}
	write := r.Method != http.MethodGet
	if !allowed(role, k.Kind, write, len(parts) == 3) {
		writeError(w, api.NewStatusError(api.ReasonForbidden, "role %s may not do this to %s", role, k.Plural))
		return
	}
	dry := false
	switch v := r.URL.Query().Get("dryRun"); v {
	case "":
	case "All":
		dry = true
	default:
		writeError(w, api.NewStatusError(api.ReasonBadRequest, "dryRun=%q is not supported (use All)", v))
		return
	}
	var name string
	if len(parts) >= 2 {
		name = parts[1]
	}
	status := len(parts) == 3
	var obj api.Object
	code := http.StatusOK
	switch {
	case name == "" && r.Method == http.MethodGet:
		if r.URL.Query().Get("watch") == "true" {
			s.watch(w, r, k)
			return
		}
		s.list(w, r, k)
		return
	case name == "" && r.Method == http.MethodPost:
		obj, err = s.create(r, k, dry)
		code = http.StatusCreated
	case name == "":
		err = api.NewStatusError(api.ReasonMethodNotAllowed, "%s is not allowed on %s", r.Method, r.URL.Path)
	case r.Method == http.MethodGet:
		s.mu.Lock()
		obj = s.current(k.Kind, name)
		s.mu.Unlock()
		if obj == nil {
			err = notFound(k, name)
		}
	case r.Method == http.MethodPut:
		obj, err = s.update(r, k, name, status, dry)
	case r.Method == http.MethodPatch && !status:
		obj, err = s.patch(r, k, name, dry)
	case r.Method == http.MethodDelete && !status:
		obj, err = s.delete(r, k, name, dry)
	default:
		err = api.NewStatusError(api.ReasonMethodNotAllowed, "%s is not allowed on %s", r.Method, r.URL.Path)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, code, obj)
}

func (s *Server) authenticate(r *http.Request) (api.Role, error) {
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || bearer == "" {
		return "", api.NewStatusError(api.ReasonUnauthorized, "no bearer token")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if role, ok := s.static[bearer]; ok {
		return role, nil
	}
	if name, ok := s.secrets[bearer]; ok {
		if tok, ok := s.current("Token", name).(*api.Token); ok {
			if tok.Spec.ExpiresAt == nil || time.Now().Before(*tok.Spec.ExpiresAt) {
				return tok.Spec.Role, nil
			}
		}
	}
	return "", api.NewStatusError(api.ReasonUnauthorized, "the token is not valid")
}

// allowed is Control's policy: tokens are admin-only; API keys are
// managed by editors and hidden from viewers; viewers read, editors
// write; status is written by admins (controllers) only; node
// credentials have no REST access.
func allowed(role api.Role, kind string, write, status bool) bool {
	switch {
	case role == api.RoleAdmin:
		return true
	case kind == "Token":
		return false
	case kind == "APIKey":
		return role == api.RoleEditor && !status
	case !write:
		return role == api.RoleEditor || role == api.RoleViewer
	default:
		return role == api.RoleEditor && !status
	}
}

func notFound(k api.KindInfo, name string) error {
	return api.NewStatusError(api.ReasonNotFound, "%s %q not found", k.Singular, name)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, k api.KindInfo) {
	sel, err := api.ParseSelector(r.URL.Query().Get("labelSelector"))
	if err != nil {
		writeError(w, api.NewStatusError(api.ReasonBadRequest, "%v", err))
		return
	}
	s.mu.Lock()
	names := make([]string, 0, len(s.objects[k.Kind]))
	for n := range s.objects[k.Kind] {
		names = append(names, n)
	}
	sort.Strings(names)
	list := api.List{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: k.Kind + "List"},
		Metadata: api.ListMeta{ResourceVersion: strconv.FormatInt(s.rev, 10)}, Items: []json.RawMessage{}}
	for _, n := range names {
		obj := s.current(k.Kind, n)
		if sel.Matches(obj.GetMeta().Labels) {
			list.Items = append(list.Items, s.objects[k.Kind][n])
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) decodeBody(r *http.Request, k api.KindInfo, name string) (api.Object, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, api.MaxObjectBytes+1))
	if err != nil {
		return nil, api.NewStatusError(api.ReasonBadRequest, "read body: %v", err)
	}
	obj, err := api.Decode(data)
	if err != nil {
		return nil, err
	}
	if obj.GetTypeMeta().Kind != k.Kind {
		return nil, api.ErrorList{{Type: api.FieldInvalid, Field: "kind", Detail: "does not match the URL"}}
	}
	if name != "" {
		switch obj.GetMeta().Name {
		case "":
			obj.GetMeta().Name = name
		case name:
		default:
			return nil, api.ErrorList{{Type: api.FieldInvalid, Field: "metadata.name", Detail: "does not match the URL"}}
		}
	}
	return obj, nil
}

func (s *Server) create(r *http.Request, k api.KindInfo, dry bool) (api.Object, error) {
	obj, err := s.decodeBody(r, k, "")
	if err != nil {
		return nil, err
	}
	m := obj.GetMeta()
	if m.ResourceVersion != "" {
		return nil, api.NewStatusError(api.ReasonBadRequest, "metadata.resourceVersion must be empty on create")
	}
	obj.Default()
	if err := api.Validate(obj); err != nil {
		return nil, err
	}
	m.UID = newID()
	m.CreationTimestamp = time.Now().UTC().Truncate(time.Second)
	m.Generation = 1
	m.DeletionTimestamp = nil
	obj, err = withoutStatus(obj)
	if err != nil {
		return nil, err
	}
	m = obj.GetMeta()
	var secret string
	if sh, ok := obj.(api.SecretHolder); ok {
		secret = sh.FormatSecret(m.Name, newID())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, exists := s.objects[k.Kind][m.Name]; exists {
		return nil, api.NewStatusError(api.ReasonAlreadyExists, "%s %q already exists", k.Singular, m.Name)
	}
	if dry {
		return obj, nil
	}
	s.store(obj, api.Added)
	if sh, ok := obj.(api.SecretHolder); ok {
		if obj.GetTypeMeta().Kind == "Token" {
			s.secrets[secret] = m.Name
		}
		shown := api.Clone(sh)
		_, field := shown.Secrets()
		*field = secret
		return shown, nil
	}
	return obj, nil
}

// withoutStatus drops every status field: only controllers write status.
func withoutStatus(obj api.Object) (api.Object, error) {
	t := top(obj)
	delete(t, "status")
	return api.DecodeObject(mustJSON(t))
}

// checkVersion enforces a resourceVersion precondition. s.mu is held.
func checkVersion(k api.KindInfo, name, want string, cur api.Object) error {
	if want != "" && want != cur.GetMeta().ResourceVersion {
		return api.NewStatusError(api.ReasonConflict, "%s %q has been modified (resourceVersion %s, not %s); read it again and retry",
			k.Singular, name, cur.GetMeta().ResourceVersion, want)
	}
	return nil
}

func (s *Server) update(r *http.Request, k api.KindInfo, name string, status, dry bool) (api.Object, error) {
	obj, err := s.decodeBody(r, k, name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replace(k, name, obj, obj.GetMeta().ResourceVersion, status, dry)
}

// replace writes obj over the stored object: its status only, or its
// spec, labels, annotations, finalizers and owner references. s.mu is
// held.
func (s *Server) replace(k api.KindInfo, name string, obj api.Object, want string, status, dry bool) (api.Object, error) {
	cur := s.current(k.Kind, name)
	if cur == nil {
		return nil, notFound(k, name)
	}
	if err := checkVersion(k, name, want, cur); err != nil {
		return nil, err
	}
	curTop, objTop := top(cur), top(obj)
	if status {
		curTop["status"] = objTop["status"]
	} else {
		obj.Default()
		if err := api.Validate(obj); err != nil {
			return nil, err
		}
		objTop = top(obj)
		if !bytes.Equal(curTop["spec"], objTop["spec"]) {
			cur.GetMeta().Generation++
		}
		m, om := cur.GetMeta(), obj.GetMeta()
		m.Labels, m.Annotations, m.Finalizers, m.OwnerReferences = om.Labels, om.Annotations, om.Finalizers, om.OwnerReferences
		curTop = top(cur)
		curTop["spec"] = objTop["spec"]
	}
	next, err := api.DecodeObject(mustJSON(curTop))
	if err != nil {
		return nil, err
	}
	nm := next.GetMeta()
	if !status && nm.DeletionTimestamp != nil && len(nm.Finalizers) == 0 {
		if dry {
			return next, nil
		}
		return s.store(next, api.Deleted), nil
	}
	if bytes.Equal(mustJSON(next), s.objects[k.Kind][name]) {
		return next, nil
	}
	if dry {
		return next, nil
	}
	return s.store(next, api.Modified), nil
}

func (s *Server) patch(r *http.Request, k api.KindInfo, name string, dry bool) (api.Object, error) {
	if ct := r.Header.Get("Content-Type"); ct != "application/merge-patch+json" {
		return nil, &api.StatusError{Status: api.Status{Code: http.StatusUnsupportedMediaType, Reason: "UnsupportedMediaType",
			Message: fmt.Sprintf("Content-Type %q is not supported for PATCH", ct)}}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, api.MaxObjectBytes+1))
	if err != nil {
		return nil, api.NewStatusError(api.ReasonBadRequest, "read body: %v", err)
	}
	var patch map[string]any
	if err := json.Unmarshal(body, &patch); err != nil {
		return nil, api.NewStatusError(api.ReasonBadRequest, "the patch is not a JSON object: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.current(k.Kind, name)
	if cur == nil {
		return nil, notFound(k, name)
	}
	var doc any
	if err := json.Unmarshal(mustJSON(cur), &doc); err != nil {
		return nil, err
	}
	merged := mergePatch(doc, patch)
	obj, err := api.Decode(mustJSON(merged))
	if err != nil {
		return nil, err
	}
	if obj.GetMeta().Name != name {
		return nil, api.ErrorList{{Type: api.FieldForbidden, Field: "metadata.name", Detail: "a patch may not change the name"}}
	}
	want := ""
	if md, ok := patch["metadata"].(map[string]any); ok {
		want, _ = md["resourceVersion"].(string)
	}
	return s.replace(k, name, obj, want, false, dry)
}

// mergePatch applies an RFC 7386 merge patch.
func mergePatch(target, patch any) any {
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
		} else {
			tm[k] = mergePatch(tm[k], v)
		}
	}
	return tm
}

func (s *Server) delete(r *http.Request, k api.KindInfo, name string, dry bool) (api.Object, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.current(k.Kind, name)
	if cur == nil {
		return nil, notFound(k, name)
	}
	if err := checkVersion(k, name, r.URL.Query().Get("resourceVersion"), cur); err != nil {
		return nil, err
	}
	m := cur.GetMeta()
	switch {
	case len(m.Finalizers) > 0 && m.DeletionTimestamp != nil:
		return cur, nil
	case len(m.Finalizers) > 0:
		now := time.Now().UTC().Truncate(time.Second)
		m.DeletionTimestamp = &now
		if dry {
			return cur, nil
		}
		return s.store(cur, api.Modified), nil
	case dry:
		return cur, nil
	default:
		return s.store(cur, api.Deleted), nil
	}
}

func (s *Server) watch(w http.ResponseWriter, r *http.Request, k api.KindInfo) {
	sel, err := api.ParseSelector(r.URL.Query().Get("labelSelector"))
	if err != nil {
		writeError(w, api.NewStatusError(api.ReasonBadRequest, "%v", err))
		return
	}
	var from int64
	if rv := r.URL.Query().Get("resourceVersion"); rv != "" {
		if from, err = strconv.ParseInt(rv, 10, 64); err != nil || from < 0 {
			writeError(w, api.NewStatusError(api.ReasonBadRequest, "resourceVersion=%q is not a number", rv))
			return
		}
	}
	s.mu.Lock()
	if s.watchesDown {
		s.mu.Unlock()
		writeError(w, api.NewStatusError(api.ReasonUnavailable, "watches are unavailable"))
		return
	}
	expired := from > 0 && from < s.compacted
	if from == 0 {
		from = s.rev
	}
	drop := s.drop
	s.mu.Unlock()

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	send := func(ev api.WatchEvent) bool {
		if err := enc.Encode(ev); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if expired {
		st := api.NewStatusError(api.ReasonExpired, "resourceVersion %d is too old: list again", from).Status
		send(api.WatchEvent{Type: api.Error, Object: mustJSON(st)})
		return
	}
	if flusher != nil {
		flusher.Flush()
	}
	ticker := time.NewTicker(s.bookmark)
	defer ticker.Stop()
	cursor := from
	for {
		s.mu.Lock()
		var pending []event
		for _, e := range s.events {
			if e.rev > cursor && e.kind == k.Kind {
				pending = append(pending, e)
			}
		}
		if s.rev > cursor {
			cursor = s.rev
		}
		changed := s.changed
		s.mu.Unlock()
		for _, e := range pending {
			obj, err := api.DecodeObject(e.obj)
			if err != nil {
				panic(err)
			}
			if sel.Matches(obj.GetMeta().Labels) && !send(api.WatchEvent{Type: e.typ, Object: e.obj}) {
				return
			}
		}
		select {
		case <-changed:
		case <-ticker.C:
			bm := k.New()
			bm.GetMeta().ResourceVersion = strconv.FormatInt(cursor, 10)
			if !send(api.WatchEvent{Type: api.Bookmark, Object: mustJSON(bm)}) {
				return
			}
		case <-drop:
			return
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		}
	}
}

func top(obj any) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(mustJSON(obj), &m); err != nil {
		panic(err)
	}
	return m
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(mustJSON(v))
}

func writeError(w http.ResponseWriter, err error) {
	st := api.StatusFromError(err)
	var se *api.StatusError
	if !errors.As(err, &se) {
		st.TypeMeta = api.TypeMeta{APIVersion: "v1", Kind: "Status"}
	}
	writeJSON(w, st.Code, st)
}

func newID() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
