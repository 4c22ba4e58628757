package wgnet

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveHTTP runs an HTTP server on n's overlay address and returns its
// port. It is shut down when t ends.
func serveHTTP(t testing.TB, n *node, h http.Handler) int {
	t.Helper()
	l, err := n.dev.Listen("tcp", ":0")
	if err != nil {
		t.Fatalf("%s: Listen: %v", n.name, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("%s: Serve: got %v, want %v", n.name, err, http.ErrServerClosed)
		}
	})
	return l.Addr().(*net.TCPAddr).Port
}

// httpClient dials through n's tunnel.
func httpClient(t testing.TB, n *node) *http.Client {
	tr := &http.Transport{DialContext: n.dev.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestHTTPThroughTunnel(t *testing.T) {
	checkGoroutines(t)
	agent, gw := pair(t)
	port := serveHTTP(t, agent, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" from "+r.RemoteAddr+": "+string(body))
	}))
	c := httpClient(t, gw)
	url := "http://" + hostPort(agent.addr, port) + "/"

	tests := []struct {
		method, body string
		want         string
	}{
		{"GET", "", "GET from 100.64.0.1:"},
		{"POST", "hello agent", "POST from 100.64.0.1:"},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, url, strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, url, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s %s: reading body: %v", tt.method, url, err)
		}
		if !strings.HasPrefix(string(got), tt.want) || !strings.HasSuffix(string(got), ": "+tt.body) {
			t.Errorf("%s %s: got body %q, want %q…%q", tt.method, url, got, tt.want, ": "+tt.body)
		}
	}
	_ = context.Background
}
