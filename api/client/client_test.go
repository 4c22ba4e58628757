package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/api/client"
	"github.com/kakuremichi/kakuremichi/api/client/clienttest"
)

const (
	adminToken  = "admin-secret"
	editorToken = "editor-secret"
	viewerToken = "viewer-secret"
)

func newServer(t *testing.T) *clienttest.Server {
	t.Helper()
	s := clienttest.New(clienttest.Config{Tokens: map[string]api.Role{
		adminToken: api.RoleAdmin, editorToken: api.RoleEditor, viewerToken: api.RoleViewer,
	}})
	t.Cleanup(s.Close)
	return s
}

func newClient(t *testing.T, server, token string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Server: server, Token: token, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	return c
}

func tunnel(name, hostname string, labels map[string]string) *api.Tunnel {
	return &api.Tunnel{
		TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tunnel"},
		Metadata: api.ObjectMeta{Name: name, Labels: labels},
		Spec:     api.TunnelSpec{Hostname: hostname, Agent: "home", Target: "http://localhost:8080"},
	}
}

func TestObjectLifecycle(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s.URL, editorToken)
	ctx := context.Background()

	created, err := c.Create(ctx, tunnel("web", "web.example.com", map[string]string{"app": "web"}), client.WriteOptions{})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if created.GetMeta().ResourceVersion == "" || created.GetMeta().UID == "" {
		t.Fatalf("created object got resourceVersion %q uid %q, want both set", created.GetMeta().ResourceVersion, created.GetMeta().UID)
	}
	if _, err := c.Create(ctx, tunnel("db", "db.example.com", nil), client.WriteOptions{}); err != nil {
		t.Fatalf("create db: %v", err)
	}
	if _, err := c.Create(ctx, tunnel("web", "web.example.com", nil), client.WriteOptions{}); !errors.Is(err, api.ErrAlreadyExists) {
		t.Fatalf("second create: got %v, want ErrAlreadyExists", err)
	}

	// Every name LookupKind accepts reaches the same resource.
	for _, kind := range []string{"tunnel", "tunnels", "Tunnel", "tun"} {
		got, err := c.Get(ctx, kind, "web")
		if err != nil {
			t.Fatalf("get %s web: %v", kind, err)
		}
		if tn := got.(*api.Tunnel); tn.Spec.Hostname != "web.example.com" {
			t.Errorf("get %s web: got hostname %q, want web.example.com", kind, tn.Spec.Hostname)
		}
	}

	objs, rv, err := c.List(ctx, "tunnels", client.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(objs) != 1 || objs[0].GetMeta().Name != "web" || rv == "" {
		t.Fatalf("list app=web: got %d objects (rv %q), want only web with an rv", len(objs), rv)
	}

	stale := api.Clone(created.(*api.Tunnel))
	fresh := api.Clone(created.(*api.Tunnel))
	fresh.Spec.Target = "http://localhost:9090"
	updated, err := c.Update(ctx, fresh, client.WriteOptions{})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if updated.GetMeta().Generation != 2 {
		t.Errorf("update: got generation %d, want 2", updated.GetMeta().Generation)
	}
	stale.Spec.Target = "http://localhost:7070"
	if _, err := c.Update(ctx, stale, client.WriteOptions{}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("update with stale resourceVersion: got %v, want ErrConflict", err)
	}

	dry := api.Clone(updated.(*api.Tunnel))
	dry.Spec.Target = "http://localhost:1111"
	if out, err := c.Update(ctx, dry, client.WriteOptions{DryRun: true}); err != nil || out.(*api.Tunnel).Spec.Target != "http://localhost:1111" {
		t.Fatalf("dry-run update: got %v, %v; want the would-be object", out, err)
	}
	if got, _ := s.Get("Tunnel", "web"); got.(*api.Tunnel).Spec.Target != "http://localhost:9090" {
		t.Fatalf("after dry-run update: got target %q stored, want it unchanged", got.(*api.Tunnel).Spec.Target)
	}

	patched, err := c.Patch(ctx, "tunnel", "web", []byte(`{"spec":{"enabled":false}}`), client.WriteOptions{})
	if err != nil {
		t.Fatalf("patch: %v", err)
	}
	if patched.(*api.Tunnel).Spec.IsEnabled() {
		t.Errorf("patch: got enabled, want disabled")
	}

	if _, err := c.Delete(ctx, "tunnel", "web", client.DeleteOptions{ResourceVersion: created.GetMeta().ResourceVersion}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("delete with stale precondition: got %v, want ErrConflict", err)
	}
	if _, err := c.Delete(ctx, "tunnel", "web", client.DeleteOptions{}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := c.Get(ctx, "tunnel", "web"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("get after delete: got %v, want ErrNotFound", err)
	}
}

func TestErrorsMapToSentinels(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	bad := tunnel("web", "web.example.com", nil)
	bad.Spec.Target = "ftp://x:21"

	tests := []struct {
		name  string
		token string
		call  func(c *client.Client) error
		want  error
	}{
		{"no token", "", func(c *client.Client) error { _, _, err := c.List(ctx, "tunnels", client.ListOptions{}); return err }, api.ErrUnauthorized},
		{"wrong token", "nope", func(c *client.Client) error { _, err := c.Version(ctx); return err }, api.ErrUnauthorized},
		{"viewer writes", viewerToken, func(c *client.Client) error {
			_, err := c.Create(ctx, tunnel("x", "x.example.com", nil), client.WriteOptions{})
			return err
		}, api.ErrForbidden},
		{"editor reads tokens", editorToken, func(c *client.Client) error { _, _, err := c.List(ctx, "tokens", client.ListOptions{}); return err }, api.ErrForbidden},
		{"missing", viewerToken, func(c *client.Client) error { _, err := c.Get(ctx, "agent", "nope"); return err }, api.ErrNotFound},
		{"invalid", editorToken, func(c *client.Client) error { _, err := c.Create(ctx, bad, client.WriteOptions{}); return err }, api.ErrInvalid},
		{"bad selector", viewerToken, func(c *client.Client) error {
			_, _, err := c.List(ctx, "tunnels", client.ListOptions{LabelSelector: "a=b=c"})
			return err
		}, api.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(newClient(t, s.URL, tt.token))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want an error matching %v", err, tt.want)
			}
			var se *api.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("got %T, want *api.StatusError", err)
			}
		})
	}

	// Invalid answers carry each field's path.
	_, err := newClient(t, s.URL, editorToken).Create(ctx, bad, client.WriteOptions{})
	var se *api.StatusError
	if !errors.As(err, &se) || se.Status.Details == nil || len(se.Status.Details.Causes) != 1 || se.Status.Details.Causes[0].Field != "spec.target" {
		t.Fatalf("invalid create: got %#v, want one cause for spec.target", err)
	}
}

