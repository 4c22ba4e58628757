package wgnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
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
	leakcheck.Goroutines(t)
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
}

// TestIPv6Overlay: an overlay in IPv6 works the same way.
func TestIPv6Overlay(t *testing.T) {
	leakcheck.Goroutines(t)
	agent, gw := pairOn(t, "fd7a:6b6b::1", "fd7a:6b6b::2")
	c := dialEcho(t, gw, agent, serveEcho(t, agent))
	if got := c.LocalAddr().String(); !strings.HasPrefix(got, "[fd7a:6b6b::1]:") {
		t.Errorf("local address: got %s, want [fd7a:6b6b::1]:port", got)
	}
	if _, err := gw.dev.DialContext(context.Background(), "tcp4", "[fd7a:6b6b::2]:80"); err == nil {
		t.Errorf("tcp4 to an IPv6 address: got nil error, want one")
	}
}

// TestConcurrentUse: SetPeers, Peers and DialContext from several
// goroutines at once, under the race detector; every SetPeers of the same
// set after the first reports no change.
func TestConcurrentUse(t *testing.T) {
	leakcheck.Goroutines(t)
	agent, gw := pair(t)
	port := serveEcho(t, agent)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				switch i {
				case 0, 1:
					changed, err := gw.dev.SetPeers([]Peer{agent.asPassive()})
					if err != nil || changed {
						errs <- fmt.Errorf("SetPeers: got changed=%v err=%v, want false, nil", changed, err)
					}
				case 2:
					if _, err := gw.dev.Peers(); err != nil {
						errs <- err
					}
				case 3:
					c, err := dialTimeout(gw, hostPort(agent.addr, port), 5*time.Second)
					if err != nil {
						errs <- err
						continue
					}
					if err := roundTrip(c, "x", 5*time.Second); err != nil {
						errs <- err
					}
					c.Close()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
