package certs

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/store"
)

// TestControlKeyNeverAmongTunnelKeys: Control's own certificate lives
// under names of its own (the Certificate "control", a secret outside
// the key pairs the bridge lists), so a tunnel that claims Control's
// public hostname gets no certificate at all and the bridge's source
// never holds Control's key. A pair of Control's name left among the
// tunnel pairs by an older version is removed, and Control gets a key
// the gateways never had.
func TestControlKeyNeverAmongTunnelKeys(t *testing.T) {
	st := openStore(t)
	ctx := testCtx(t)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	const ctlHost = "control.example.com"
	create(t, st, tunnel("hijack", ctlHost, "http://localhost:8080", true))
	create(t, st, tunnel("web", "web.example.com", "http://localhost:8080", true))
	ca, err := LoadOrCreateCA(ctx, st, now)
	if err != nil {
		t.Fatal(err)
	}
	old, err := ca.Issue(ctlHost, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(old)
	if err := st.CreateSecret(ctx, keyPairSecret(ctlHost), data); err != nil {
		t.Fatal(err)
	}

	c := New(Config{Store: st, Now: func() time.Time { return now }, ControlHostname: ctlHost, IssueControlCertificate: true})
	if _, err := c.Pass(ctx, c.InternalIssuer(ca)); err != nil {
		t.Fatalf("Pass: got %v, want nil", err)
	}
	got := pairs(t, st)
	if len(got) != 1 || got["web.example.com"] == nil {
		t.Fatalf("key pairs the bridge lists: got %v, want only web.example.com", keys(got))
	}
	raw, _, err := st.GetSecret(ctx, controlKeyPairSecret)
	if err != nil {
		t.Fatalf("Control's key pair: got %v, want it stored", err)
	}
	var own api.CertificateKeyPair
	if err := json.Unmarshal(raw, &own); err != nil || own.Hostname != ctlHost {
		t.Fatalf("Control's key pair: got %q %v, want one for %s", own.Hostname, err, ctlHost)
	}
	if own.KeyPEM == old.KeyPEM || own.Serial == old.Serial {
		t.Fatalf("Control's key pair: got the one the gateways could have had (serial %s), want a new key", old.Serial)
	}
	verify(t, &own, ca.RootPEM(), now)

	objs, _, err := st.List(ctx, "Certificate", api.Selector{})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, o := range objs {
		names[o.GetMeta().Name] = o.(*api.Certificate).Spec.Hostname
	}
	if len(names) != 2 || names[ControlCertificate] != ctlHost || names[api.CertificateName("web.example.com")] != "web.example.com" {
		t.Fatalf("Certificates: got %v, want %q for %s and the tunnel web's", names, ControlCertificate, ctlHost)
	}
	obj, err := st.Get(ctx, "Certificate", ControlCertificate)
	if err != nil {
		t.Fatal(err)
	}
	if cert := obj.(*api.Certificate); cert.Status.State != api.CertificateIssued || cert.Status.Serial != own.Serial {
		t.Fatalf("Certificate %q: got %s serial %s, want Issued with serial %s", ControlCertificate, cert.Status.State, cert.Status.Serial, own.Serial)
	}

	// The tunnel is deleted: Control's certificate stays as it is.
	if _, err := st.Delete(ctx, "Tunnel", "hijack", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pass(ctx, c.InternalIssuer(ca)); err != nil {
		t.Fatalf("Pass: got %v, want nil", err)
	}
	raw2, _, err := st.GetSecret(ctx, controlKeyPairSecret)
	if err != nil || string(raw2) != string(raw) {
		t.Fatalf("Control's key pair after the tunnel went: got %v (changed: %v), want it untouched", err, string(raw2) != string(raw))
	}

	// Control stops obtaining its own certificate (say, it now serves
	// one from files): its key goes, its name stays reserved.
	c = New(Config{Store: st, Now: func() time.Time { return now }, ControlHostname: ctlHost})
	create(t, st, tunnel("hijack2", ctlHost, "http://localhost:8080", true))
	if _, err := c.Pass(ctx, c.InternalIssuer(ca)); err != nil {
		t.Fatalf("Pass: got %v, want nil", err)
	}
	if _, _, err := st.GetSecret(ctx, controlKeyPairSecret); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("Control's key pair without IssueControlCertificate: got %v, want it deleted", err)
	}
	if got := pairs(t, st); len(got) != 1 || got["web.example.com"] == nil {
		t.Fatalf("key pairs: got %v, want only web.example.com", keys(got))
	}
	if _, err := st.Get(ctx, "Certificate", ControlCertificate); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("Certificate %q without IssueControlCertificate: got %v, want it deleted", ControlCertificate, err)
	}
}

func TestWantedHostnamesSkipsControlsName(t *testing.T) {
	got := WantedHostnames([]api.Object{tunnel("a", "control.example.com", "http://x:1", true), tunnel("b", "b.example.com", "http://x:1", true)},
		"control.example.com")
	if len(got) != 1 || !got["b.example.com"] {
		t.Fatalf("WantedHostnames: got %v, want only b.example.com", got)
	}
}
