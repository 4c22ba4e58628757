package wgnet

import (
	"io"
	"net"
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

// BenchmarkBulkCPU sends 256 MiB one way through a tunnel (both ends in
// this process, so the CPU counted is a gateway's and an agent's
// together), through the same tunnel on wireguard-go's stock netstack
// adapter (the baseline), and over plain loopback TCP, in turn, and
// reports the throughput and the CPU seconds spent per GB of each, and
// the ratios to the stock adapter. CPU per GB is the steadier figure on a
// busy machine. Nothing is asserted.
//
//	go test -run XXX -bench BulkCPU -benchtime 3x ./internal/wgnet
func BenchmarkBulkCPU(b *testing.B) {
	const size = 256 << 20
	agent, gw := pair(b)
	tl, err := agent.dev.Listen("tcp", ":0")
	if err != nil {
		b.Fatal(err)
	}
	stockAgent, stockGW := pairOn(b, "100.64.1.1", "100.64.1.2", func(c *Config) { c.stockNetstack = true })
	sl, err := stockAgent.dev.Listen("tcp", ":0")
	if err != nil {
		b.Fatal(err)
	}
	ll, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range []net.Listener{tl, sl, ll} {
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
	type total struct{ wall, cpu time.Duration }
	var tunnel, stock, loopback total
	run := func(t *total, dial func() (net.Conn, error)) {
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		start, cpu0 := time.Now(), cpuTime(b)
		if _, err := io.Copy(c, io.LimitReader(zeros{}, size)); err != nil {
			b.Fatal(err)
		}
		c.(interface{ CloseWrite() error }).CloseWrite()
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			b.Fatalf("waiting for the sink: %v", err)
		}
		t.wall += time.Since(start)
		t.cpu += cpuTime(b) - cpu0
	}
	for b.Loop() {
		run(&tunnel, func() (net.Conn, error) { return dialTimeout(gw, tl.Addr().String(), 5*time.Second) })
		run(&stock, func() (net.Conn, error) { return dialTimeout(stockGW, sl.Addr().String(), 5*time.Second) })
		run(&loopback, func() (net.Conn, error) { return net.Dial("tcp", ll.Addr().String()) })
	}
	gb := float64(size) * float64(b.N) / 1e9
	b.ReportMetric(gb*1e3/tunnel.wall.Seconds(), "tunnel-MB/s")
	b.ReportMetric(tunnel.cpu.Seconds()/gb, "tunnel-cpu-s/GB")
	b.ReportMetric(gb*1e3/stock.wall.Seconds(), "stock-MB/s")
	b.ReportMetric(stock.cpu.Seconds()/gb, "stock-cpu-s/GB")
	b.ReportMetric(stock.wall.Seconds()/tunnel.wall.Seconds(), "speedup")
	b.ReportMetric(stock.cpu.Seconds()/tunnel.cpu.Seconds(), "cpu-saving")
	b.ReportMetric(gb*1e3/loopback.wall.Seconds(), "loopback-MB/s")
	b.ReportMetric(loopback.cpu.Seconds()/gb, "loopback-cpu-s/GB")
}
