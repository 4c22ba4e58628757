package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open store: got %v, want nil", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func tunnel(name, host, target string, enabled bool) *api.Tunnel {
	return &api.Tunnel{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tunnel"},
		Metadata: api.ObjectMeta{Name: name},
		Spec:     api.TunnelSpec{Hostname: host, Agent: "home", Target: target, Enabled: &enabled}}
}

func create(t *testing.T, st *store.Store, obj api.Object) {
	t.Helper()
	if _, err := st.Create(testCtx(t), obj, store.WriteOptions{}); err != nil {
		t.Fatalf("create %s: got %v, want nil", obj.GetMeta().Name, err)
	}
}

// pairs returns the stored key pairs by hostname.
func pairs(t *testing.T, st *store.Store) map[string]*api.CertificateKeyPair {
	t.Helper()
	objs, _, err := KeyPairSource{Store: st}.List(testCtx(t))
	if err != nil {
		t.Fatalf("list key pairs: got %v, want nil", err)
	}
	out := map[string]*api.CertificateKeyPair{}
	for _, o := range objs {
		kp := o.(*api.CertificateKeyPair)
		out[kp.Hostname] = kp
	}
	return out
}

func certificates(t *testing.T, st *store.Store) map[string]*api.Certificate {
	t.Helper()
	objs, _, err := st.List(testCtx(t), "Certificate", api.Selector{})
	if err != nil {
		t.Fatalf("list certificates: got %v, want nil", err)
	}
	out := map[string]*api.Certificate{}
	for _, o := range objs {
		c := o.(*api.Certificate)
		out[c.Spec.Hostname] = c
	}
	return out
}

