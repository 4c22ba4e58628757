package wgnet

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/internal/leakcheck"
)

// patternReader yields n pseudo-random bytes, the same for the same seed.
func patternReader(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// sinkServer accepts one connection at a time on l, hashes everything
// until EOF, and answers with the SHA-256. It returns when l closes.
func sinkServer(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		h := sha256.New()
		if _, err := io.Copy(h, c); err == nil {
			c.Write(h.Sum(nil))
		}
		c.Close()
	}
}

// sendAndHash writes size bytes of pattern seed to c, half-closes it and
// returns the digest the sink answers with.
func sendAndHash(c net.Conn, seed uint64, size int64) ([]byte, error) {
	if _, err := io.Copy(c, patternReader(seed, size)); err != nil {
		return nil, err
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return nil, err
	}
	return io.ReadAll(c)
}

// TestBulkTransfer: 64 MiB cross the tunnel intact, each way.
func TestBulkTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB transfer skipped in -short")
	}
	leakcheck.Goroutines(t)
	agent, gw := pair(t)
	const size = 64 << 20
	want := sha256.New()
	io.Copy(want, patternReader(1, size))

	tests := []struct{ from, to *node }{
		{gw, agent}, // towards the app: request bodies, uploads
		{agent, gw}, // from the app: responses
	}
	for _, tt := range tests {
		t.Run(tt.from.name+" to "+tt.to.name, func(t *testing.T) {
			l, err := tt.to.dev.Listen("tcp", ":0")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { defer close(done); sinkServer(l) }()
			defer func() { l.Close(); <-done }()

			c, err := dialTimeout(tt.from, l.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(50 * time.Second))
			start := time.Now()
			got, err := sendAndHash(c, 1, size)
			if err != nil {
				t.Fatalf("transfer: %v", err)
			}
			if !bytes.Equal(got, want.Sum(nil)) {
				t.Fatalf("sha256 of what arrived: got %x, want %x", got, want.Sum(nil))
			}
			t.Logf("%d MiB in %v", size>>20, time.Since(start).Round(time.Millisecond))
			// Every packet counted into wireguard-go was counted out:
			// a count left behind would hold the link for a stall each
			// time it filled.
			for _, n := range []*node{tt.from, tt.to} {
				link := n.dev.net.(*netStack).link
				waitFor(t, 5*time.Second, n.name+"'s packets inside wireguard-go to come out", func() bool {
					return link.outFlight.n.Load() == 0 && link.inFlight.n.Load() == 0
				})
				t.Logf("%s: %d outbound and %d inbound stalls", n.name, link.outFlight.stalls.Load(), link.inFlight.stalls.Load())
			}
		})
	}
}

// BenchmarkThroughput measures one TCP stream through the tunnel and, in
// the same run, over plain loopback TCP, reporting both rates and their
// ratio. Nothing is asserted: it is for watching regressions and backends.
func BenchmarkThroughput(b *testing.B) {
	const size = 32 << 20
	agent, gw := pair(b)
	tl, err := agent.dev.Listen("tcp", ":0")
	if err != nil {
		b.Fatal(err)
	}
	ll, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range []net.Listener{tl, ll} {
		done := make(chan struct{})
		go func() { defer close(done); sinkServer(l) }()
		b.Cleanup(func() { l.Close(); <-done })
	}
	want := sha256.New()
	io.Copy(want, patternReader(2, size))

	var tunnel, loopback time.Duration
	run := func(dial func() (net.Conn, error)) time.Duration {
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		got, err := sendAndHash(c, 2, size)
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		if !bytes.Equal(got, want.Sum(nil)) {
			b.Fatalf("sha256: got %x, want %x", got, want.Sum(nil))
		}
		return d
	}
	b.ResetTimer()
	for b.Loop() {
		tunnel += run(func() (net.Conn, error) { return dialTimeout(gw, tl.Addr().String(), 5*time.Second) })
		loopback += run(func() (net.Conn, error) { return net.Dial("tcp", ll.Addr().String()) })
	}
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(tunnel), "tunnel-MB/s")
	b.ReportMetric(mbps(loopback), "loopback-MB/s")
	b.ReportMetric(mbps(tunnel)/mbps(loopback), "tunnel/loopback")
}
