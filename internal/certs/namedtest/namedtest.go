// Package namedtest runs BIND's named for tests: one primary zone on a
// loopback port, answering every name in it with 127.0.0.1 and taking
// TXT updates signed with a TSIG key, as a DNS provider's real server.
// Tests skip when named is not installed (.ci/run installs bind9).
//
// It imports only the standard library.
package namedtest

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Server is a running named.
type Server struct {
	// Addr is the host:port it answers on, UDP and TCP.
	Addr string
	// Zone is the zone it is primary for, without the final dot.
	Zone string
	// KeyName and Secret are the TSIG key (hmac-sha256) that may update
	// TXT records in the zone; SecretFile holds Secret.
	KeyName, Secret, SecretFile string
	// Log is named's log file.
	Log string
}

// Binary returns the path of named, or skips t.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("named"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/named", "/usr/local/sbin/named"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("named is not installed (.ci/run installs it: apt-get install bind9)")
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	// The port must be free for UDP and TCP.
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free port for UDP and TCP")
	return 0
}

// Start runs named for zone until the test ends.
func Start(t testing.TB, zone string) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	// named drops to no user here, but a directory only root may enter
	// would still stop it: keep the temp dir readable.
	_ = os.Chmod(dir, 0o755)
	secretBytes := make([]byte, 32)
	_, _ = rand.Read(secretBytes)
	s := &Server{Zone: strings.TrimSuffix(zone, "."), KeyName: "kakuremichi-test.", Secret: base64.StdEncoding.EncodeToString(secretBytes),
		SecretFile: filepath.Join(dir, "tsig.secret"), Log: filepath.Join(dir, "named.log")}
	port := freePort(t)
	s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	conf := fmt.Sprintf(`options {
  directory %[1]q;
  listen-on port %[2]d { 127.0.0.1; };
  listen-on-v6 { none; };
  pid-file "%[1]s/named.pid";
  session-keyfile "%[1]s/session.key";
  managed-keys-directory %[1]q;
  recursion no;
  dnssec-validation no;
  allow-query { any; };
  notify no;
};
controls { };
key %[3]q { algorithm hmac-sha256; secret %[4]q; };
zone %[5]q { type primary; file "%[1]s/zone.db"; update-policy { grant %[3]s zonesub TXT; }; };
`, dir, port, s.KeyName, s.Secret, s.Zone)
	zoneFile := fmt.Sprintf(`$TTL 60
@ IN SOA ns.%[1]s. hostmaster.%[1]s. 1 60 60 600 60
@ IN NS ns.%[1]s.
@ IN A 127.0.0.1
ns IN A 127.0.0.1
* IN A 127.0.0.1
`, s.Zone)
	for name, data := range map[string]string{"named.conf": conf, "zone.db": zoneFile, "tsig.secret": s.Secret + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	logf, err := os.Create(s.Log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-g", "-c", filepath.Join(dir, "named.conf"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(s.Log)
			t.Logf("named log:\n%s", out)
		}
	})
	for deadline := time.Now().Add(15 * time.Second); ; {
		// Not "running as: named ...", the first line: "all zones
		// loaded" comes once the zone answers.
		if data, _ := os.ReadFile(s.Log); strings.Contains(string(data), "all zones loaded") {
			if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
				c.Close()
				return s
			}
		}
		select {
		case <-done:
			out, _ := os.ReadFile(s.Log)
			t.Fatalf("named exited during start:\n%s", out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(s.Log)
			t.Fatalf("named not running after 15s:\n%s", out)
		}
	}
}