// verify checks that kp is a usable key pair for its hostname that a
// client trusting only root accepts at now.
func verify(t *testing.T, kp *api.CertificateKeyPair, root []byte, now time.Time) {
	t.Helper()
	cert, err := tls.X509KeyPair([]byte(kp.ChainPEM), []byte(kp.KeyPEM))
	if err != nil {
		t.Fatalf("%s: key pair: got %v, want a valid pair", kp.Hostname, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(root) {
		t.Fatalf("root: got no certificate from %q", root)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: kp.Hostname, Roots: pool, CurrentTime: now}); err != nil {
		t.Fatalf("%s: verify with the exported root: got %v, want nil", kp.Hostname, err)
	}
}

func TestPassIssuesOnlyForEnabledHTTPTunnels(t *testing.T) {
	st := openStore(t)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	create(t, st, tunnel("web", "web.example.com", "http://localhost:8080", true))
	create(t, st, tunnel("off", "off.example.com", "http://localhost:8080", false))
	db := tunnel("db", "db.example.com", "tcp://localhost:5432", true)
	db.Spec.PublicPort = 5432
	create(t, st, db)
	// A Certificate nobody's tunnel asks for must not cause an issuance.
	create(t, st, &api.Certificate{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Certificate"},
		Metadata: api.ObjectMeta{Name: api.CertificateName("evil.example.org")}, Spec: api.CertificateSpec{Hostname: "evil.example.org"}})
	ca, err := LoadOrCreateCA(testCtx(t), st, now)
	if err != nil {
		t.Fatalf("LoadOrCreateCA: got %v, want nil", err)
	}
	c := New(Config{Store: st, Now: func() time.Time { return now }})
	if _, err := c.Pass(testCtx(t), c.InternalIssuer(ca)); err != nil {
		t.Fatalf("Pass: got %v, want nil", err)
	}
	got := pairs(t, st)
	if len(got) != 1 || got["web.example.com"] == nil {
		t.Fatalf("key pairs: got %v, want only web.example.com", keys(got))
	}
	verify(t, got["web.example.com"], ca.RootPEM(), now)
	certs := certificates(t, st)
	if len(certs) != 1 || certs["web.example.com"] == nil {
		t.Fatalf("Certificates: got %v, want only web.example.com", keys(certs))
	}
	cs := certs["web.example.com"].Status
	if cs.State != api.CertificateIssued || cs.Serial != got["web.example.com"].Serial || cs.NotAfter == nil || cs.Issuer != ca.Subject() {
		t.Fatalf("status: got state %q serial %q issuer %q notAfter %v, want Issued, %q, %q and a notAfter",
			cs.State, cs.Serial, cs.Issuer, cs.NotAfter, got["web.example.com"].Serial, ca.Subject())
	}
	if !api.IsConditionTrue(cs.Conditions, api.ConditionReady) {
		t.Fatalf("Ready: got %+v, want True", cs.Conditions)
	}
}

func TestPassRenewsInLastThirdAndRemovesWithTunnel(t *testing.T) {
	st := openStore(t)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	create(t, st, tunnel("web", "web.example.com", "http://localhost:8080", true))
	ca, err := LoadOrCreateCA(testCtx(t), st, now)
	if err != nil {
		t.Fatalf("LoadOrCreateCA: got %v, want nil", err)
	}
	c := New(Config{Store: st, Now: clock, Lifetime: 90 * time.Hour})
	next, err := c.Pass(testCtx(t), c.InternalIssuer(ca))
	if err != nil {
		t.Fatalf("Pass: got %v, want nil", err)
	}
	first := pairs(t, st)["web.example.com"]
	// The leaf is back-dated a minute; renewal starts when a third of
	// the lifetime remains.
	wantNext := first.NotAfter.Add(-(90*time.Hour + time.Minute) / 3)
	if !next.Equal(wantNext) {
		t.Fatalf("next renewal: got %v, want %v", next, wantNext)
	}
	steps := []struct {
		at      time.Time
		renewed bool
	}{
		{now.Add(59 * time.Hour), false},
		{next.Add(-time.Second), false},
		{next.Add(time.Second), true},
	}
	prev := first.Serial
	for _, s := range steps {
		now = s.at
		if _, err := c.Pass(testCtx(t), c.InternalIssuer(ca)); err != nil {
			t.Fatalf("Pass at %v: got %v, want nil", s.at, err)
		}
		kp := pairs(t, st)["web.example.com"]
		if got := kp.Serial != prev; got != s.renewed {
			t.Fatalf("at %v: renewed got %v, want %v", s.at, got, s.renewed)
		}
		verify(t, kp, ca.RootPEM(), now)
		if st := certificates(t, st)["web.example.com"].Status.Serial; st != kp.Serial {
			t.Fatalf("status serial at %v: got %q, want %q", s.at, st, kp.Serial)
		}
		prev = kp.Serial
	}

	if _, err := st.Delete(testCtx(t), "Tunnel", "web", store.DeleteOptions{}); err != nil {
		t.Fatalf("delete tunnel: got %v, want nil", err)
	}
	if _, err := c.Pass(testCtx(t), c.InternalIssuer(ca)); err != nil {
		t.Fatalf("Pass after delete: got %v, want nil", err)
	}
	if got := pairs(t, st); len(got) != 0 {
		t.Fatalf("key pairs after the tunnel was deleted: got %v, want none", keys(got))
	}
	if got := certificates(t, st); len(got) != 0 {
		t.Fatalf("Certificates after the tunnel was deleted: got %v, want none", keys(got))
	}
}

// TestReplicasIssueOnce runs two controllers against one store, as two
// Control replicas: the lock makes them agree on one certificate.
func TestReplicasIssueOnce(t *testing.T) {
	st := openStore(t)
	hosts := []string{"a.example.com", "b.example.com", "c.example.com"}
	for i, h := range hosts {
		create(t, st, tunnel(string(rune('a'+i))+"-tun", h, "http://localhost:8080", true))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := New(Config{Store: st}).Run(ctx); !errors.Is(err, context.Canceled) {
				t.Errorf("Run: got %v, want context.Canceled", err)
			}
		}()
	}
	// Every issuance rewrites the key pair; count the revisions of each.
	writes := map[string]int{}
	events, err := st.WatchSecrets(ctx, keyPairPrefix, 1)
	if err != nil {
		t.Fatalf("WatchSecrets: got %v, want nil", err)
	}
	deadline := time.After(20 * time.Second)
	for len(writes) < len(hosts) {
		select {
		case ev := <-events:
			writes[ev.Name]++
		case <-deadline:
			t.Fatalf("issued: got %v within 20s, want %v", writes, hosts)
		}
	}
	// Let both replicas pass again (a new tunnel pokes them), then check
	// that no certificate was issued twice.
	create(t, st, tunnel("d-tun", "d.example.com", "http://localhost:8080", true))
	for writes["certificates/d.example.com"] == 0 {
		select {
		case ev := <-events:
			writes[ev.Name]++
		case <-deadline:
			t.Fatalf("issued: got %v within 20s, want d.example.com too", writes)
		}
	}
	cancel()
	wg.Wait()
	for name, n := range writes {
		if n != 1 {
			t.Errorf("%s: got %d issuances, want 1", name, n)
		}
	}
}

