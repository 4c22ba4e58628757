package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// benchClient is a keep-alive client that sends every request to addr,
// with enough idle connections for conns concurrent requests.
func benchClient(addr string, conns int) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: conns,
		DisableCompression:  true,
	}}
}

// load sends n small GETs to url with host over conns concurrent
// connections and returns the wall time and each request's latency.
func load(b *testing.B, c *http.Client, url, host string, n, conns int) (time.Duration, []time.Duration) {
	b.Helper()
	lat := make([]time.Duration, n)
	var next sync.Mutex // guards i
	i := 0
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	start := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				next.Lock()
				k := i
				i++
				next.Unlock()
				if k >= n {
					return
				}
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Host = host
				t0 := time.Now()
				resp, err := c.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				lat[k] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatalf("request to %s: %v", url, firstErr)
	}
	return time.Since(start), lat
}

func percentile(lat []time.Duration, p float64) float64 {
	s := slices.Clone(lat)
	slices.Sort(s)
	return float64(s[int(float64(len(s)-1)*p)].Microseconds()) / 1000
}

// BenchmarkRequests compares small requests sent directly to the
// application with the same requests through gateway, WireGuard and agent,
// at 1 and 50 concurrent connections: requests per second, p50 and p99
// latency of each, and the ratio of tunnel to direct throughput.
func BenchmarkRequests(b *testing.B) {
	e := newEnv(b)
	for _, conns := range []int{1, 50} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			direct := benchClient(e.app.addr(), conns)
			tunnel := benchClient(e.gw.httpAddr, conns)
			defer direct.CloseIdleConnections()
			defer tunnel.CloseIdleConnections()
			n := max(b.N, conns)
			// Warm both pools so that dials are not measured.
			load(b, direct, "http://x/", hostA, conns, conns)
			load(b, tunnel, "http://x/", hostA, conns, conns)
			b.ResetTimer()
			dWall, dLat := load(b, direct, "http://x/", hostA, n, conns)
			tWall, tLat := load(b, tunnel, "http://x/", hostA, n, conns)
			b.StopTimer()
			dRate, tRate := float64(n)/dWall.Seconds(), float64(n)/tWall.Seconds()
			b.ReportMetric(dRate, "direct-req/s")
			b.ReportMetric(tRate, "tunnel-req/s")
			b.ReportMetric(tRate/dRate, "tunnel/direct")
			b.ReportMetric(percentile(dLat, 0.50), "direct-p50-ms")
			b.ReportMetric(percentile(dLat, 0.99), "direct-p99-ms")
			b.ReportMetric(percentile(tLat, 0.50), "tunnel-p50-ms")
			b.ReportMetric(percentile(tLat, 0.99), "tunnel-p99-ms")
		})
	}
}

// BenchmarkThroughput compares one stream's download speed directly from
// the application and through the tunnel, 64 MiB per iteration each.
func BenchmarkThroughput(b *testing.B) {
	const size = 64 << 20
	e := newEnv(b)
	direct := benchClient(e.app.addr(), 1)
	tunnel := benchClient(e.gw.httpAddr, 1)
	defer direct.CloseIdleConnections()
	defer tunnel.CloseIdleConnections()
	fetch := func(c *http.Client) time.Duration {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://x/download?n=%d", size), nil)
		req.Host = hostA
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != size {
			b.Fatalf("download: got %d bytes, %v; want %d", n, err, size)
		}
		return time.Since(start)
	}
	var dTime, tTime time.Duration
	b.ResetTimer()
	for range b.N {
		dTime += fetch(direct)
		tTime += fetch(tunnel)
	}
	b.StopTimer()
	mb := float64(size) * float64(b.N) / 1e6
	b.ReportMetric(mb/dTime.Seconds(), "direct-MB/s")
	b.ReportMetric(mb/tTime.Seconds(), "tunnel-MB/s")
	b.ReportMetric(dTime.Seconds()/tTime.Seconds(), "tunnel/direct")
}
