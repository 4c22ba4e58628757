package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The benchmark suite (bench_suite_test.go) is configured by environment
// variables so that hack/bench.sh and a quick smoke run share one code
// path:
//
//	KAKUREMICHI_BENCH_ROUNDS    rounds of every workload on every path (5)
//	KAKUREMICHI_BENCH_BULK_MB   MiB per stream of a bulk download (256)
//	KAKUREMICHI_BENCH_DURATION  length of each small-request measurement (3s)
//	KAKUREMICHI_BENCH_IDLE      how long nodes sit idle before RSS is read (10s)
//	KAKUREMICHI_BENCH_BASE_BIN  directory holding a kakuremichi binary built
//	                            from another git ref: its tunnel is measured too
//	KAKUREMICHI_BENCH_BASE_NAME how that binary is named in the report
//	KAKUREMICHI_BENCH_TUN       1: also measure the tunnel with the gateway on
//	                            a kernel TUN interface (--wireguard-backend
//	                            tun), in a network namespace; needs root
//	KAKUREMICHI_BENCH_DIR       directory the Markdown fragments are written to
//	KAKUREMICHI_BENCH_PROFILE   directory: instead of the suite, record CPU
//	                            profiles of the gateway and the agent during
//	                            each workload on the tunnel path
//	                            (<workload>-gateway.pprof, -agent.pprof)
//
// BenchmarkGatewayScale adds KAKUREMICHI_BENCH_PEERS and
// KAKUREMICHI_BENCH_CONNS (bench_scale_test.go).
type benchConfig struct {
	rounds   int
	bulk     int64
	duration time.Duration
	idle     time.Duration
	baseBin  string
	baseName string
	tun      bool
	outDir   string
	profile  string
}

func loadBenchConfig(b *testing.B) benchConfig {
	b.Helper()
	cfg := benchConfig{rounds: 5, bulk: 256 << 20, duration: 3 * time.Second, idle: 10 * time.Second,
		baseBin: os.Getenv("KAKUREMICHI_BENCH_BASE_BIN"), baseName: os.Getenv("KAKUREMICHI_BENCH_BASE_NAME"),
		outDir: os.Getenv("KAKUREMICHI_BENCH_DIR"), profile: os.Getenv("KAKUREMICHI_BENCH_PROFILE")}
	if v := os.Getenv("KAKUREMICHI_BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			b.Fatalf("KAKUREMICHI_BENCH_ROUNDS: got %q, want a whole number from 1 to 100", v)
		}
		cfg.rounds = n
	}
	if v := os.Getenv("KAKUREMICHI_BENCH_BULK_MB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 16<<10 {
			b.Fatalf("KAKUREMICHI_BENCH_BULK_MB: got %q, want MiB per stream from 1 to 16384", v)
		}
		cfg.bulk = int64(n) << 20
	}
	for name, d := range map[string]*time.Duration{"KAKUREMICHI_BENCH_DURATION": &cfg.duration, "KAKUREMICHI_BENCH_IDLE": &cfg.idle} {
		if v := os.Getenv(name); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x < 100*time.Millisecond || x > 10*time.Minute {
				b.Fatalf("%s: got %q, want a duration from 100ms to 10m such as 3s", name, v)
			}
			*d = x
		}
	}
	if cfg.baseBin != "" {
		if st, err := os.Stat(filepath.Join(cfg.baseBin, "kakuremichi")); err != nil || st.IsDir() {
			b.Fatalf("KAKUREMICHI_BENCH_BASE_BIN: got %q, want a directory holding a kakuremichi binary (%v)", cfg.baseBin, err)
		}
		if cfg.baseName == "" {
			cfg.baseName = cfg.baseBin
		}
	}
	switch v := os.Getenv("KAKUREMICHI_BENCH_TUN"); v {
	case "", "0":
	case "1":
		cfg.tun = true
	default:
		b.Fatalf("KAKUREMICHI_BENCH_TUN: got %q, want 1 or 0", v)
	}
	for name, dir := range map[string]string{"KAKUREMICHI_BENCH_DIR": cfg.outDir, "KAKUREMICHI_BENCH_PROFILE": cfg.profile} {
		if dir == "" {
			continue
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			b.Fatalf("%s: got %q, want an existing directory (%v)", name, dir, err)
		}
	}
	return cfg
}

// writeFragment writes a Markdown fragment of the report when
// KAKUREMICHI_BENCH_DIR is set; without it the reported metrics are the
// output.
func (cfg benchConfig) writeFragment(b *testing.B, name, text string) {
	b.Helper()
	if cfg.outDir == "" {
		return
	}
	path := filepath.Join(cfg.outDir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("wrote %s", path)
}

// buildBenchsrv builds hack/bench/benchsrv (the app and the reverse-proxy
// baseline) next to the package's other binaries.
func buildBenchsrv(b *testing.B) string {
	b.Helper()
	out := filepath.Join(binDir, "benchsrv")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	cmd := exec.Command("go", "build", "-o", out, "../../hack/bench/benchsrv")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build benchsrv: %v\n%s", err, msg)
	}
	return out
}

// benchProc is a process of the suite that is not a kakuremichi node (the
// app and the reverse proxy), killed when the benchmark ends.
type benchProc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

