package certsource

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

func makeCert(t *testing.T, host string, serial int64) *bridge.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	return &bridge.Certificate{Hostname: host,
		ChainPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		KeyPEM:   string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})),
		Serial:   big.NewInt(serial).Text(16)}
}

func slice(certs ...*bridge.Certificate) bridge.Slice {
	s := bridge.Slice{}
	for _, c := range certs {
		s[bridge.CertificateKey(c.Hostname)] = bridge.Item{Key: bridge.CertificateKey(c.Hostname), Certificate: c}
	}
	return s
}

func served(t *testing.T, s *Source, name string) string {
	t.Helper()
	c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: name})
	if err != nil {
		t.Fatalf("GetCertificate(%q): got %v, want nil", name, err)
	}
	if c == nil {
		return ""
	}
	return c.Leaf.SerialNumber.Text(16)
}

func TestApplyServesBySNIAndForgets(t *testing.T) {
	s := New(Config{})
	web1, api1, web2 := makeCert(t, "web.example.com", 1), makeCert(t, "api.example.com", 2), makeCert(t, "web.example.com", 3)
	wrong := makeCert(t, "other.example.com", 4)
	wrong.Hostname = "evil.example.com" // a certificate that does not cover its name is refused
	steps := []struct {
		slice   bridge.Slice
		wantErr bool
		want    map[string]string // SNI -> serial, "" = nothing
	}{
		{slice(), false, map[string]string{"web.example.com": "", "": ""}},
		{slice(web1, api1), false, map[string]string{"web.example.com": "1", "WEB.example.com.": "1", "api.example.com": "2", "x.example.com": ""}},
		{slice(web2, api1), false, map[string]string{"web.example.com": "3", "api.example.com": "2"}},
		{slice(web2, wrong), true, map[string]string{"web.example.com": "3", "api.example.com": "", "evil.example.com": ""}},
		{slice(), false, map[string]string{"web.example.com": ""}},
	}
	for i, st := range steps {
		err := s.Apply(st.slice)
		if (err != nil) != st.wantErr {
			t.Fatalf("step %d: Apply got %v, want error %v", i, err, st.wantErr)
		}
		for sni, want := range st.want {
			if got := served(t, s, sni); got != want {
				t.Errorf("step %d: serial for %q: got %q, want %q", i, sni, got, want)
			}
		}
	}
}

