package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// startControl runs Control in-process on a real embedded etcd and
// returns its URL and admin token.
func startControl(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		done <- Run(ctx, Config{DataDir: dir, Listener: ln, Ready: func(net.Addr) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("control exited: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("control did not start")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control: %v", err)
		}
	})
	tok, err := os.ReadFile(filepath.Join(dir, BootstrapTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + ln.Addr().String(), strings.TrimSpace(string(tok))
}

func call(t *testing.T, method, url, token, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// waitFor polls until cond holds for the object, or fails after 10 s.
func waitFor(t *testing.T, url, token string, what string, cond func(api.Object) bool) api.Object {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last []byte
	for time.Now().Before(deadline) {
		code, body := call(t, "GET", url, token, "")
		last = body
		if code == 200 {
			obj, err := api.DecodeObject(body)
			if err == nil && cond(obj) {
				return obj
			}
		}
		if code == 404 && cond(nil) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not reached within 10s; last %s", what, last)
	return nil
}

const base = "/apis/kakuremichi.io/v1alpha1"

func readyReason(obj api.Object) (api.ConditionStatus, string) {
	if obj == nil {
		return "", ""
	}
	c := api.FindCondition(obj.GetStatus().Conditions, api.ConditionReady)
	if c == nil {
		return "", ""
	}
	return c.Status, c.Reason
}

// TestHostnameOwnershipOnTheRealStore runs the controllers inside Control
// against embedded etcd: the newer of two tunnels claiming one hostname is
// HostnameConflict until the older is deleted, then it owns the name.
func TestHostnameOwnershipOnTheRealStore(t *testing.T) {
	url, tok := startControl(t)
	mk := func(name string) {
		body := fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":%q},"spec":{"hostname":"fuga.sample.com","agent":"agent-home","target":"http://localhost:8080"}}`, name)
		if code, out := call(t, "POST", url+base+"/tunnels", tok, body); code != 201 {
			t.Fatalf("create %s: %d %s", name, code, out)
		}
	}
	owns := func(o api.Object) bool {
		return o != nil && api.IsConditionTrue(o.GetStatus().Conditions, api.TunnelHostnameAvailable)
	}
	mk("older")
	waitFor(t, url+base+"/tunnels/older", tok, "older owns the hostname", owns)
	time.Sleep(1100 * time.Millisecond) // creationTimestamp has second precision
	mk("newer")
	waitFor(t, url+base+"/tunnels/newer", tok, "newer conflicts", func(o api.Object) bool {
		s, r := readyReason(o)
		return s == api.ConditionFalse && r == api.ReasonHostnameConflict
	})
	if code, out := call(t, "DELETE", url+base+"/tunnels/older", tok, ""); code != 200 {
		t.Fatalf("delete: %d %s", code, out)
	}
	// Ready now waits for the agent, not for the hostname.
	waitFor(t, url+base+"/tunnels/newer", tok, "newer owns the hostname after the older is deleted", func(o api.Object) bool {
		_, r := readyReason(o)
		return owns(o) && r != api.ReasonHostnameConflict
	})
}

// TestOwnedObjectsAreCollected: a dependent whose owner is deleted goes too.
func TestOwnedObjectsAreCollected(t *testing.T) {
	url, tok := startControl(t)
	code, out := call(t, "POST", url+base+"/agents", tok, `{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Agent","metadata":{"name":"owner"}}`)
	if code != 201 {
		t.Fatalf("create owner: %d %s", code, out)
	}
	var owner api.Agent
	json.Unmarshal(out, &owner)
	dep := fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":"dep","ownerReferences":[{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Agent","name":"owner","uid":%q}]},"spec":{"hostname":"dep.example.com","agent":"owner","target":"http://localhost:1"}}`, owner.Metadata.UID)
	if code, out := call(t, "POST", url+base+"/tunnels", tok, dep); code != 201 {
		t.Fatalf("create dependent: %d %s", code, out)
	}
	if code, out := call(t, "POST", url+base+"/tunnels", tok, `{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":"free"},"spec":{"hostname":"free.example.com","agent":"owner","target":"http://localhost:1"}}`); code != 201 {
		t.Fatalf("create unowned: %d %s", code, out)
	}
	if code, out := call(t, "DELETE", url+base+"/agents/owner", tok, ""); code != 200 {
		t.Fatalf("delete owner: %d %s", code, out)
	}
	waitFor(t, url+base+"/tunnels/dep", tok, "dependent collected", func(o api.Object) bool { return o == nil })
	if code, _ := call(t, "GET", url+base+"/tunnels/free", tok, ""); code != 200 {
		t.Fatalf("unowned tunnel: got %d, want it kept", code)
	}
}