func startBenchProc(b *testing.B, name, bin string, env []string, args ...string) *benchProc {
	b.Helper()
	if err := statSources(); err != nil {
		b.Fatalf("look at the module's files: %v", err)
	}
	logPath := filepath.Join(b.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &benchProc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	b.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *benchProc) pid() int { return p.cmd.Process.Pid }

// waitOK polls url with client until it answers 200.
func (p *benchProc) waitOK(b *testing.B, client *http.Client, url string) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, err := get(client, url)
		if err == nil && code == 200 {
			return
		}
		select {
		case <-p.done:
			logs, _ := os.ReadFile(p.logPath)
			b.Fatalf("%v exited during start:\n%s", p.cmd.Args, logs)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: no 200 within 30s (last: %d %v)", url, code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// benchClient sends every request to addr over keep-alive HTTP/1.1 (so
// that N concurrent requests are N connections on every path), trusting
// any certificate, with an idle pool large enough for every connection of
// the suite.
func benchClient(addr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}},
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		DisableCompression:  true,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
	}}
}

// benchBulk downloads each bytes on streams concurrent connections and
// returns MB/s (10^6 bytes) over the wall time of all of them.
func benchBulk(cl *http.Client, base string, streams int, each int64) (float64, error) {
	return benchStreams(streams, each, func() error {
		resp, err := cl.Get(fmt.Sprintf("%s/bytes?n=%d", base, each))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil && (n != each || resp.StatusCode != 200) {
			err = fmt.Errorf("got status %d and %d bytes, want 200 and %d", resp.StatusCode, n, each)
		}
		return err
	})
}

// benchUpload sends each bytes on streams concurrent connections and
// returns MB/s (10^6 bytes) over the wall time of all of them.
func benchUpload(cl *http.Client, base string, streams int, each int64) (float64, error) {
	return benchStreams(streams, each, func() error {
		req, err := http.NewRequest(http.MethodPost, base+"/upload", io.LimitReader(&repeatReader{}, each))
		if err != nil {
			return err
		}
		req.ContentLength = each
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && (resp.StatusCode != 200 || strings.TrimSpace(string(body)) != strconv.FormatInt(each, 10)) {
			err = fmt.Errorf("got %d %q, want 200 and the app counting %d bytes", resp.StatusCode, body, each)
		}
		return err
	})
}

// benchStreams runs transfer on streams goroutines at once, each moving
// each bytes, and returns MB/s (10^6 bytes) over the wall time of all of
// them, or the first error.
func benchStreams(streams int, each int64, transfer func() error) (float64, error) {
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for range streams {
		wg.Go(func() {
			if err := transfer(); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(streams) * float64(each) / time.Since(start).Seconds() / 1e6, nil
}

// uploadBlock is what repeatReader repeats: the client's cost of making
// an upload body is a copy.
var uploadBlock = func() []byte {
	b := make([]byte, 251*256)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}()

// repeatReader is an endless upload body.
type repeatReader struct{ off int }

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], uploadBlock[r.off:])
		n += k
		r.off = (r.off + k) % len(uploadBlock)
	}
	return n, nil
}

// loadResult is one small-request measurement.
type loadResult struct {
	requests int
	rps      float64
	p50, p99 float64 // milliseconds
}

// benchLoad sends small keep-alive requests to url on conns concurrent
// connections for d. Requests/s count every request over the wall time
// until the last one finished.
func benchLoad(cl *http.Client, url string, conns int, d time.Duration) (loadResult, error) {
	var mu sync.Mutex
	var lats []time.Duration
	var firstErr error
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			var err error
			for time.Now().Before(deadline) {
				t0 := time.Now()
				var resp *http.Response
				resp, err = cl.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					break
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			defer mu.Unlock()
			lats = append(lats, mine...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	if firstErr != nil {
		return loadResult{}, firstErr
	}
	if len(lats) == 0 {
		return loadResult{}, fmt.Errorf("no request completed in %v", d)
	}
	slices.Sort(lats)
	return loadResult{requests: len(lats), rps: float64(len(lats)) / wall.Seconds(),
		p50: millis(lats[len(lats)/2]), p99: millis(lats[len(lats)*99/100])}, nil
}

// millis is d in milliseconds.
func millis(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// udpRoundTrip sends 100-byte datagrams one at a time to addr, a process
// that echoes them (benchsrv udpecho), for d and returns the median round
// trip in milliseconds: what one more process on a path costs at the
// least. A datagram not back within a second counts as lost; more than a
// few lost is an error.
func udpRoundTrip(addr string, d time.Duration) (float64, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	msg, buf := make([]byte, 100), make([]byte, 2048)
	var rtts []time.Duration
	lost := 0
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		t0 := time.Now()
		c.SetDeadline(t0.Add(time.Second))
		if _, err := c.Write(msg); err != nil {
			return 0, err
		}
		if _, err := c.Read(buf); err != nil {
			if lost++; lost > 3 {
				return 0, fmt.Errorf("%d datagrams to %s not echoed: %w", lost, addr, err)
			}
			continue
		}
		rtts = append(rtts, time.Since(t0))
	}
	if len(rtts) == 0 {
		return 0, fmt.Errorf("no datagram to %s echoed in %v", addr, d)
	}
	slices.Sort(rtts)
	return millis(rtts[len(rtts)/2]), nil
}

// procMemory returns a process's resident set size and its peak, in MiB,
// from /proc/<pid>/status.
func procMemory(pid int) (rss, peak float64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
	}
	return rss, peak, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// withBinary runs start with the package's binary directory pointed at dir,
// so the harness starts nodes from a binary built from another git ref.
// Benchmarks run one at a time and the harness reads binDir only when it
// starts a process.
func withBinary(dir string, start func()) {
	saved := binDir
	binDir = dir
	defer func() { binDir = saved }()
	start()
}
