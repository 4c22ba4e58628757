package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

// BenchmarkWatchFanout measures how long one change takes to reach 1,000
// concurrent API watchers of tunnels, and Control's resident memory while
// they watch. Run it with:
//
//	go test -run XXX -bench WatchFanout -benchtime 20x ./internal/e2e
func BenchmarkWatchFanout(b *testing.B) {
	const watchers = 1000
	c := newControl(b)
	token := c.adminToken()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := `{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":"fan"},"spec":{"hostname":"fan.example.com","agent":"a","target":"http://localhost:8080"}}`
	if code, out, err := request(ctx, "POST", c.url()+prefix+"/tunnels", token, body); err != nil || code != 201 {
		b.Fatalf("create: %d %v %s", code, err, out)
	}
	transport := &http.Transport{MaxIdleConnsPerHost: watchers, MaxConnsPerHost: 0}
	client := &http.Client{Transport: transport}
	defer transport.CloseIdleConnections()

	// Each watcher reports the receive time of each MODIFIED event, keyed
	// by the target port value the change carries.
	type recv struct {
		gen int64
		at  time.Time
	}
	got := make(chan recv, watchers*4)
	var ready sync.WaitGroup
	var wg sync.WaitGroup
	for i := 0; i < watchers; i++ {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "GET", c.url()+prefix+"/tunnels?watch=true", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := client.Do(req)
			ready.Done()
			if err != nil {
				return
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				var ev api.WatchEvent
				if err := jsonUnmarshal(sc.Bytes(), &ev); err != nil || ev.Type != api.Modified {
					continue
				}
				obj, err := api.DecodeObject(ev.Object)
				if err != nil {
					continue
				}
				select {
				case got <- recv{obj.GetMeta().Generation, time.Now()}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	ready.Wait()
	// Round 0 is a warm-up that nobody measures: every watcher must see
	// it, which also proves every store watch is registered.
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i <= b.N; i++ {
		port := 9000 + i%1000
		start := time.Now()
		code, out, err := request(ctx, "PATCH", c.url()+prefix+"/tunnels/fan", token, fmt.Sprintf(`{"spec":{"target":"http://localhost:%d"}}`, port))
		if err != nil || code != 200 {
			b.Fatalf("patch: %d %v %s", code, err, out)
		}
		var obj api.Tunnel
		if err := jsonUnmarshal(out, &obj); err != nil {
			b.Fatal(err)
		}
		deadline := time.After(30 * time.Second)
		for n := 0; n < watchers; {
			select {
			case r := <-got:
				if r.gen != obj.Metadata.Generation {
					continue
				}
				n++
				if i > 0 { // the first round only warms up
					lat = append(lat, r.at.Sub(start))
				}
			case <-deadline:
				b.Fatalf("round %d: only %d of %d watchers got the change within 30s", i, n, watchers)
			}
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	}
	b.ReportMetric(float64(rssKiB(c.pid()))/1024, "control-rss-MiB")
	cancel()
	wg.Wait()
}

// rssKiB reads a process's resident set size from /proc.
func rssKiB(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(f), "kB")))
			return n
		}
	}
	return 0
}
