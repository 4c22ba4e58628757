package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/kakuremichi/kakuremichi/api"
)

// testPKI is a throwaway CA with a server and a client certificate, as
// PEM files in a temporary directory.
type testPKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

func newTestPKI(t testing.TB, dir string) testPKI {
	t.Helper()
	caKey := newKey(t)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kakuremichi test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, cn string, usage []x509.ExtKeyUsage, ips []net.IP) (certPEM, keyPEM []byte) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  usage,
			IPAddresses:  ips,
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	}
	// The server certificate also serves as a client one: etcd 3.4's
	// gateway dials its own endpoint with it.
	serverCert, serverKey := issue(2, "etcd", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, []net.IP{net.IPv4(127, 0, 0, 1)})
	clientCert, clientKey := issue(3, "kakuremichi", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil)
	p := testPKI{
		CA:         filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client-key.pem"),
	}
	for path, data := range map[string][]byte{
		p.CA:         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		p.ServerCert: serverCert, p.ServerKey: serverKey,
		p.ClientCert: clientCert, p.ClientKey: clientKey,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// startTLSEtcd starts an etcd server, separate from any Store, that
// requires TLS client certificates signed by pki's CA, and returns its
// client URL, and a function that stops it (also called when the test
// ends).
func startTLSEtcd(t testing.TB, pki testPKI) (stop func(), endpoint string) {
	t.Helper()
	ec := embed.NewConfig()
	ec.Dir = t.TempDir()
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	ec.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	ec.ListenPeerUrls = nil
	self := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	ec.AdvertisePeerUrls = []url.URL{self}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	listen := url.URL{Scheme: "https", Host: "127.0.0.1:0"}
	ec.ListenClientUrls = []url.URL{listen}
	ec.AdvertiseClientUrls = []url.URL{listen}
	ec.EnableGRPCGateway = false
	ec.BcryptCost = uint(bcrypt.MinCost) // password checks at the default cost are slow under -race
	ec.ClientTLSInfo = transport.TLSInfo{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, TrustedCAFile: pki.CA, ClientCertAuth: true}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	var once sync.Once
	stop = func() { once.Do(e.Close) }
	t.Cleanup(stop)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		t.Fatalf("etcd did not become ready in 20s")
	}
	return stop, "https://" + e.Clients[0].Addr().String()
}

// exercise runs every operation of the store once against whatever etcd
// it talks to.
func exercise(t *testing.T, s *Store) {
	t.Helper()
	ctx := testContext(t)
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready: got error %v, want nil", err)
	}
	created := mustCreate(t, s, newTunnel("web", "web.example.com"))
	ch, err := s.Watch(ctx, "tunnels", rvOf(t, created))
	if err != nil {
		t.Fatalf("Watch: got error %v, want nil", err)
	}
	upd := tunnelOf(t, api.Clone(created))
	upd.Spec.Target, upd.Spec.PublicPort = "tcp://db:5432", 5432
	updated := mustUpdate(t, s, upd)
	if _, err := s.Update(ctx, upd, WriteOptions{}); !errors.Is(err, api.ErrConflict) {
		t.Errorf("stale Update: got %v, want api.ErrConflict", err)
	}
	objs, rev, err := s.List(ctx, "tunnels", api.Selector{})
	if err != nil || len(objs) != 1 || rev != rvOf(t, updated) {
		t.Errorf("List: got %d objects at %d (%v), want 1 at %d", len(objs), rev, err, rvOf(t, updated))
	}
	if _, err := s.Delete(ctx, "tunnels", "web", DeleteOptions{}); err != nil {
		t.Errorf("Delete: got error %v, want nil", err)
	}
	for _, want := range []api.WatchEventType{api.Added, api.Modified, api.Deleted} {
		if ev := next(t, ch); ev.Type != want {
			t.Fatalf("watch: got %s, want %s", describe(ev), want)
		}
	}
}

