package wgnet

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ackDelay is how long the link holds a bare TCP acknowledgement before
// sending it, in the hope that data of the same connection follows and
// carries the acknowledgement instead. gVisor acknowledges every batch of
// received segments at once and has no delayed ACK of its own, so a
// request and its response cost four packets through WireGuard (request,
// ACK, response, ACK), each encrypted, sent, received and decrypted; held
// acknowledgements make that two. A kernel's TCP delays acknowledgements
// by up to 40 ms; this link by much less, since the stack it serves
// measures its round trips with them.
const ackDelay = time.Millisecond

// flowKey names one direction of a TCP connection.
type flowKey struct {
	src, dst     tcpip.Address
	sport, dport uint16
}

// heldAck is a bare acknowledgement the link is holding back.
type heldAck struct {
	pkt      *stack.PacketBuffer
	ack, win uint32
	at       time.Time // when it was held
}

// tcpKind sorts an outbound packet for acknowledgement holding.
type tcpKind int

const (
	notTCP   tcpKind = iota
	tcpOther         // carries data, or SYN
	tcpEnd           // FIN or RST: the connection is ending
	tcpAck           // a bare acknowledgement: nothing but ACK, no payload
	tcpSack          // a bare acknowledgement with SACK blocks: loss recovery
)

// classify reads what acknowledgement holding needs from pkt's headers:
// its flow, its kind, and its acknowledgement number and window if it
// carries an ACK (as every packet but the first SYN does).
func classify(pkt *stack.PacketBuffer) (k flowKey, kind tcpKind, ack, win uint32) {
	if pkt.TransportProtocolNumber != header.TCPProtocolNumber {
		return k, notTCP, 0, 0
	}
	nh := pkt.NetworkHeader().Slice()
	switch pkt.NetworkProtocolNumber {
	case header.IPv4ProtocolNumber:
		if len(nh) < header.IPv4MinimumSize {
			return k, notTCP, 0, 0
		}
		ip := header.IPv4(nh)
		k.src, k.dst = ip.SourceAddress(), ip.DestinationAddress()
	case header.IPv6ProtocolNumber:
		if len(nh) < header.IPv6MinimumSize {
			return k, notTCP, 0, 0
		}
		ip := header.IPv6(nh)
		k.src, k.dst = ip.SourceAddress(), ip.DestinationAddress()
	default:
		return k, notTCP, 0, 0
	}
	th := pkt.TransportHeader().Slice()
	if len(th) < header.TCPMinimumSize {
		return k, notTCP, 0, 0
	}
	tcp := header.TCP(th)
	k.sport, k.dport = tcp.SourcePort(), tcp.DestinationPort()
	flags := tcp.Flags()
	if !flags.Contains(header.TCPFlagAck) {
		return k, tcpOther, 0, 0
	}
	ack, win = tcp.AckNumber(), uint32(tcp.WindowSize())
	switch {
	case flags&(header.TCPFlagFin|header.TCPFlagRst) != 0:
		return k, tcpEnd, ack, win
	case flags != header.TCPFlagAck || pkt.Data().Size() != 0:
		return k, tcpOther, ack, win
	case hasSACK(tcp.Options()):
		return k, tcpSack, ack, win
	}
	return k, tcpAck, ack, win
}

// hasSACK reports whether TCP options opts hold a SACK block.
func hasSACK(opts []byte) bool {
	for len(opts) > 0 {
		switch opts[0] {
		case header.TCPOptionEOL:
			return false
		case header.TCPOptionNOP:
			opts = opts[1:]
			continue
		case header.TCPOptionSACK:
			return true
		}
		if len(opts) < 2 || opts[1] < 2 || int(opts[1]) > len(opts) {
			return false
		}
		opts = opts[opts[1]:]
	}
	return false
}

