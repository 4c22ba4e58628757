package wgnet

import (
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// waitReturns runs f.wait and reports whether it returned within d.
func waitReturns(f *flight, d time.Duration) bool {
	done := make(chan struct{})
	go func() { f.wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// TestFlightWaitsForPacketsToComeOut: a full flight holds the feeding side
// until a packet comes out, and only then.
func TestFlightWaitsForPacketsToComeOut(t *testing.T) {
	f := newFlight(4, nil)
	f.stall = time.Hour
	f.add(3)
	if !waitReturns(f, time.Second) {
		t.Fatal("3 of 4 in flight: wait blocked, want it to return")
	}
	f.add(2)
	done := make(chan struct{})
	go func() { f.wait(); close(done) }()
	select {
	case <-done:
		t.Fatal("5 of 4 in flight: wait returned, want it to block")
	case <-time.After(100 * time.Millisecond):
	}
	f.done(1)
	select {
	case <-done:
		t.Fatal("4 of 4 in flight: wait returned, want it to block")
	case <-time.After(100 * time.Millisecond):
	}
	f.done(1)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("3 of 4 in flight: wait still blocked 5s later")
	}
	if got := f.n.Load(); got != 3 {
		t.Fatalf("in flight: got %d, want 3", got)
	}
}

// TestFlightCountsStalledPacketsGone: wireguard-go drops packets without
// telling, so a count that nothing brings down is reset after the stall
// time instead of holding the link for good; one that comes out later
// does not take the count below zero.
func TestFlightCountsStalledPacketsGone(t *testing.T) {
	f := newFlight(4, nil)
	f.stall = 20 * time.Millisecond
	f.add(6)
	if !waitReturns(f, 5*time.Second) {
		t.Fatal("a stalled flight held wait for 5s, want it reset after 20ms")
	}
	if got, stalls := f.n.Load(), f.stalls.Load(); got != 0 || stalls != 1 {
		t.Fatalf("after the stall: %d in flight, %d stalls; want 0 and 1", got, stalls)
	}
	f.done(2)
	if got := f.n.Load(); got != 0 {
		t.Fatalf("late packets out after the reset: got %d in flight, want 0", got)
	}
}

// TestFlightStopReleasesWait: closing the link releases a waiting reader.
func TestFlightStopReleasesWait(t *testing.T) {
	stop := make(chan struct{})
	f := newFlight(1, stop)
	f.stall = time.Hour
	f.add(1)
	close(stop)
	if !waitReturns(f, 5*time.Second) {
		t.Fatal("wait blocked after stop closed")
	}
}

// TestNilFlightCountsNothing: where the bind does not count, nothing waits.
func TestNilFlightCountsNothing(t *testing.T) {
	var f *flight
	f.add(1000)
	f.done(1)
	if !waitReturns(f, time.Second) {
		t.Fatal("a nil flight blocked")
	}
}

func TestTransportPackets(t *testing.T) {
	data := make([]byte, 32+20) // header, tag and a 20-byte packet
	data[0] = 4
	keepalive := make([]byte, 32)
	keepalive[0] = 4
	initiation := make([]byte, 148)
	initiation[0] = 1
	if got := transportPackets([][]byte{data, keepalive, initiation, data, nil}); got != 2 {
		t.Fatalf("got %d transport packets, want 2 (keepalives and handshakes are not packets of the stack)", got)
	}
}

// handshake returns a handshake message of type typ (1 initiation, 2
// response) whose sender index is idx.
func handshake(typ byte, idx uint32) []byte {
	m := make([]byte, map[byte]int{1: 148, 2: 92}[typ])
	m[0] = typ
	binary.LittleEndian.PutUint32(m[4:8], idx)
	return m
}

// data returns a data message for receiver index idx carrying a packet.
func data(idx uint32) []byte {
	m := make([]byte, 32+40)
	m[0] = 4
	binary.LittleEndian.PutUint32(m[4:8], idx)
	return m
}

// TestLocalIndicesCountOnlyOurs: received data messages count only for
// receiver indices this device sent in an initiation or a response.
func TestLocalIndicesCountOnlyOurs(t *testing.T) {
	var s localIndices
	s.note([][]byte{handshake(1, 7), data(99)})
	s.note([][]byte{handshake(2, 8)})
	cookie := make([]byte, 64)
	cookie[0] = 3
	binary.LittleEndian.PutUint32(cookie[4:8], 9)
	s.note([][]byte{cookie})
	keepalive := data(7)[:32]
	bufs := [][]byte{data(7), data(8), data(9), data(99), keepalive, handshake(1, 7)}
	sizes := make([]int, len(bufs))
	for i, b := range bufs {
		sizes[i] = len(b)
		bufs[i] = append(b, make([]byte, 100)...) // as in a receive buffer
	}
	if got := s.ours(bufs, sizes, len(bufs)); got != 2 {
		t.Fatalf("got %d of ours, want 2 (indices 7 and 8, sent in handshakes)", got)
	}
	if got := s.ours(bufs, sizes, 1); got != 1 {
		t.Fatalf("only the first received: got %d, want 1", got)
	}
	s.seen[7] = time.Now().Add(-indexTTL - time.Second)
	s.pruned = time.Time{}
	s.note([][]byte{handshake(1, 10)})
	if _, ok := s.seen[7]; ok {
		t.Fatal("an index older than indexTTL is still counted")
	}
}

// TestMadeUpDatagramsDoNotHoldTheReceiver: data messages made up by anyone
// who can reach the UDP port carry indices of their own choosing, which
// wireguard-go drops; counted in, they would never be counted out and the
// receiving side would wait out a stall for every flightMax of them.
func TestMadeUpDatagramsDoNotHoldTheReceiver(t *testing.T) {
	agent, gw := pair(t)
	link := gw.dev.net.(*netStack).link
	l, err := gw.dev.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); sinkServer(l) }()
	defer func() { l.Close(); <-done }()

	c, err := net.Dial("udp", gw.endpoint().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 * flightMax {
		if _, err := c.Write(data(uint32(i*2654435761 + 1))); err != nil {
			t.Fatal(err)
		}
	}
	// Real traffic after them, so the receiver has read them all.
	conn, err := dialTimeout(agent, l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := sendAndHash(conn, 2, 1<<20); err != nil {
		t.Fatal(err)
	}
	// Counted in, the made-up datagrams would cost one stall for every
	// flightMax of them: 20. The real megabytes may cost one or two of
	// their own on a loaded machine (the receiving stack busy for longer
	// than flightStall), which is what a stall is for.
	if n := link.inFlight.stalls.Load(); n >= 5 {
		t.Fatalf("the gateway's receiver waited out %d stalls for %d made-up datagrams, want fewer than 5 (20 if they counted)", n, 20*flightMax)
	}
}
