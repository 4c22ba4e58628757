package wgnet

import (
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkRoundTrip measures small requests and responses (100 bytes up,
// 300 back) through a tunnel on this package's link with bare
// acknowledgements held ("held", as nodes run) and through the same
// tunnel sending every acknowledgement at once ("immediate", the
// baseline), in turn, in one run: round trips per second and CPU
// microseconds per round trip on 1 and 50 connections, and the median
// round trip on 1. Both ends run in this process. Nothing is asserted.
//
//	go test -run XXX -bench RoundTrip -benchtime 3x ./internal/wgnet
func BenchmarkRoundTrip(b *testing.B) {
	const (
		reqSize  = 100
		respSize = 300
		window   = 2 * time.Second
	)
	type path struct {
		name      string
		dial      func() (net.Conn, error)
		trips     [2]int
		wall, cpu [2]time.Duration
		lat       []time.Duration
	}
	echo := func(l net.Listener) {
		var wg sync.WaitGroup
		b.Cleanup(func() { l.Close(); wg.Wait() })
		wg.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				wg.Go(func() {
					defer c.Close()
					req, resp := make([]byte, reqSize), make([]byte, respSize)
					for {
						if _, err := io.ReadFull(c, req); err != nil {
							return
						}
						if _, err := c.Write(resp); err != nil {
							return
						}
					}
				})
			}
		})
	}
	var paths []*path
	for _, p := range []struct {
		name, gw, agent string
		opt             func(*Config)
	}{
		{"held", "100.64.3.1", "100.64.3.2", func(*Config) {}},
		{"immediate", "100.64.4.1", "100.64.4.2", func(c *Config) { c.noAckDelay = true }},
	} {
		agent, gw := pairOn(b, p.gw, p.agent, p.opt)
		l, err := agent.dev.Listen("tcp", ":0")
		if err != nil {
			b.Fatal(err)
		}
		echo(l)
		paths = append(paths, &path{name: p.name, dial: func() (net.Conn, error) {
			return dialTimeout(gw, l.Addr().String(), 5*time.Second)
		}})
	}
	// run keeps conns connections busy for window and adds to p's figures
	// at index i.
	run := func(p *path, i, conns int) {
		cs := make([]net.Conn, conns)
		for j := range cs {
			c, err := p.dial()
			if err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			defer c.Close()
			cs[j] = c
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		start, cpu0 := time.Now(), cpuTime(b)
		deadline := start.Add(window)
		for _, c := range cs {
			wg.Go(func() {
				req, resp := make([]byte, reqSize), make([]byte, respSize)
				n := 0
				var lat []time.Duration
				for t := time.Now(); t.Before(deadline); {
					if _, err := c.Write(req); err != nil {
						b.Errorf("%s: %v", p.name, err)
						return
					}
					if _, err := io.ReadFull(c, resp); err != nil {
						b.Errorf("%s: %v", p.name, err)
						return
					}
					now := time.Now()
					if conns == 1 {
						lat = append(lat, now.Sub(t))
					}
					t = now
					n++
				}
				mu.Lock()
				p.trips[i] += n
				p.lat = append(p.lat, lat...)
				mu.Unlock()
			})
		}
		wg.Wait()
		p.wall[i] += time.Since(start)
		p.cpu[i] += cpuTime(b) - cpu0
	}
	for b.Loop() {
		for _, p := range paths {
			run(p, 0, 1)
			run(p, 1, 50)
		}
	}
	for _, p := range paths {
		for i, conns := range []string{"1", "50"} {
			b.ReportMetric(float64(p.trips[i])/p.wall[i].Seconds(), p.name+"-c"+conns+"-trips/s")
			b.ReportMetric(float64(p.cpu[i].Microseconds())/float64(p.trips[i]), p.name+"-c"+conns+"-cpu-us/trip")
		}
		slices.Sort(p.lat)
		b.ReportMetric(float64(p.lat[len(p.lat)/2].Nanoseconds())/1e3, p.name+"-c1-p50-us")
	}
}