func TestExternalEtcdWithTLS(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	other := newTestPKI(t, t.TempDir())
	stopEtcd, endpoint := startTLSEtcd(t, pki)
	ctx := testContext(t)

	t.Run("client certificate", func(t *testing.T) {
		// The context given to Open only bounds opening: the store
		// works on after it ends.
		octx, cancel := context.WithCancel(ctx)
		s, err := Open(octx, Config{Endpoints: []string{endpoint}, CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey,
			Prefix: "/cert/", Logger: newTestLogger(t)})
		cancel()
		if err != nil {
			t.Fatalf("Open: got error %v, want nil", err)
		}
		defer s.Close()
		exercise(t, s)
	})

	refused := []struct {
		name string
		cfg  Config
	}{
		{"no client certificate", Config{CAFile: pki.CA}},
		{"another CA", Config{CAFile: other.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}},
		{"client certificate of another CA", Config{CAFile: pki.CA, CertFile: other.ClientCert, KeyFile: other.ClientKey}},
		{"certificate without key", Config{CAFile: pki.CA, CertFile: pki.ClientCert}},
		{"missing CA file", Config{CAFile: filepath.Join(dir, "nope.pem")}},
	}
	t.Run("refused", func(t *testing.T) {
		for _, tt := range refused {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				cfg := tt.cfg
				cfg.Endpoints = []string{endpoint}
				cfg.Logger = newTestLogger(t)
				octx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				s, err := Open(octx, cfg)
				if err == nil {
					s.Close()
					t.Fatalf("Open: got nil error, want the connection refused")
				}
			})
		}
	})

	t.Run("password", func(t *testing.T) {
		root, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: mustTLS(t, pki), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		steps := []func() error{
			func() error { _, err := root.UserAdd(ctx, "root", "rootpw"); return err },
			func() error { _, err := root.UserGrantRole(ctx, "root", "root"); return err },
			func() error { _, err := root.AuthEnable(ctx); return err },
		}
		for i, step := range steps {
			if err := step(); err != nil {
				t.Fatalf("auth setup step %d: %v", i, err)
			}
		}
		s := openTestStore(t, Config{Endpoints: []string{endpoint}, CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey,
			Username: "root", Password: "rootpw", Prefix: "/auth/"})
		exercise(t, s)
		if s2, err := Open(ctx, Config{Endpoints: []string{endpoint}, CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey,
			Username: "root", Password: "wrong"}); err == nil {
			s2.Close()
			t.Errorf("Open with a wrong password: got nil error, want one")
		}
	})

	t.Run("unavailable", func(t *testing.T) {
		s := openTestStore(t, Config{Endpoints: []string{endpoint}, CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey,
			Username: "root", Password: "rootpw"})
		stopEtcd()
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if _, err := s.Get(gctx, "tunnels", "web"); !errors.Is(err, api.ErrUnavailable) {
			t.Errorf("Get from a stopped etcd: got %v, want api.ErrUnavailable", err)
		}
		if err := s.Ready(gctx); !errors.Is(err, api.ErrUnavailable) {
			t.Errorf("Ready of a stopped etcd: got %v, want api.ErrUnavailable", err)
		}
	})
}

func mustTLS(t testing.TB, pki testPKI) *tls.Config {
	t.Helper()
	c, err := clientTLS(Config{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestExternalEtcdBinary runs the store against etcd as a real separate
// process (Debian's etcd-server package), with TLS.
func TestExternalEtcdBinary(t *testing.T) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("no etcd binary on PATH (apt-get install etcd-server)")
	}
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	clientURL := fmt.Sprintf("https://127.0.0.1:%d", freePort(t))
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	logPath := filepath.Join(dir, "etcd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin,
		"--name", "ext", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "ext="+peerURL,
		"--cert-file", pki.ServerCert, "--key-file", pki.ServerKey,
		"--trusted-ca-file", pki.CA, "--client-cert-auth",
		"--logger", "zap", "--log-level", "warn",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("etcd output:\n%s", out)
		}
	})

	cfg := Config{Endpoints: []string{clientURL}, CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey, Logger: newTestLogger(t)}
	var s *Store
	deadline := time.Now().Add(20 * time.Second)
	for s == nil {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("etcd exited while starting: %v", err)
		default:
		}
		octx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err = Open(octx, cfg)
		cancel()
		if err != nil && time.Now().After(deadline) {
			t.Fatalf("Open: got error %v, want nil within 20s", err)
		}
	}
	t.Cleanup(func() { s.Close() })
	exercise(t, s)

	// The process dies: requests fail as unavailable, not hang.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err = <-exited
	exited <- err
	gctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := s.Get(gctx, "tunnels", "web"); !errors.Is(err, api.ErrUnavailable) {
		t.Errorf("Get from a killed etcd: got %v, want api.ErrUnavailable", err)
	}
}
