package wgnet

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBulkCPU sends 256 MiB one way, in turn, through a tunnel whose
// two ends run on this package's netstack link ("tunnel"), through the
// same tunnel on wireguard-go's stock netstack adapter ("stock", the
// baseline), through the tunnel sending every bare acknowledgement at once
// ("immediate-acks", the baseline of ack.go), through the tunnel on
// wireguard-go's standard UDP bind ("std-bind", the baseline of
// bind_linux.go), through a tunnel whose sending end is on the kernel's TCP/IP
// via a TUN interface ("tun"; only as root, in a network namespace of its
// own) and over plain loopback TCP, and reports each one's throughput and
// CPU seconds per GB. Both ends run in this process, so the CPU counted is
// a gateway's and an agent's together; it is the steadier figure on a busy
// machine. Nothing is asserted. KAKUREMICHI_BULKCPU_PATHS, a comma-separated
// list of path names, runs only those, for a profile of one of them.
//
//	go test -run XXX -bench BulkCPU -benchtime 3x ./internal/wgnet
func BenchmarkBulkCPU(b *testing.B) {
	withTUN := os.Getenv(netnsEnv) == b.Name()
	if withTUN {
		loUp(b)
	} else if os.Geteuid() == 0 && runtime.GOOS == "linux" && benchInNetns(b) {
		return
	}
	const size = 256 << 20
	type path struct {
		name string
		dial func() (net.Conn, error)
		wall time.Duration
		cpu  time.Duration
	}
	var paths []*path
	sink := func(l net.Listener) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				io.Copy(io.Discard, c)
				c.Write([]byte{1})
				c.Close()
			}
		}()
		b.Cleanup(func() { l.Close(); <-done })
	}
	tunnel := func(name string, agent, gw *node) {
		l, err := agent.dev.Listen("tcp", ":0")
		if err != nil {
			b.Fatal(err)
		}
		sink(l)
		paths = append(paths, &path{name: name, dial: func() (net.Conn, error) {
			return dialTimeout(gw, l.Addr().String(), 5*time.Second)
		}})
	}
	agent, gw := pair(b)
	tunnel("tunnel", agent, gw)
	stockAgent, stockGW := pairOn(b, "100.64.1.1", "100.64.1.2", func(c *Config) { c.stockNetstack = true })
	tunnel("stock", stockAgent, stockGW)
	immAgent, immGW := pairOn(b, "100.64.5.1", "100.64.5.2", func(c *Config) { c.noAckDelay = true })
	tunnel("immediate-acks", immAgent, immGW)
	stdAgent, stdGW := pairOn(b, "100.64.6.1", "100.64.6.2", func(c *Config) { c.stdBind = true })
	tunnel("std-bind", stdAgent, stdGW)
	if withTUN {
		tgw := newNode(b, "gateway", "100.64.2.1", func(c *Config) { c.Backend, c.Interface = BackendTUN, "kkmbench0" })
		ta := newNode(b, "agent", "100.64.2.2")
		start := time.Now().Add(-time.Second)
		tgw.setPeers(b, ta.asPassive())
		ta.setPeers(b, tgw.asDialed())
		waitHandshake(b, ta, tgw, start)
		tunnel("tun", ta, tgw)
	}
	ll, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	sink(ll)
	paths = append(paths, &path{name: "loopback", dial: func() (net.Conn, error) { return net.Dial("tcp", ll.Addr().String()) }})

	if only := os.Getenv("KAKUREMICHI_BULKCPU_PATHS"); only != "" {
		keep := paths[:0]
		for _, p := range paths {
			if slices.Contains(strings.Split(only, ","), p.name) {
				keep = append(keep, p)
			}
		}
		if len(keep) == 0 {
			b.Fatalf("KAKUREMICHI_BULKCPU_PATHS=%s names none of the paths", only)
		}
		paths = keep
	}
	run := func(p *path) {
		c, err := p.dial()
		if err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		defer c.Close()
		start, cpu0 := time.Now(), cpuTime(b)
		if _, err := io.Copy(c, io.LimitReader(zeros{}, size)); err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		c.(interface{ CloseWrite() error }).CloseWrite()
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			b.Fatalf("%s: waiting for the sink: %v", p.name, err)
		}
		p.wall += time.Since(start)
		p.cpu += cpuTime(b) - cpu0
	}
	for b.Loop() {
		for _, p := range paths {
			run(p)
		}
	}
	gb := float64(size) * float64(b.N) / 1e9
	for _, p := range paths {
		b.ReportMetric(gb*1e3/p.wall.Seconds(), p.name+"-MB/s")
		b.ReportMetric(p.cpu.Seconds()/gb, p.name+"-cpu-s/GB")
	}
	if len(paths) > 1 && paths[0].name == "tunnel" && paths[1].name == "stock" {
		b.ReportMetric(paths[1].wall.Seconds()/paths[0].wall.Seconds(), "speedup-vs-stock")
		b.ReportMetric(paths[1].cpu.Seconds()/paths[0].cpu.Seconds(), "cpu-saving-vs-stock")
	}
}

// benchInNetns runs the calling benchmark again in a network namespace of
// its own and reports the child's figures as its own. It returns false if
// that cannot be done, and the caller runs without the namespace.
func benchInNetns(b *testing.B) bool {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return false
	}
	benchtime := "1x"
	if f := flagValue("test.benchtime"); f != "" {
		benchtime = f
	}
	cmd := exec.Command(os.Args[0], "-test.run=XXX", "-test.bench=^"+b.Name()+"$", "-test.benchtime="+benchtime, "-test.count=1")
	cmd.Env = append(os.Environ(), netnsEnv+"="+b.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("in its own network namespace: %v\n%s", err, out)
	}
	for b.Loop() {
	}
	// "BenchmarkBulkCPU-2   3   123 ns/op   1.0 tunnel-MB/s ...", reported
	// after b.Loop, which clears what was reported before it.
	sc := bufio.NewScanner(bytes.NewReader(out))
	found := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], b.Name()) {
			continue
		}
		found = true
		for i := 4; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				b.ReportMetric(v, f[i+1])
			}
		}
	}
	if !found {
		b.Fatalf("no figures from the namespace:\n%s", out)
	}
	return true
}

// flagValue returns the value of a test flag as given on the command line.
func flagValue(name string) string {
	for _, a := range os.Args[1:] {
		if v, ok := strings.CutPrefix(a, "-"+name+"="); ok {
			return v
		}
	}
	return ""
}
