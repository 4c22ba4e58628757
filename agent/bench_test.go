package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api/bridge"
)

// BenchmarkRequests measures HTTP requests per second to an app directly
// and through agent forwarding (the gateway's WireGuard device, the
// preamble, the agent, the app), in the same run, and reports both and
// their ratio. Each client keeps its connection (one stream) alive, as a
// gateway's pool would; "conns" is how many run at once.
func BenchmarkRequests(b *testing.B) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the app")
	}))
	b.Cleanup(app.Close)
	f := startAgent(b, Config{Logger: slog.New(slog.DiscardHandler)}, bridge.Forward{Tunnel: "web", Target: app.URL, Enabled: true})

	direct := &http.Transport{MaxIdleConnsPerHost: 64}
	tunnel := &http.Transport{
		MaxIdleConnsPerHost: 64,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return f.gw.open(ctx, agentAddr, "web")
		},
	}
	b.Cleanup(direct.CloseIdleConnections)
	b.Cleanup(tunnel.CloseIdleConnections)

	for _, conns := range []int{1, 8} {
		b.Run("conns="+strconv.Itoa(conns), func(b *testing.B) {
			directRate := requestRate(b, direct, app.URL, conns)
			tunnelRate := requestRate(b, tunnel, "http://fuga.sample.com", conns)
			b.ReportMetric(directRate, "direct-req/s")
			b.ReportMetric(tunnelRate, "agent-req/s")
			b.ReportMetric(tunnelRate/directRate, "agent/direct")
		})
	}
}

// requestRate sends b.N requests over conns concurrent clients and
// returns requests per second.
func requestRate(b *testing.B, rt http.RoundTripper, url string, conns int) float64 {
	b.Helper()
	client := &http.Client{Transport: rt, Timeout: 10 * time.Second}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex // guards firstErrr
		firstErr error
	)
	next := make(chan struct{}, b.N)
	for range b.N {
		next <- struct{}{}
	}
	close(next)
	start := time.Now()
	for range conns {
		wg.Go(func() {
			for range next {
				resp, err := client.Get(url + "/")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		b.Fatalf("request to %s: %v", url, firstErr)
	}
	return float64(b.N) / elapsed.Seconds()
}

// BenchmarkThroughput measures bulk bytes per second from an app directly
// and through agent forwarding, in the same run, and reports both and
// their ratio.
func BenchmarkThroughput(b *testing.B) {
	const chunk = 1 << 20
	source := serveTCP(b, func(c net.Conn) {
		buf := make([]byte, 8)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		n := int64(buf[0])<<24 | int64(buf[1])<<16 | int64(buf[2])<<8 | int64(buf[3])
		io.Copy(c, io.LimitReader(zeroReader{}, n*chunk))
	})
	f := startAgent(b, Config{Logger: slog.New(slog.DiscardHandler)}, bridge.Forward{Tunnel: "bulk", Target: "tcp://" + source, Enabled: true})

	fetch := func(c net.Conn) {
		n := b.N
		hdr := []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n), 0, 0, 0, 0}
		if _, err := c.Write(hdr); err != nil {
			b.Fatal(err)
		}
		got, err := io.Copy(io.Discard, c)
		if err != nil || got != int64(n)*chunk {
			b.Fatalf("received %d bytes, %v, want %d", got, err, int64(n)*chunk)
		}
	}
	b.SetBytes(chunk)
	b.ResetTimer()

	start := time.Now()
	dc, err := net.Dial("tcp", source)
	if err != nil {
		b.Fatal(err)
	}
	fetch(dc)
	dc.Close()
	directRate := float64(b.N*chunk) / time.Since(start).Seconds()

	start = time.Now()
	s := f.gw.mustOpen(b, agentAddr, "bulk")
	fetch(s)
	s.Close()
	tunnelRate := float64(b.N*chunk) / time.Since(start).Seconds()

	b.ReportMetric(directRate/1e6, "direct-MB/s")
	b.ReportMetric(tunnelRate/1e6, "agent-MB/s")
	b.ReportMetric(tunnelRate/directRate, "agent/direct")
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