// TestHandshakeUsesNewCertificateWithoutRestart swaps a certificate under
// a running TLS server and checks the next handshake sees it.
func TestHandshakeUsesNewCertificateWithoutRestart(t *testing.T) {
	s := New(Config{})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: s.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	serialSeen := func() string {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "web.example.com", InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("dial: got %v, want a handshake", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
	}
	for _, serial := range []int64{10, 11} {
		if err := s.Apply(slice(makeCert(t, "web.example.com", serial))); err != nil {
			t.Fatalf("Apply: got %v, want nil", err)
		}
		if got, want := serialSeen(), big.NewInt(serial).Text(16); got != want {
			t.Errorf("served serial: got %s, want %s", got, want)
		}
	}
	ln.Close()
	<-done
}

func TestWrapHTTPAnswersChallengesOnly(t *testing.T) {
	s := New(Config{})
	sl := slice()
	sl[bridge.ChallengeKey("tok1")] = bridge.Item{Key: bridge.ChallengeKey("tok1"),
		Challenge: &bridge.Challenge{Hostname: "web.example.com", Token: "tok1", KeyAuthorization: "tok1.thumb"}}
	if err := s.Apply(sl); err != nil {
		t.Fatalf("Apply: got %v, want nil", err)
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) })
	h := s.WrapHTTP(next)
	tests := []struct {
		host, path string
		code       int
		body       string
	}{
		{"web.example.com", "/.well-known/acme-challenge/tok1", 200, "tok1.thumb"},
		{"web.example.com:80", "/.well-known/acme-challenge/tok1", 200, "tok1.thumb"},
		{"other.example.com", "/.well-known/acme-challenge/tok1", 404, ""}, // a token answers only its hostname
		{"web.example.com", "/.well-known/acme-challenge/unknown", 404, ""},
		{"web.example.com", "/index.html", 299, ""}, // everything else goes on
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", "http://"+tt.host+tt.path, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.code || (tt.body != "" && rec.Body.String() != tt.body) {
			t.Errorf("GET %s%s: got %d %q, want %d %q", tt.host, tt.path, rec.Code, rec.Body.String(), tt.code, tt.body)
		}
	}
	if err := s.Apply(slice()); err != nil {
		t.Fatalf("Apply: got %v, want nil", err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://web.example.com/.well-known/acme-challenge/tok1", nil))
	if rec.Code != 404 {
		t.Errorf("challenge after it left the slice: got %d, want 404", rec.Code)
	}
}

func TestWrapHTTPRedirectsHostnamesWithACertificate(t *testing.T) {
	s := New(Config{HTTPSPort: 8443})
	web, plain := makeCert(t, "web.example.com", 1), makeCert(t, "plain.example.com", 2)
	web.RedirectHTTP = true // plain opted out
	sl := slice(web, plain)
	sl[bridge.ChallengeKey("tok")] = bridge.Item{Key: bridge.ChallengeKey("tok"),
		Challenge: &bridge.Challenge{Hostname: "web.example.com", Token: "tok", KeyAuthorization: "tok.k"}}
	if err := s.Apply(sl); err != nil {
		t.Fatalf("Apply: got %v, want nil", err)
	}
	h := s.WrapHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) }))
	tests := []struct {
		method, url string
		code        int
		location    string
	}{
		{"GET", "http://web.example.com/a/b?c=d", 308, "https://web.example.com:8443/a/b?c=d"},
		{"POST", "http://WEB.example.com./form", 308, "https://web.example.com:8443/form"}, // 308 keeps the method and body
		{"GET", "http://web.example.com/.well-known/acme-challenge/tok", 200, ""},          // ACME is never redirected
		{"GET", "http://web.example.com/.well-known/acme-challenge/other", 404, ""},
		{"GET", "http://plain.example.com/", 299, ""},  // the tunnel opted out
		{"GET", "http://nocert.example.com/", 299, ""}, // no certificate, nothing to redirect to
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.url, nil))
		if rec.Code != tt.code || rec.Header().Get("Location") != tt.location {
			t.Errorf("%s %s: got %d %q, want %d %q", tt.method, tt.url, rec.Code, rec.Header().Get("Location"), tt.code, tt.location)
		}
	}
	if got := ListenPort(":443"); got != 443 {
		t.Errorf("ListenPort(:443): got %d, want 443", got)
	}
}

// TestWildcardCertificateServesOneLabel: a "*.example.com" certificate is
// served for any single label under it that has no certificate of its
// own, never for deeper names or the parent, and redirects like any
// other.
func TestWildcardCertificateServesOneLabel(t *testing.T) {
	s := New(Config{})
	wild, own := makeCert(t, "*.example.com", 7), makeCert(t, "own.example.com", 8)
	wild.RedirectHTTP = true
	if err := s.Apply(slice(wild, own)); err != nil {
		t.Fatalf("Apply: got %v, want nil", err)
	}
	for sni, want := range map[string]string{"a.example.com": "7", "B.example.com.": "7", "own.example.com": "8",
		"a.b.example.com": "", "example.com": "", "*.example.com": "7"} {
		if got := served(t, s, sni); got != want {
			t.Errorf("serial for %q: got %q, want %q", sni, got, want)
		}
	}
	h := s.WrapHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) }))
	for url, code := range map[string]int{"http://a.example.com/": 308, "http://a.b.example.com/": 299} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
		if rec.Code != code {
			t.Errorf("GET %s: got %d, want %d", url, rec.Code, code)
		}
	}
}
