package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// benchPath is one way from the client to the app.
type benchPath struct {
	name   string
	short  string // metric prefix
	client *http.Client
	base   string
	// pids are the processes whose CPU time is the cost of the path
	// (gateway and agent, or the reverse proxy); none for direct.
	pids []int
}

// benchWorkload is one measurement, run on every path in each round.
type benchWorkload struct {
	key, title string
	streams    int // bulk: concurrent downloads (or uploads)
	upload     bool
	conns      int // small requests: concurrent connections
}

// benchSample is a workload's result on one path in one round.
type benchSample struct {
	mbs, cpuPerGB     float64 // bulk
	rps, p50, p99     float64 // small requests
	cpuMsPer1k, added float64 // small requests: CPU per 1000 requests, p50 over direct
}

// BenchmarkSuite measures, in one run, the app directly, a plain TLS
// reverse proxy in front of it (the baseline the targets are
// ratios of), the tunnel through real gateway and agent processes over
// HTTPS, with KAKUREMICHI_BENCH_BASE_BIN the same tunnel built from
// another git ref, and with KAKUREMICHI_BENCH_TUN=1 the tunnel through a
// gateway on a kernel TUN interface. Workloads: downloads on 1 and 4
// streams and an upload, with the CPU of the path's processes per GB, and
// small requests on 1 and 50 keep-alive connections. Every workload runs on every path in turn, in rounds,
// the starting path rotating each round; the report holds the medians.
// Figures are reported, never asserted. hack/bench.sh runs it and writes
// docs/benchmarks.md; see bench_helpers_test.go for the knobs.
func BenchmarkSuite(b *testing.B) {
	cfg := loadBenchConfig(b)
	srv := buildBenchsrv(b)
	sealGBs := chachaSealRate()

	appAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	app := startBenchProc(b, "app", srv, nil, "app", "-listen", appAddr)
	direct := benchClient(appAddr)
	app.waitOK(b, direct, "http://"+appAddr+"/healthz")

	proxyAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	proxy := startBenchProc(b, "proxy", srv, nil, "proxy", "-listen", proxyAddr, "-target", "http://"+appAddr)
	proxied := benchClient(proxyAddr)
	proxy.waitOK(b, proxied, "https://proxy.bench.example.com/healthz")

	echoAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	startBenchProc(b, "udpecho", srv, nil, "udpecho", "-listen", echoAddr)

	var c *cluster
	var ns *benchNetns
	if cfg.tun {
		// Control listens where a gateway in the namespace reaches it.
		ns = newBenchNetns(b)
		c = newClusterAt(b, ns.host)
	} else {
		c = newCluster(b)
	}
	c.debug = cfg.profile != ""
	gw := c.addGateway("gw")
	agent := c.addAgent("home")
	var baseGW *gatewayProc
	var baseAgent *controlProc
	if cfg.baseBin != "" {
		withBinary(cfg.baseBin, func() {
			baseGW = c.addGateway("gw-base")
			baseAgent = c.addAgent("home-base")
		})
	}
	var tunGW *benchProc
	var tunHTTPS string
	if cfg.tun {
		tunGW, tunHTTPS = addTUNGateway(b, c, ns, "gw-tun")
	}
	c.waitNodesReady(60 * time.Second)
	c.applyTunnel("bench", "bench.example.com", "home", "http://"+appAddr)
	paths := []*benchPath{
		{name: "direct to the app (HTTP)", short: "direct", client: direct, base: "http://" + appAddr},
		{name: "reverse proxy only (HTTPS, no tunnel)", short: "proxy", client: proxied, base: "https://proxy.bench.example.com",
			pids: []int{proxy.pid()}},
		{name: "tunnel (HTTPS, gateway + WireGuard + agent)", short: "tunnel", client: benchClient(gw.httpsAddr), base: "https://bench.example.com",
			pids: []int{gw.pid(), agent.pid()}},
	}
	if baseGW != nil {
		c.applyTunnel("bench-base", "base.bench.example.com", "home-base", "http://"+appAddr)
		paths = append(paths, &benchPath{name: "tunnel built from " + cfg.baseName, short: "base", client: benchClient(baseGW.httpsAddr),
			base: "https://base.bench.example.com", pids: []int{baseGW.pid(), baseAgent.pid()}})
	}
	if tunGW != nil {
		paths = append(paths, &benchPath{name: "tunnel, gateway on a kernel TUN (netns, veth)", short: "tun", client: benchClient(tunHTTPS),
			base: "https://bench.example.com", pids: []int{tunGW.pid(), agent.pid()}})
	}
	for _, p := range paths {
		waitServing(b, p.client, p.base+"/healthz", 200, "ok", 30*time.Second)
		// Warm up: connections, certificates, buffers and the first
		// window growth are not measured.
		if _, err := benchBulk(p.client, p.base, 4, min(cfg.bulk, 16<<20)); err != nil {
			b.Fatalf("%s: warm-up: %v", p.name, err)
		}
	}

	workloads := []benchWorkload{
		{key: "bulk1", title: "download, 1 stream", streams: 1},
		{key: "bulk4", title: "download, 4 streams", streams: 4},
		{key: "up1", title: "upload, 1 stream", streams: 1, upload: true},
		{key: "req1", title: "small requests, 1 connection", conns: 1},
		{key: "req50", title: "small requests, 50 connections", conns: 50},
	}
	if cfg.profile != "" {
		profileTunnel(b, cfg, workloads, paths[2], gw.controlProc, agent)
		return
	}
	// samples[workload][path] holds one sample per round.
	samples := map[string]map[string][]benchSample{}
	for _, w := range workloads {
		samples[w.key] = map[string][]benchSample{}
	}
	// hops[r] is round r's median UDP round trip to udpecho, timed right
	// after the round's requests on one connection.
	var hops []float64
	b.ResetTimer()
	for round := range cfg.rounds {
		for _, w := range workloads {
			directP50 := 0.0
			for i := range paths {
				p := paths[(i+round)%len(paths)]
				s := runWorkload(b, cfg, w, p)
				if p == paths[0] {
					directP50 = s.p50
				}
				samples[w.key][p.name] = append(samples[w.key][p.name], s)
			}
			// Added latency is paired within a round: each path against
			// direct measured moments apart.
			if w.conns > 0 {
				for _, p := range paths {
					ss := samples[w.key][p.name]
					ss[len(ss)-1].added = ss[len(ss)-1].p50 - directP50
				}
			}
			if w.key == "req1" {
				hop, err := udpRoundTrip(echoAddr, min(cfg.duration, time.Second))
				if err != nil {
					b.Fatalf("UDP round trip: %v", err)
				}
				hops = append(hops, hop)
			}
			b.Logf("round %d/%d: %s done", round+1, cfg.rounds, w.title)
		}
	}
	b.StopTimer()

	med := map[string]map[string]benchSample{}
	for _, w := range workloads {
		med[w.key] = map[string]benchSample{}
		for _, p := range paths {
			ss := samples[w.key][p.name]
			pick := func(f func(benchSample) float64) float64 {
				xs := make([]float64, len(ss))
				for i, s := range ss {
					xs[i] = f(s)
				}
				return median(xs)
			}
			med[w.key][p.name] = benchSample{
				mbs: pick(func(s benchSample) float64 { return s.mbs }), cpuPerGB: pick(func(s benchSample) float64 { return s.cpuPerGB }),
				rps: pick(func(s benchSample) float64 { return s.rps }), p50: pick(func(s benchSample) float64 { return s.p50 }),
				p99: pick(func(s benchSample) float64 { return s.p99 }), cpuMsPer1k: pick(func(s benchSample) float64 { return s.cpuMsPer1k }),
				added: pick(func(s benchSample) float64 { return s.added }),
			}
		}
	}
	hop := median(hops)
	b.ReportMetric(hop, "udp-round-trip-ms")
	for _, p := range paths {
		m := func(k string) benchSample { return med[k][p.name] }
		b.ReportMetric(m("bulk1").mbs, p.short+"-1stream-MB/s")
		b.ReportMetric(m("bulk4").mbs, p.short+"-4streams-MB/s")
		b.ReportMetric(m("up1").mbs, p.short+"-upload-MB/s")
		b.ReportMetric(m("req50").rps, p.short+"-50conns-req/s")
		b.ReportMetric(m("req50").p99, p.short+"-50conns-p99-ms")
		b.ReportMetric(m("req1").p50, p.short+"-1conn-p50-ms")
		if p.pids != nil {
			b.ReportMetric(m("bulk1").cpuPerGB, p.short+"-cpu-s/GB")
		}
	}

	// Peak memory of the nodes after the whole run. The TUN path shares
	// the tunnel path's agent.
	type node struct {
		what string
		pid  int
	}
	nodes := []node{{"gateway", gw.pid()}, {"agent", agent.pid()}, {"reverse proxy", proxy.pid()}}
	if baseGW != nil {
		nodes = append(nodes, node{"base gateway", baseGW.pid()}, node{"base agent", baseAgent.pid()})
	}
	if tunGW != nil {
		nodes = append(nodes, node{"TUN gateway", tunGW.pid()})
	}
	var peaks []string
	for _, n := range nodes {
		if _, peak, err := procMemory(n.pid); err == nil {
			peaks = append(peaks, fmt.Sprintf("%s %.0f MiB", n.what, peak))
		}
	}
	cfg.writeFragment(b, "suite.md", suiteMarkdown(cfg, paths, workloads, samples, med, peaks, sealGBs, hop))
}