// A proxy in front of Control answers without an api.Status; the code
// alone still maps to the right sentinel.
func TestBareHTTPErrors(t *testing.T) {
	tests := []struct {
		code int
		want error
	}{
		{http.StatusConflict, api.ErrConflict},
		{http.StatusGone, api.ErrGone},
		{http.StatusNotFound, api.ErrNotFound},
		{http.StatusBadGateway, api.ErrUnavailable},
		{http.StatusInsufficientStorage, api.ErrNoSpace},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.code), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "<html>proxy says no</html>", tt.code)
			}))
			defer srv.Close()
			_, err := newClient(t, srv.URL, "t").Get(context.Background(), "tunnel", "web")
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want an error matching %v", err, tt.want)
			}
		})
	}
}

func TestStatusAndTokens(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	admin := newClient(t, s.URL, adminToken)

	created, err := admin.Create(ctx, tunnel("web", "web.example.com", nil), client.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tn := created.(*api.Tunnel)
	api.SetCondition(&tn.Status.Conditions, api.Condition{Type: api.ConditionReady, Status: api.ConditionTrue, Reason: api.ReasonReady}, time.Now())
	tn.Spec.Target = "http://ignored:1"
	out, err := admin.UpdateStatus(ctx, tn, client.WriteOptions{})
	if err != nil {
		t.Fatalf("update status: %v", err)
	}
	got := out.(*api.Tunnel)
	if !api.IsConditionTrue(got.Status.Conditions, api.ConditionReady) || got.Spec.Target != "http://localhost:8080" {
		t.Fatalf("update status: got ready=%v target %q, want ready and the spec untouched",
			api.IsConditionTrue(got.Status.Conditions, api.ConditionReady), got.Spec.Target)
	}

	tok := &api.Token{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Token"},
		Metadata: api.ObjectMeta{Name: "ci"}, Spec: api.TokenSpec{Role: api.RoleViewer}}
	ct, err := admin.Create(ctx, tok, client.WriteOptions{})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	secret := ct.(*api.Token).Status.Secret
	if secret == "" {
		t.Fatal("create token: got no secret, want one")
	}
	viewer := newClient(t, s.URL, secret)
	if _, err := viewer.Version(ctx); err != nil {
		t.Fatalf("version with the new token: %v", err)
	}
	if _, err := viewer.Get(ctx, "tunnel", "web"); err != nil {
		t.Fatalf("viewer get: %v", err)
	}
	listed, err := admin.Get(ctx, "token", "ci")
	if err != nil || listed.(*api.Token).Status.Secret != "" {
		t.Fatalf("get token: got %v, %v; want it without its secret", listed, err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  client.Config
		ok   bool
	}{
		{"plain", client.Config{Server: "https://control.example.com:8443"}, true},
		{"path prefix", client.Config{Server: "https://example.com/kakuremichi/"}, true},
		{"empty", client.Config{}, false},
		{"no scheme", client.Config{Server: "control:8443"}, false},
		{"ftp", client.Config{Server: "ftp://control"}, false},
		{"credentials", client.Config{Server: "https://u:p@control"}, false},
		{"missing CA", client.Config{Server: "https://c", CAFile: filepath.Join(dir, "none.pem")}, false},
		{"CA not PEM", client.Config{Server: "https://c", CAFile: notPEM}, false},
		{"CA with own client", client.Config{Server: "https://c", CAFile: notPEM, HTTPClient: http.DefaultClient}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.New(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("got error %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestServerPathPrefix(t *testing.T) {
	s := newServer(t)
	mux := http.NewServeMux()
	target, _ := http.NewRequest(http.MethodGet, s.URL, nil)
	mux.HandleFunc("/prefix/", func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Scheme, r2.URL.Host = target.URL.Scheme, target.URL.Host
		r2.URL.Path = r.URL.Path[len("/prefix"):]
		r2.RequestURI = ""
		resp, err := http.DefaultTransport.RoundTrip(r2)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			w.Write(buf[:n])
			if err != nil {
				return
			}
		}
	})
	proxy := httptest.NewServer(mux)
	defer proxy.Close()
	v, err := newClient(t, proxy.URL+"/prefix/", viewerToken).Version(context.Background())
	if err != nil || v.Version != "test" {
		t.Fatalf("version through a path prefix: got %+v, %v; want version test", v, err)
	}
}