// TestRunStopsItsGoroutines runs the controller twice: the first run
// starts the etcd client's own long-lived goroutines (lease keepalives,
// watch streams), the second must leave nothing behind.
func TestRunStopsItsGoroutines(t *testing.T) {
	st := openStore(t)
	create(t, st, tunnel("web", "web.example.com", "http://localhost:8080", true))
	runOnce := func(host string) {
		ctx, cancel := context.WithCancel(testCtx(t))
		done := make(chan error, 1)
		go func() { done <- New(Config{Store: st}).Run(ctx) }()
		deadline := time.Now().Add(20 * time.Second)
		for pairs(t, st)[host] == nil {
			if time.Now().After(deadline) {
				t.Fatalf("certificate of %s: got none within 20s", host)
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: got %v, want context.Canceled", err)
		}
	}
	runOnce("web.example.com")
	before := runtime.NumGoroutine()
	create(t, st, tunnel("api", "api.example.com", "http://localhost:8080", true))
	runOnce("api.example.com")
	for end := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("goroutines: got %d after Run returned, want at most %d", n, before)
	}
}

func TestKeyPairSourceWatch(t *testing.T) {
	st := openStore(t)
	src := KeyPairSource{Store: st}
	_, rev, err := src.List(testCtx(t))
	if err != nil {
		t.Fatalf("List: got %v, want nil", err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	ch, err := src.Watch(ctx, rev+1)
	if err != nil {
		t.Fatalf("Watch: got %v, want nil", err)
	}
	kp := api.CertificateKeyPair{Hostname: "x.example.com", ChainPEM: "c", KeyPEM: "k", Serial: "01"}
	data, _ := json.Marshal(kp)
	if err := st.CreateSecret(testCtx(t), keyPairSecret("x.example.com"), data); err != nil {
		t.Fatalf("CreateSecret: got %v, want nil", err)
	}
	if err := st.CreateSecret(testCtx(t), keyPairSecret("x.example.com"), data); !errors.Is(err, api.ErrAlreadyExists) {
		t.Fatalf("CreateSecret again: got %v, want ErrAlreadyExists", err)
	}
	if err := st.DeleteSecret(testCtx(t), keyPairSecret("x.example.com")); err != nil {
		t.Fatalf("DeleteSecret: got %v, want nil", err)
	}
	for _, want := range []api.WatchEventType{api.Added, api.Deleted} {
		select {
		case ev := <-ch:
			if ev.Type != want || ev.Object.GetMeta().Name != "x.example.com" {
				t.Fatalf("event: got %s %v, want %s x.example.com", ev.Type, ev.Object, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("event: got none within 10s, want %s", want)
		}
	}
}

func TestCertificateNameIsDistinctAndValid(t *testing.T) {
	long := "a234567890123456789012345678901234567890123456789012345678901.example.com"
	for _, h := range []string{"a-b.c.example.com", "a.b-c.example.com", long} {
		n := api.CertificateName(h)
		if err := api.ValidateName(n); err != nil {
			t.Errorf("CertificateName(%q) = %q: got %v, want a valid name", h, n, err)
		}
	}
	if api.CertificateName("a-b.c.example.com") == api.CertificateName("a.b-c.example.com") {
		t.Errorf("CertificateName: got the same name for a-b.c and a.b-c, want distinct")
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