// profileTunnel records CPU profiles of the tunnel's gateway and agent
// while each workload runs again and again on the tunnel path, for
// profileSeconds each, into cfg.profile.
func profileTunnel(b *testing.B, cfg benchConfig, workloads []benchWorkload, p *benchPath, gw, agent *controlProc) {
	b.Helper()
	const profileSeconds = 5
	for _, w := range workloads {
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for _, n := range []struct {
			what string
			proc *controlProc
		}{{"gateway", gw}, {"agent", agent}} {
			wg.Go(func() {
				resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", n.proc.debugAddr, profileSeconds))
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				out, err := io.ReadAll(resp.Body)
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("%s: %s: %s", n.what, resp.Status, out)
				}
				if err == nil {
					err = os.WriteFile(filepath.Join(cfg.profile, w.key+"-"+n.what+".pprof"), out, 0o644)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		for running := true; running; {
			runWorkload(b, cfg, w, p)
			select {
			case <-done:
				running = false
			default:
			}
		}
		close(errs)
		for err := range errs {
			b.Fatalf("%s: profile: %v", w.title, err)
		}
		b.Logf("profiled %s in %s", w.title, cfg.profile)
	}
}

// chachaSealRate returns how many GB/s one goroutine seals with
// ChaCha20-Poly1305 in 1420-byte packets over half a second.
func chachaSealRate() float64 {
	aead, _ := chacha20poly1305.New(make([]byte, chacha20poly1305.KeySize))
	pkt := make([]byte, 1420)
	out := make([]byte, 0, len(pkt)+aead.Overhead())
	nonce := make([]byte, aead.NonceSize())
	n := 0
	start := time.Now()
	for time.Since(start) < 500*time.Millisecond {
		for range 100 {
			out = aead.Seal(out[:0], nonce, pkt, nil)
		}
		n += 100
	}
	return float64(n*len(pkt)) / time.Since(start).Seconds() / 1e9
}

func runWorkload(b *testing.B, cfg benchConfig, w benchWorkload, p *benchPath) benchSample {
	b.Helper()
	if w.streams > 0 {
		cpu0 := cpuSeconds(p.pids)
		bulk := benchBulk
		if w.upload {
			bulk = benchUpload
		}
		mbs, err := bulk(p.client, p.base, w.streams, cfg.bulk)
		if err != nil {
			b.Fatalf("%s, %s: %v", p.name, w.title, err)
		}
		s := benchSample{mbs: mbs}
		if p.pids != nil {
			s.cpuPerGB = (cpuSeconds(p.pids) - cpu0) / (float64(w.streams) * float64(cfg.bulk) / 1e9)
		}
		return s
	}
	url := p.base + "/healthz"
	// A short warm-up opens the connections, so dials and handshakes are
	// not measured.
	if _, err := benchLoad(p.client, url, w.conns, min(cfg.duration/5, 500*time.Millisecond)); err != nil {
		b.Fatalf("%s, %s: warm-up: %v", p.name, w.title, err)
	}
	cpu0 := cpuSeconds(p.pids)
	r, err := benchLoad(p.client, url, w.conns, cfg.duration)
	if err != nil {
		b.Fatalf("%s, %s: %v", p.name, w.title, err)
	}
	s := benchSample{rps: r.rps, p50: r.p50, p99: r.p99}
	if p.pids != nil {
		s.cpuMsPer1k = (cpuSeconds(p.pids) - cpu0) * 1e3 / float64(r.requests) * 1000
	}
	return s
}

func suiteMarkdown(cfg benchConfig, paths []*benchPath, workloads []benchWorkload, samples map[string]map[string][]benchSample,
	med map[string]map[string]benchSample, peaks []string, sealGBs, hop float64) string {
	var sb strings.Builder
	pf := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	proxy := paths[1].name
	pct := func(x, of float64) string {
		if of == 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f%%", 100*x/of)
	}
	cpu := func(p *benchPath, x float64, format string) string {
		if p.pids == nil {
			return "–"
		}
		return fmt.Sprintf(format, x)
	}

	pf("## Method\n\n")
	pf("One process each, all on loopback on this machine: the app (`hack/bench/benchsrv app`, bulk bodies copied from a\n")
	pf("precomputed buffer), a plain `httputil.ReverseProxy` terminating TLS in front of it (`benchsrv proxy`, self-signed\n")
	pf("ECDSA P-256, 256 idle connections per host to the app), and Control, one gateway and one agent of this tree with a\n")
	pf("tunnel to the same app (gateway HTTPS with its self-signed certificate, SNI the tunnel's hostname, WireGuard on\n")
	pf("loopback UDP). The client is the benchmark process: keep-alive HTTP/1.1, so N concurrent requests are N connections\n")
	pf("on every path; the direct path is plain HTTP, the others HTTPS.\n\n")
	if cfg.tun {
		pf("The TUN path's gateway (`--wireguard-backend tun`: the kernel's TCP/IP on a TUN interface, wireguard-go's\n")
		pf("Linux offloads) runs in a network namespace of its own joined to the host by a veth pair, so its clients'\n")
		pf("traffic and its WireGuard UDP cross veth instead of loopback; the agent is the same netstack agent.\n\n")
	}
	pf("Rounds: %d; in each, every workload runs on every path in turn, the first path rotating each round; the tables hold\n", cfg.rounds)
	pf("the median of the rounds. Bulk: GET `/bytes?n=%d` (%d MiB) per stream, or a POST of as many bytes to `/upload`;\n", cfg.bulk, cfg.bulk>>20)
	pf("MB/s = 10^6 bytes/s over the wall time of all streams. Small requests: GET `/healthz` (3-byte body) in a loop\n")
	pf("on each connection for %v after a short warm-up;\n", cfg.duration)
	pf("p50/p99 of every request's latency. CPU is user+system time of the path's processes from `/proc/<pid>/stat`\n")
	pf("(gateway+agent for a tunnel, the proxy process for the reverse proxy), measured across each workload: seconds per\n")
	pf("10^9 bytes for bulk, milliseconds per 1000 requests for small requests. The client and the app share the same\n")
	pf("cores, so every figure is for the whole machine busy with all of them.\n\n")
	pf("For scale: WireGuard's cipher, ChaCha20-Poly1305, sealed 1420-byte packets at %.2f GB/s on one core of this\n", sealGBs)
	pf("machine just before the run.\n\n")

	pf("## Bulk\n\nDownloads (app to client) on 1 and 4 streams, and an upload (client to app) on 1 stream.\n\n")
	pf("| path | down, 1 stream MB/s | vs proxy | CPU s/GB | down, 4 streams MB/s | vs proxy | CPU s/GB | up, 1 stream MB/s | vs proxy | CPU s/GB |\n")
	pf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range paths {
		pf("| %s |", p.name)
		for _, k := range []string{"bulk1", "bulk4", "up1"} {
			x := med[k][p.name]
			pf(" %.0f | %s | %s |", x.mbs, pct(x.mbs, med[k][proxy].mbs), cpu(p, x.cpuPerGB, "%.2f"))
		}
		pf("\n")
	}
	pf("\n## Small requests\n\n")
	pf("| path | 1 conn req/s | p50 ms | p99 ms | p50 added over direct ms | 50 conns req/s | vs proxy | p50 ms | p99 ms | p99 vs proxy | CPU ms per 1000 req |\n")
	pf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range paths {
		r1, r50 := med["req1"][p.name], med["req50"][p.name]
		added := "–"
		if p != paths[0] {
			added = fmt.Sprintf("%.3f", r1.added)
		}
		pf("| %s | %.0f | %.3f | %.3f | %s | %.0f | %s | %.2f | %.2f | %s | %s |\n", p.name, r1.rps, r1.p50, r1.p99, added,
			r50.rps, pct(r50.rps, med["req50"][proxy].rps), r50.p50, r50.p99, pct(r50.p99, med["req50"][proxy].p99),
			cpu(p, r50.cpuMsPer1k, "%.0f"))
	}

	// The tunnel's path crosses one process more each way than the
	// proxy's (gateway, agent, app against proxy, app), so the proxy's
	// added latency and one round trip between two processes are what it
	// costs at the least, whatever the tunnel does in between.
	floor := med["req1"][proxy].added + hop
	pf("\nOne more process on the path costs at least a round trip between two processes: a 100-byte UDP datagram sent\n")
	pf("to one that echoes it (`benchsrv udpecho`) came back in %.3f ms at p50 (median of the rounds, each timed right after\n", hop)
	pf("the round's requests on one connection). A request through the tunnel crosses one process more each way than one\n")
	pf("through the reverse proxy (gateway and agent where the proxy is one), so on this machine the tunnel adds at least the\n")
	pf("proxy's %.3f ms and that round trip over direct: %.3f ms, whatever the tunnel does in between.\n", med["req1"][proxy].added, floor)

	pf("\n## Targets of issue 7\n\nReported, never asserted; \"vs proxy\" is against the reverse-proxy-only path of the same run.\n\n")
	pf("| target |")
	tunnels := paths[2:]
	for _, p := range tunnels {
		pf(" %s |", p.name)
	}
	pf("\n|---|")
	for range tunnels {
		pf("---|")
	}
	pf("\n")
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}
	row := func(title string, f func(p *benchPath) string) {
		pf("| %s |", title)
		for _, p := range tunnels {
			pf(" %s |", f(p))
		}
		pf("\n")
	}
	row("bulk CPU (gateway+agent, 1 stream) ≤ 4.0 s/GB", func(p *benchPath) string {
		x := med["bulk1"][p.name].cpuPerGB
		return fmt.Sprintf("%.2f s/GB: %s", x, met(x <= 4.0))
	})
	row("1-stream throughput ≥ 45% of proxy", func(p *benchPath) string {
		x := med["bulk1"][p.name].mbs / med["bulk1"][proxy].mbs
		return fmt.Sprintf("%.0f%%: %s", 100*x, met(x >= 0.45))
	})
	row("50-conn requests/s ≥ 80% of proxy", func(p *benchPath) string {
		x := med["req50"][p.name].rps / med["req50"][proxy].rps
		return fmt.Sprintf("%.0f%%: %s", 100*x, met(x >= 0.80))
	})
	row("50-conn p99 ≤ 1.5× proxy p99", func(p *benchPath) string {
		x := med["req50"][p.name].p99 / med["req50"][proxy].p99
		return fmt.Sprintf("%.2f×: %s", x, met(x <= 1.5))
	})
	row("1-conn p50 added over direct < 0.3 ms", func(p *benchPath) string {
		x := med["req1"][p.name].added
		return fmt.Sprintf("%.3f ms: %s (floor here %.3f ms)", x, met(x < 0.3), floor)
	})
	if len(peaks) > 0 {
		pf("\nPeak RSS after the run: %s.\n", strings.Join(peaks, ", "))
	}

	pf("\n## Every round\n\nThe main figure of each workload per round (MB/s for downloads and uploads, requests/s for small requests), to\nshow the spread.\n\n")
	pf("| workload | path |")
	for r := range cfg.rounds {
		pf(" round %d |", r+1)
	}
	pf("\n|---|---|")
	for range cfg.rounds {
		pf("---:|")
	}
	pf("\n")
	for _, w := range workloads {
		for _, p := range paths {
			pf("| %s | %s |", w.title, p.name)
			for _, s := range samples[w.key][p.name] {
				if w.streams > 0 {
					pf(" %.0f |", s.mbs)
				} else {
					pf(" %.0f |", s.rps)
				}
			}
			pf("\n")
		}
	}
	return sb.String()
}
