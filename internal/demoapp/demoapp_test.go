package demoapp

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestDemoApp(t *testing.T) {
	srv := httptest.NewServer(Handler("test"))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/bytes?n=1000")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(body) != 1000 || body[250] != 250 || body[251] != 0 {
		t.Fatalf("got %d bytes (b[250]=%d b[251]=%d), want the 1000-byte pattern", len(body), body[250], body[251])
	}
	payload := strings.Repeat("kakuremichi", 1000)
	resp, err = http.Post(srv.URL+"/upload", "application/octet-stream", strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sum := sha256.Sum256([]byte(payload))
	if want := fmt.Sprintf("%d %s\n", len(payload), hex.EncodeToString(sum[:])); string(got) != want {
		t.Fatalf("upload: got %q, want %q", got, want)
	}
	// Server-sent events arrive one at a time, before the stream ends.
	start := time.Now()
	resp, err = http.Get(srv.URL + "/sse?n=3&interval=300ms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: event 0") {
			break
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("first event after %v, want it before the stream's 600 ms end", d)
	}
	if resp, _ := http.Get(srv.URL + "/bytes?n=-1"); resp.StatusCode != 400 {
		t.Fatalf("bad size: got %d, want 400", resp.StatusCode)
	}
}
