package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// BenchmarkGatewayScale reports one gateway's resident memory with many
// agent peers and many concurrent HTTPS connections: one real agent with a
// tunnel, KAKUREMICHI_BENCH_PEERS-1 more agents created through the API
// with WireGuard keys of their own (peers the gateway holds but that never
// connect, so their probes fail), then KAKUREMICHI_BENCH_CONNS keep-alive
// HTTPS connections to the gateway, each of which has had one request
// answered through the tunnel and is held open while RSS is read. A sample
// of the held connections then answers a second request, so "held" means
// still serving. Defaults 1,000 peers and 10,000 connections; the file
// limit is raised to its hard limit for this process and the nodes it
// starts. Reported, never asserted.
func BenchmarkGatewayScale(b *testing.B) {
	cfg := loadBenchConfig(b)
	peers, conns := benchEnvInt(b, "KAKUREMICHI_BENCH_PEERS", 1000, 1, 100000), benchEnvInt(b, "KAKUREMICHI_BENCH_CONNS", 10000, 1, 1000000)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	saved := lim
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved) })
	// The benchmark process holds one descriptor per connection and the
	// gateway one more per connection; leave room for everything else.
	limited := ""
	if lim.Cur < uint64(conns)+1024 {
		if lim.Cur < 2048 {
			b.Fatalf("KAKUREMICHI_BENCH_CONNS: the file limit is %d, too low to hold connections; raise it (ulimit -Hn)", lim.Cur)
		}
		limited = fmt.Sprintf(" (%d asked; the hard file limit %d allows no more)", conns, lim.Cur)
		conns = int(lim.Cur) - 1024
	}

	c := newCluster(b)
	gw := c.addGateway("gw")
	app := c.addApp("app")
	agent := c.addAgent("home")
	c.waitNodesReady(60 * time.Second)
	c.applyTunnel("web", "scale.example.com", "home", app)
	waitServing(b, benchClient(gw.httpsAddr), "https://scale.example.com/healthz", 200, "ok", 30*time.Second)
	rss0, _, err := procMemory(gw.pid())
	if err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	start := time.Now()
	createAgents(b, c, peers-1)
	waitGatewayPeers(b, c, "gw", peers, 5*time.Minute)
	peersIn := time.Since(start)
	time.Sleep(cfg.idle)
	rssPeers, _, err := procMemory(gw.pid())
	if err != nil {
		b.Fatal(err)
	}

	start = time.Now()
	held := openHeld(b, gw.httpsAddr, "scale.example.com", conns)
	defer func() {
		for _, h := range held {
			h.conn.Close()
		}
	}()
	connsIn := time.Since(start)
	rssConns, peakConns, err := procMemory(gw.pid())
	if err != nil {
		b.Fatal(err)
	}
	agentRSS, _, err := procMemory(agent.pid())
	if err != nil {
		b.Fatal(err)
	}
	// A sample of the held connections still serves.
	step := max(1, len(held)/100)
	for i := 0; i < len(held); i += step {
		if err := held[i].get("scale.example.com"); err != nil {
			b.Fatalf("held connection %d of %d: second request: %v", i, len(held), err)
		}
	}
	b.StopTimer()

	b.ReportMetric(rss0, "gateway-1peer-RSS-MiB")
	b.ReportMetric(rssPeers, "gateway-peers-RSS-MiB")
	b.ReportMetric(rssConns, "gateway-peers+conns-RSS-MiB")
	b.ReportMetric(agentRSS, "agent-RSS-MiB")
	md := fmt.Sprintf(`## One gateway with many peers and connections

`+"`BenchmarkGatewayScale`"+`: one gateway, one real agent with a tunnel, %d more agents created through the API with
WireGuard keys of their own (the gateway holds them as peers; they never connect, so its probes of them fail), then %d%s
keep-alive HTTPS connections from the benchmark process, each with one request answered through the tunnel, held open
together. A sample of 1 in %d held connections then answers a second request.

| gateway state | RSS MiB |
|---|---:|
| 1 agent peer, idle | %.1f |
| %d agent peers, %v idle (peers in place %.1f s after the first API call) | %.1f |
| %d agent peers and %d HTTPS connections held (opened in %.1f s) | %.1f (peak %.1f) |

The real agent's RSS after serving those requests: %.1f MiB.
`, peers-1, conns, limited, step, rss0, peers, cfg.idle, peersIn.Seconds(), rssPeers, peers, conns, connsIn.Seconds(), rssConns, peakConns, agentRSS)
	cfg.writeFragment(b, "scale.md", md)
}

func benchEnvInt(b *testing.B, name string, def, lo, hi int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		b.Fatalf("%s: got %q, want a whole number from %d to %d", name, v, lo, hi)
	}
	return n
}

// createAgents creates n agents through the API, each with a random
// WireGuard public key, 16 at a time.
func createAgents(b *testing.B, c *cluster, n int) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var key [32]byte
			rand.Read(key[:])
			body := fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Agent","metadata":{"name":"peer-%05d"},"spec":{"publicKey":%q}}`,
				i, base64.StdEncoding.EncodeToString(key[:]))
			code, out, err := request(context.Background(), "POST", c.control.url()+prefix+"/agents", c.token, body)
			if err == nil && code != 201 {
				err = fmt.Errorf("create agent peer-%05d: %d %s", i, code, out)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// waitGatewayPeers waits until the gateway reports at least n agent peers.
func waitGatewayPeers(b *testing.B, c *cluster, name string, n int, within time.Duration) {
	b.Helper()
	deadline := time.Now().Add(within)
	got := 0
	for time.Now().Before(deadline) {
		_, out := c.api("GET", "/gateways/"+name, "")
		var g api.Gateway
		decodeJSON(b, out, &g)
		got = len(g.Status.Agents)
		if g.Status.Peers != nil { // more than api.ListedPeers: summed up
			got = g.Status.Peers.Total
		}
		if got >= n {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	b.Fatalf("gateway %s reports %d agent peers after %v, want %d", name, got, within, n)
}

// heldConn is a client's keep-alive HTTPS connection to a gateway.
type heldConn struct {
	conn net.Conn
	br   *bufio.Reader
}

// get sends one GET /healthz on the connection and reads the answer.
func (h *heldConn) get(host string) error {
	h.conn.SetDeadline(time.Now().Add(30 * time.Second))
	defer h.conn.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(h.conn, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", host); err != nil {
		return err
	}
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

// openHeld opens n HTTPS connections to addr, 64 at a time, each with one
// request answered.
func openHeld(b *testing.B, addr, host string, n int) []*heldConn {
	b.Helper()
	held := make([]*heldConn, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", addr,
				&tls.Config{ServerName: host, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			if err == nil {
				h := &heldConn{conn: conn, br: bufio.NewReaderSize(conn, 1024)}
				if err = h.get(host); err == nil {
					held[i] = h
					return
				}
				conn.Close()
			}
			mu.Lock()
			if firstErr == nil {
				firstErr = fmt.Errorf("connection %d: %w", i, err)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		for _, h := range held {
			if h != nil {
				h.conn.Close()
			}
		}
		b.Fatal(firstErr)
	}
	return held
}
