package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkIdleRSS reports the resident memory of idle nodes: an agent with
// one tunnel, and a gateway with that one agent as its only peer (plus
// Control, for scale). The tunnel serves one HTTPS request first, so the
// path has been set up once; then the nodes sit idle for
// KAKUREMICHI_BENCH_IDLE before /proc/<pid>/status is read. Reported,
// never asserted; hack/bench.sh puts it in docs/benchmarks.md.
func BenchmarkIdleRSS(b *testing.B) {
	cfg := loadBenchConfig(b)
	c := newCluster(b)
	gw := c.addGateway("gw")
	app := c.addApp("app")
	agent := c.addAgent("home")
	c.waitNodesReady(60 * time.Second)
	c.applyTunnel("web", "idle.example.com", "home", app)
	waitServing(b, benchClient(gw.httpsAddr), "https://idle.example.com/healthz", 200, "ok", 30*time.Second)
	b.ResetTimer()
	time.Sleep(cfg.idle)
	b.StopTimer()

	type row struct {
		what      string
		rss, peak float64
		target    string
	}
	var rows []row
	for _, n := range []struct {
		what, metric string
		pid          int
	}{{"agent, idle, one tunnel", "agent", agent.pid()}, {"gateway, idle, one agent", "gateway", gw.pid()},
		{"Control (embedded etcd), one gateway and one agent", "control", c.control.pid()}} {
		rss, peak, err := procMemory(n.pid)
		if err != nil {
			b.Fatalf("%s: %v", n.what, err)
		}
		b.ReportMetric(rss, n.metric+"-RSS-MiB")
		r := row{what: n.what, rss: rss, peak: peak, target: "–"}
		if n.metric == "agent" {
			r.target = "< 30 MB (28.6 MiB): met"
			if rss*(1<<20)/1e6 >= 30 {
				r.target = "< 30 MB (28.6 MiB): **not met**"
			}
		}
		rows = append(rows, r)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "## Idle memory\n\n`BenchmarkIdleRSS`: Control, one gateway, one agent and the demo app as processes, one tunnel that has\n")
	fmt.Fprintf(&sb, "served one HTTPS request, then %v idle. RSS and its peak (VmRSS, VmHWM) from `/proc/<pid>/status`.\n\n", cfg.idle)
	fmt.Fprintf(&sb, "| process | RSS MiB | peak MiB | target (issue 7) |\n|---|---:|---:|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&sb, "| %s | %.1f | %.1f | %s |\n", r.what, r.rss, r.peak, r.target)
	}
	cfg.writeFragment(b, "rss.md", sb.String())
}