// queueLocked decides what becomes of pkt, an outbound packet, as far as
// held acknowledgements go, and appends to l.out what is to be sent now.
// It reports false if the queue is full (pkt is then neither queued nor
// held). l.mu is held.
//
//   - A bare acknowledgement is held for ackDelay if it acknowledges less
//     than two full packets more than the last acknowledgement sent on its
//     connection, as a kernel delays its ACKs: a request, not a stream.
//     A stream's receiver acknowledges at once, or its sender would wait;
//     so does a connection's first acknowledgement, which may finish its
//     handshake.
//   - Data, SYN, FIN or RST of a connection whose acknowledgement is held
//     carries a newer acknowledgement itself: the held one is dropped.
//   - So does a newer bare acknowledgement of that connection, which then
//     goes at once: nothing is held twice in a row.
//   - A duplicate acknowledgement (the same number and window as the held
//     one) or one with SACK blocks signals loss to the peer, which counts
//     them: the held one goes first, then this one, neither held.
func (l *link) queueLocked(pkt *stack.PacketBuffer) bool {
	if len(l.out) >= outQueueLen || (l.outBytes+pkt.Size() > outQueueBytes && len(l.out) > 0) {
		return false
	}
	if l.ackDelay > 0 {
		key, kind, ack, win := classify(pkt)
		if kind != notTCP {
			h, held := l.held[key]
			last, known := l.acks.get(key)
			switch kind {
			case tcpEnd:
				l.acks.forget(key)
			case tcpAck, tcpSack, tcpOther:
				if ack != 0 || kind != tcpOther {
					l.acks.put(key, ack)
				}
			}
			switch {
			case kind == tcpAck && !held && known && ack-last < l.quickAck:
				l.held[key] = heldAck{pkt: pkt.IncRef(), ack: ack, win: win, at: time.Now()}
				if !l.heldArmed {
					l.heldArmed = true
					l.heldTimer.Reset(l.ackDelay)
				}
				return true
			case !held:
			case kind == tcpSack || (kind == tcpAck && h.ack == ack && h.win == win):
				delete(l.held, key)
				l.appendLocked(h.pkt) // the held reference passes to the queue
			default:
				delete(l.held, key)
				h.pkt.DecRef()
			}
		}
	}
	l.appendLocked(pkt.IncRef())
	return true
}

// ackLog remembers the last acknowledgement number sent on each
// connection, in two generations so that connections that ended without
// a word are forgotten: when the current generation fills, it becomes the
// previous one and the previous one is dropped.
type ackLog struct {
	cur, prev map[flowKey]uint32
}

// ackLogGeneration is how many connections a generation holds.
const ackLogGeneration = 8192

func (a *ackLog) get(k flowKey) (uint32, bool) {
	if v, ok := a.cur[k]; ok {
		return v, true
	}
	v, ok := a.prev[k]
	return v, ok
}

func (a *ackLog) put(k flowKey, ack uint32) {
	if a.cur == nil || len(a.cur) >= ackLogGeneration {
		a.prev, a.cur = a.cur, make(map[flowKey]uint32)
	}
	a.cur[k] = ack
}

func (a *ackLog) forget(k flowKey) {
	delete(a.cur, k)
	delete(a.prev, k)
}

// appendLocked adds a reference to pkt to the send queue. l.mu is held.
func (l *link) appendLocked(pkt *stack.PacketBuffer) {
	l.out = append(l.out, pkt)
	l.outBytes += pkt.Size()
}

// releaseHeld sends the held acknowledgements that have waited ackDelay
// (or nearly: the timer is shared, and a few microseconds early costs
// nothing) and sets the timer for the oldest of the rest.
func (l *link) releaseHeld() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.heldArmed = false
	if l.closed || len(l.held) == 0 {
		return
	}
	now := time.Now()
	next := l.ackDelay
	for k, h := range l.held {
		wait := l.ackDelay - now.Sub(h.at)
		if wait > l.ackDelay/8 {
			next = min(next, wait)
			continue
		}
		l.appendLocked(h.pkt)
		delete(l.held, k)
	}
	if len(l.held) > 0 {
		l.heldArmed = true
		l.heldTimer.Reset(next)
	}
	if len(l.out) > 0 {
		l.ready.Signal()
	}
}

// dropHeldLocked forgets held acknowledgements when the link closes.
// l.mu is held.
func (l *link) dropHeldLocked() {
	for k, h := range l.held {
		h.pkt.DecRef()
		delete(l.held, k)
	}
	if l.heldTimer != nil {
		l.heldTimer.Stop()
	}
}
