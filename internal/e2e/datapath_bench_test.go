package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkDataPath runs the same workloads directly against the demo app
// and through gateway + WireGuard + agent (real processes), in the same run,
// alternating, and reports each with the tunnel/direct ratio. Run it with:
//
//	go test -run XXX -bench DataPath -benchtime 1x ./internal/e2e
//
// Figures are reported, never asserted.
func BenchmarkDataPath(b *testing.B) {
	c := newCluster(b)
	gw := c.addGateway("gw1")
	app := c.addApp("app")
	agent := c.addAgent("home")
	c.waitNodesReady(60 * time.Second)
	c.applyTunnel("web", "bench.example.com", "home", app)
	tunnel := gatewayClient(gw.httpAddr, 60*time.Second)
	waitServing(b, tunnel, "http://bench.example.com/healthz", 200, "ok", 30*time.Second)
	direct := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	paths := []struct {
		name   string
		client *http.Client
		base   string
	}{{"direct", direct, app}, {"tunnel", tunnel, "http://bench.example.com"}}
	procs := []int{gw.pid(), agent.pid()}

	bulk := func(streams int, each int64) func(*http.Client, string) (float64, error) {
		return func(cl *http.Client, base string) (float64, error) {
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, streams)
			for i := 0; i < streams; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := cl.Get(fmt.Sprintf("%s/bytes?n=%d", base, each))
					if err != nil {
						errs <- err
						return
					}
					defer resp.Body.Close()
					n, err := io.Copy(io.Discard, resp.Body)
					if err == nil && n != each {
						err = fmt.Errorf("got %d bytes, want %d", n, each)
					}
					if err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			if err := <-errs; err != nil {
				return 0, err
			}
			return float64(streams) * float64(each) / time.Since(start).Seconds() / 1e6, nil
		}
	}
	type result struct{ mbs, cpuPerGB float64 }
	for _, w := range []struct {
		name    string
		streams int
		each    int64
	}{{"bulk-1stream", 1, 256 << 20}, {"bulk-4streams", 4, 64 << 20}} {
		b.Run(w.name, func(b *testing.B) {
			res := map[string]*result{}
			for i := 0; i < b.N; i++ {
				for _, p := range paths {
					cpu0 := cpuSeconds(procs)
					mbs, err := bulk(w.streams, w.each)(p.client, p.base)
					if err != nil {
						b.Fatalf("%s: %v", p.name, err)
					}
					gb := float64(w.streams) * float64(w.each) / 1e9
					r := &result{mbs: mbs}
					if p.name == "tunnel" {
						r.cpuPerGB = (cpuSeconds(procs) - cpu0) / gb
					}
					res[p.name] = r
				}
			}
			b.ReportMetric(res["direct"].mbs, "direct-MB/s")
			b.ReportMetric(res["tunnel"].mbs, "tunnel-MB/s")
			b.ReportMetric(res["tunnel"].mbs/res["direct"].mbs, "tunnel/direct")
			b.ReportMetric(res["tunnel"].cpuPerGB, "tunnel-cpu-s/GB")
		})
	}
	for _, conns := range []int{1, 50} {
		b.Run(fmt.Sprintf("requests-%dconns", conns), func(b *testing.B) {
			type lat struct{ rps, p50, p99 float64 }
			res := map[string]lat{}
			for i := 0; i < b.N; i++ {
				for _, p := range paths {
					rps, p50, p99, err := load(p.client, p.base+"/healthz", conns, 3*time.Second)
					if err != nil {
						b.Fatalf("%s: %v", p.name, err)
					}
					res[p.name] = lat{rps, p50, p99}
				}
			}
			b.ReportMetric(res["direct"].rps, "direct-req/s")
			b.ReportMetric(res["tunnel"].rps, "tunnel-req/s")
			b.ReportMetric(res["tunnel"].rps/res["direct"].rps, "tunnel/direct-req/s")
			b.ReportMetric(res["direct"].p50, "direct-p50-ms")
			b.ReportMetric(res["tunnel"].p50, "tunnel-p50-ms")
			b.ReportMetric(res["direct"].p99, "direct-p99-ms")
			b.ReportMetric(res["tunnel"].p99, "tunnel-p99-ms")
		})
	}
}

// load sends requests on conns connections for d and returns requests/s
// and the p50/p99 latency in milliseconds.
func load(cl *http.Client, url string, conns int, d time.Duration) (float64, float64, float64, error) {
	var mu sync.Mutex
	var lats []time.Duration
	var firstErr error
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				start := time.Now()
				resp, err := cl.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, 0, 0, firstErr
	}
	if len(lats) == 0 {
		return 0, 0, 0, fmt.Errorf("no request completed")
	}
	slices.Sort(lats)
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	return float64(len(lats)) / d.Seconds(), ms(lats[len(lats)/2]), ms(lats[len(lats)*99/100]), nil
}

// cpuSeconds sums user+system CPU time of processes from /proc.
func cpuSeconds(pids []int) float64 {
	total := 0.0
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces).
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		total += (utime + stime) / 100 // USER_HZ is 100 on Linux
	}
	return total
}
