package e2e

import (
	"strings"
	"testing"
)

// TestSuiteMarkdownMarksTargets: the report's target rows compare the
// tunnel with the reverse proxy of the same run, and with direct for added
// latency, and say met or not met on the right side of each threshold;
// the floor of the added latency is the proxy's plus one round trip
// between two processes.
func TestSuiteMarkdownMarksTargets(t *testing.T) {
	paths := []*benchPath{{name: "direct"}, {name: "proxy", pids: []int{1}}, {name: "tunnel", pids: []int{2, 3}}}
	workloads := []benchWorkload{{key: "bulk1", title: "b1", streams: 1}, {key: "bulk4", title: "b4", streams: 4},
		{key: "up1", title: "u1", streams: 1, upload: true}, {key: "req1", title: "r1", conns: 1}, {key: "req50", title: "r50", conns: 50}}
	med := map[string]map[string]benchSample{
		"bulk1": {"direct": {mbs: 3000}, "proxy": {mbs: 1000, cpuPerGB: 1}, "tunnel": {mbs: 450, cpuPerGB: 4.0}},
		"bulk4": {"direct": {mbs: 3000}, "proxy": {mbs: 1000}, "tunnel": {mbs: 100}},
		"up1":   {"direct": {mbs: 2000}, "proxy": {mbs: 800}, "tunnel": {mbs: 200, cpuPerGB: 5}},
		"req1":  {"direct": {rps: 10000, p50: 0.1}, "proxy": {rps: 5000, p50: 0.2, added: 0.1}, "tunnel": {rps: 2000, p50: 0.45, added: 0.35}},
		"req50": {"direct": {rps: 30000, p99: 5}, "proxy": {rps: 10000, p99: 10}, "tunnel": {rps: 7900, p99: 15}},
	}
	samples := map[string]map[string][]benchSample{}
	for k, m := range med {
		samples[k] = map[string][]benchSample{}
		for p, s := range m {
			samples[k][p] = []benchSample{s}
		}
	}
	md := suiteMarkdown(benchConfig{rounds: 1, bulk: 1 << 20, duration: 1}, paths, workloads, samples, med, nil, 1.5, 0.08)
	for _, want := range []string{
		"| bulk CPU (gateway+agent, 1 stream) ≤ 4.0 s/GB | 4.00 s/GB: met |",
		"| 1-stream throughput ≥ 45% of proxy | 45%: met |",
		"| 50-conn requests/s ≥ 80% of proxy | 79%: **not met** |",
		"| 50-conn p99 ≤ 1.5× proxy p99 | 1.50×: met |",
		"| 1-conn p50 added over direct < 0.3 ms | 0.350 ms: **not met** (floor here 0.180 ms) |",
		"came back in 0.080 ms at p50",
		"proxy's 0.100 ms and that round trip over direct: 0.180 ms",
		"| direct | 3000 | 300% | – | 3000 | 300% | – | 2000 | 250% | – |",
		"| tunnel | 450 | 45% | 4.00 | 100 | 10% | 0.00 | 200 | 25% | 5.00 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q; got:\n%s", want, md)
		}
	}
}
