package wgnet

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// flightMax is how many packets may be inside wireguard-go, in either
// direction, before the side that feeds it waits: one of its batches, so
// that at most two are.
//
// wireguard-go carries every packet in a buffer of 64 KiB, whatever its
// size, and its queues are deep (a thousand batches). Fed as fast as the
// stack or the socket can, they fill whenever encryption or the stack is
// the slower side, which in a bulk transfer is always: a stream's TCP
// window (tcpRcvMax) is some 5,900 packets, 370 MiB of buffers, each
// touched cold when its turn comes. Holding packets back where they are
// compact (in the stack, or in the socket's buffer) keeps the pipeline as
// busy with the same few buffers warm in the cache. BenchmarkBulkCPU
// measured about 1.6 times the throughput for a quarter less CPU per GB
// with it, at any limit from 64 to 192.
const flightMax = 128

// flightStall is how long a waiting side waits for a packet to come out
// before it counts the rest as gone. wireguard-go drops packets without
// telling: outbound, those for a peer with no session that waited too
// long; inbound, those that fail to decrypt or come from a source a peer
// may not use. Their count is left behind. Short, so that whatever leaves
// one behind holds the path for little; long enough that a side that is
// merely busy is seldom taken for one (BenchmarkBulkCPU measured the same
// from 0.5 to 20 ms).
const flightStall = 2 * time.Millisecond

// flight counts the packets one direction has handed wireguard-go and not
// yet seen come out: outbound, read from the link and not yet passed to the
// socket; inbound, read from the socket and not yet written to the link,
// of the data messages for this device's own receiver indices
// (localIndices). The feeding side calls wait before it takes more and add after; the
// other side calls done. A nil *flight counts nothing and never waits.
type flight struct {
	n      atomic.Int64
	max    int64
	out    chan struct{} // a token when done brings n under max
	stop   <-chan struct{}
	stall  time.Duration // flightStall, but for tests
	stalls atomic.Int64  // how often the count was reset
}

func newFlight(max int64, stop <-chan struct{}) *flight {
	return &flight{max: max, out: make(chan struct{}, 1), stop: stop, stall: flightStall}
}

// wait returns once fewer than max packets are in flight, or when stop is
// closed. If they are still max or more after f.stall, the rest are
// counted as gone.
func (f *flight) wait() {
	if f == nil {
		return
	}
	var stall *time.Timer
	for f.n.Load() >= f.max {
		if stall == nil {
			stall = time.NewTimer(f.stall)
			defer stall.Stop()
		}
		select {
		case <-f.out:
		case <-f.stop:
			return
		case <-stall.C:
			f.n.Store(0)
			f.stalls.Add(1)
			return
		}
	}
}

// add counts k packets handed to wireguard-go.
func (f *flight) add(k int) {
	if f != nil && k > 0 {
		f.n.Add(int64(k))
	}
}

// done counts k packets out of wireguard-go.
func (f *flight) done(k int) {
	if f == nil || k <= 0 {
		return
	}
	n := f.n.Add(-int64(k))
	// Below zero: counted gone by a stall, then came out after all.
	for n < 0 && !f.n.CompareAndSwap(n, 0) {
		n = f.n.Load()
	}
	if n < f.max {
		select {
		case f.out <- struct{}{}:
		default:
		}
	}
}

// transportPackets counts the WireGuard data messages in bufs that carry a
// packet: type 4 and longer than an empty one (a keepalive: 16 bytes of
// header and 16 of authentication tag).
func transportPackets(bufs [][]byte) int {
	k := 0
	for _, b := range bufs {
		if isTransportPacket(b) {
			k++
		}
	}
	return k
}

func isTransportPacket(msg []byte) bool { return len(msg) > 32 && msg[0] == 4 }

// indexTTL is how long a receiver index this device sent in a handshake
// may be in use: a handshake takes at most 90 s (wireguard-go's
// RekeyAttemptTime) and its session receives for 180 s (RejectAfterTime).
const indexTTL = 10 * time.Minute

// localIndices are the receiver indices this device gave its peers in the
// handshakes it sent: a data message for one of them may be for a session
// of this device, anything else wireguard-go drops at once. Only data
// messages for them are counted in, so that datagrams made up by anyone
// who can reach the port (their indices are random to them) add nothing
// to the inbound count and cannot hold the receiving side.
type localIndices struct {
	mu     sync.RWMutex
	seen   map[uint32]time.Time
	pruned time.Time
}

// note records the sender index of every handshake initiation (type 1)
// and response (type 2) in msgs, which this device is sending.
func (s *localIndices) note(msgs [][]byte) {
	for _, m := range msgs {
		if !(len(m) == 148 && m[0] == 1) && !(len(m) == 92 && m[0] == 2) {
			continue
		}
		now := time.Now()
		s.mu.Lock()
		if s.seen == nil {
			s.seen = make(map[uint32]time.Time)
		}
		s.seen[binary.LittleEndian.Uint32(m[4:8])] = now
		if now.Sub(s.pruned) > time.Minute {
			for i, t := range s.seen {
				if now.Sub(t) > indexTTL {
					delete(s.seen, i)
				}
			}
			s.pruned = now
		}
		s.mu.Unlock()
	}
}

// ours counts the data messages among bufs[:n] (each sizes[i] long) that
// carry a packet for a receiver index of this device.
func (s *localIndices) ours(bufs [][]byte, sizes []int, n int) int {
	k := 0
	s.mu.RLock()
	for i := range n {
		m := bufs[i][:sizes[i]]
		if isTransportPacket(m) {
			if _, ok := s.seen[binary.LittleEndian.Uint32(m[4:8])]; ok {
				k++
			}
		}
	}
	s.mu.RUnlock()
	return k
}
