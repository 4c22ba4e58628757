package wgnet

import (
	"bytes"
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// coalesceFlows is how many TCP flows a batch may interleave and still be
// coalesced: each has a run open until it ends or the batch does.
const coalesceFlows = 8

// coalescer joins consecutive TCP segments of one flow in a batch of
// decrypted packets into one large segment before the stack sees them, as
// a NIC's receive offload does: a bulk transfer's packets arrive as the
// sender cut them from its own large segments, and the stack then handles
// one segment (and one allocation) where it would have handled 45.
//
// Segments join only where nothing but the payload and the sequence number
// differ: the same addresses, ports, acknowledgement, window and TCP
// options, no IP options or fragments, only ACK set (PSH may end a run).
// A segment shorter than the first ends its run, as a sender sends full
// segments until it runs out. Everything else goes up as it came, and a
// flow's open run goes up before anything else of that flow, so that each
// flow's packets reach the stack in the order they arrived.
//
// The coalesced segment's IP header carries its new length (and IPv4
// checksum); its TCP checksum is left as the first segment's. The stack
// does not check it: the link declares receive checksum offload
// (link.Capabilities), so the NIC marks every packet it delivers
// RXChecksumValidated, and WireGuard authenticated every one of them.
type coalescer struct {
	d    stack.NetworkDispatcher
	runs []run // open, oldest first
}

// run is a flow's segments joined so far. Its slices point into the
// batch's buffers, which stay untouched until Write returns.
type run struct {
	first []byte   // the first packet, headers and payload
	hl    int      // IP and TCP header length of first
	nh    int      // IP header length of first
	parts [][]byte // payload of each packet after the first
	size  int      // payload bytes, first included
	seg   int      // payload bytes of the first packet
	next  uint32   // sequence number the next segment must have
	psh   bool     // a segment with PSH ended the run
}

// tcpHeaders returns the IP and TCP header lengths of p if p is a TCP
// segment that may be coalesced: well formed, carrying data, with no IP
// options, extension headers or fragmentation.
func tcpHeaders(p []byte) (nh, hl int, ok bool) {
	if len(p) < header.IPv4MinimumSize {
		return 0, 0, false
	}
	switch p[0] >> 4 {
	case 4:
		ip := header.IPv4(p)
		if ip.HeaderLength() != header.IPv4MinimumSize || int(ip.TotalLength()) != len(p) ||
			ip.Protocol() != uint8(header.TCPProtocolNumber) || ip.More() || ip.FragmentOffset() != 0 {
			return 0, 0, false
		}
		nh = header.IPv4MinimumSize
	case 6:
		if len(p) < header.IPv6MinimumSize {
			return 0, 0, false
		}
		ip := header.IPv6(p)
		if int(ip.PayloadLength()) != len(p)-header.IPv6MinimumSize || ip.NextHeader() != uint8(header.TCPProtocolNumber) {
			return 0, 0, false
		}
		nh = header.IPv6MinimumSize
	default:
		return 0, 0, false
	}
	if len(p) < nh+header.TCPMinimumSize {
		return 0, 0, false
	}
	off := int(header.TCP(p[nh:]).DataOffset())
	if off < header.TCPMinimumSize || nh+off >= len(p) {
		return 0, 0, false // malformed, or no data: nothing to join
	}
	return nh, nh + off, true
}

// joinable reports whether TCP flags let a segment join a run: ACK, and
// PSH on a run's last segment.
func joinable(flags header.TCPFlags) bool {
	return flags == header.TCPFlagAck || flags == header.TCPFlagAck|header.TCPFlagPsh
}

// flowAddrs is the source and destination addresses of IP packet p.
func flowAddrs(p []byte) []byte {
	if p[0]>>4 == 4 {
		return p[12:20]
	}
	return p[8:40]
}

// fits reports whether p, of r's flow with headers of length hl, may be
// appended to r.
func (r *run) fits(p []byte, hl int) bool {
	a, nh := r.first, r.nh
	payload := len(p) - hl
	// The joined packet stays within the largest IPv4 packet, headers
	// included, in IPv6 too.
	if r.psh || hl != r.hl || payload > r.seg || r.hl+r.size+payload > 0xffff {
		return false
	}
	if !joinable(header.TCP(p[nh:]).Flags()) || header.TCP(p[nh:]).SequenceNumber() != r.next {
		return false
	}
	if nh == header.IPv4MinimumSize {
		// TOS and TTL, and the don't-fragment flag.
		if p[1] != a[1] || p[8] != a[8] || p[6]&0x40 != a[6]&0x40 {
			return false
		}
	} else if !bytes.Equal(p[:4], a[:4]) || p[7] != a[7] {
		// Traffic class, flow label and hop limit.
		return false
	}
	// Acknowledgement and data offset, window, and urgent pointer and
	// options; not the flags (checked above) nor the checksum.
	return bytes.Equal(p[nh+8:nh+13], a[nh+8:nh+13]) && bytes.Equal(p[nh+14:nh+16], a[nh+14:nh+16]) &&
		bytes.Equal(p[nh+18:hl], a[nh+18:hl])
}

// add hands p up, after whatever of its flow is waiting, or keeps it to
// join what follows. It returns false for a packet that is neither IPv4
// nor IPv6, which it drops.
func (c *coalescer) add(p []byte) bool {
	nh, hl, ok := tcpHeaders(p)
	if !ok {
		// Not a data segment that can be joined (a bare ACK, a SYN,
		// ICMP, UDP): what waits of its flow, if any, goes first.
		c.flushFlowOf(p)
		return c.deliver(p)
	}
	i := c.find(p, nh)
	if i >= 0 {
		r := &c.runs[i]
		if r.fits(p, hl) {
			r.parts = append(r.parts, p[hl:])
			payload := len(p) - hl
			r.size += payload
			r.next += uint32(payload)
			if header.TCP(p[nh:]).Flags()&header.TCPFlagPsh != 0 || payload < r.seg {
				r.psh = header.TCP(p[nh:]).Flags()&header.TCPFlagPsh != 0
				c.flush(i)
			}
			return true
		}
		c.flush(i)
	}
	flags := header.TCP(p[nh:]).Flags()
	if flags != header.TCPFlagAck {
		return c.deliver(p)
	}
	if len(c.runs) == coalesceFlows {
		c.flush(0)
	}
	payload := len(p) - hl
	c.runs = append(c.runs, run{first: p, hl: hl, nh: nh, parts: c.spareParts(), size: payload, seg: payload,
		next: header.TCP(p[nh:]).SequenceNumber() + uint32(payload)})
	return true
}

// spareParts returns an empty slice for a new run's parts, reusing the
// array of a run flushed before if there is one.
func (c *coalescer) spareParts() [][]byte {
	if n := len(c.runs); n < cap(c.runs) {
		if parts := c.runs[:n+1][n].parts; parts != nil {
			return parts[:0]
		}
	}
	return make([][]byte, 0, 64)
}

// find returns the index of p's flow's open run, or -1.
// nh is the length of p's IP header, whose ports follow it; a packet with
// IPv4 options belongs to the flow of a run without them.
func (c *coalescer) find(p []byte, nh int) int {
	for i := range c.runs {
		r := &c.runs[i]
		if r.first[0]>>4 == p[0]>>4 && bytes.Equal(flowAddrs(p), flowAddrs(r.first)) && bytes.Equal(p[nh:nh+4], r.first[r.nh:r.nh+4]) {
			return i
		}
	}
	return -1
}

// flushFlowOf hands up the open run of p's flow, if p is a TCP packet
// of one. A packet whose ports cannot be read (an IPv4 fragment, an IPv6
// packet behind extension headers) hands every run up, which keeps any
// flow's order.
func (c *coalescer) flushFlowOf(p []byte) {
	if len(c.runs) == 0 || len(p) < header.IPv4MinimumSize {
		return
	}
	var nh int
	switch p[0] >> 4 {
	case 4:
		ip := header.IPv4(p)
		if ip.More() || ip.FragmentOffset() != 0 {
			c.flushAll()
			return
		}
		if ip.Protocol() != uint8(header.TCPProtocolNumber) {
			return
		}
		nh = int(ip.HeaderLength()) // options make it longer than a run's
	case 6:
		if len(p) < header.IPv6MinimumSize {
			return
		}
		switch next := header.IPv6(p).NextHeader(); {
		case next == uint8(header.TCPProtocolNumber):
			nh = header.IPv6MinimumSize
		case ipv6Extension(next):
			c.flushAll()
			return
		default:
			return
		}
	default:
		return
	}
	if len(p) < nh+4 {
		return
	}
	if i := c.find(p, nh); i >= 0 {
		c.flush(i)
	}
}

// ipv6Extension reports whether an IPv6 next-header value is an extension
// header (RFC 8200, and the IANA list of them), behind which the upper
// layer's header, and a TCP packet's ports, lie further on.
func ipv6Extension(next uint8) bool {
	switch next {
	case 0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254:
		return true
	}
	return false
}

// flushAll hands up every open run, oldest first.
func (c *coalescer) flushAll() {
	for len(c.runs) > 0 {
		c.flush(0)
	}
}

// flush hands up run i and closes it.
func (c *coalescer) flush(i int) {
	r := c.runs[i]
	if len(r.parts) == 0 {
		c.deliver(r.first)
	} else {
		c.deliverRun(&r)
	}
	// Keep the closed run's parts array for a later run: move it past
	// the open ones, holding nothing of this batch's buffers.
	clear(r.parts)
	parts := r.parts[:0]
	copy(c.runs[i:], c.runs[i+1:])
	n := len(c.runs) - 1
	c.runs[n] = run{parts: parts}
	c.runs = c.runs[:n]
}

// deliverRun hands up r's segments as one. The headers start a view of
// their own: the stack takes a reference to the IP header's view while it
// reads the headers again, and reading from a view whose chunk is shared
// copies the whole chunk first. With the headers in a small chunk (gVisor
// fills the rest of it with the first bytes of payload) that copy is at
// most 128 bytes; in the payload's chunk it would be 64 KiB.
func (c *coalescer) deliverRun(r *run) {
	hdr := buffer.NewViewWithData(r.first[:r.hl])
	b := hdr.AsSlice()
	total := r.hl + r.size
	var proto tcpip.NetworkProtocolNumber
	if r.nh == header.IPv4MinimumSize {
		proto = header.IPv4ProtocolNumber
		ip := header.IPv4(b)
		ip.SetTotalLength(uint16(total))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
	} else {
		proto = header.IPv6ProtocolNumber
		binary.BigEndian.PutUint16(b[4:6], uint16(total-header.IPv6MinimumSize))
	}
	if r.psh {
		tcp := header.TCP(b[r.nh:])
		tcp.SetFlags(uint8(tcp.Flags() | header.TCPFlagPsh))
	}
	payload := buffer.NewViewSize(r.size)
	pb := payload.AsSlice()
	w := copy(pb, r.first[r.hl:])
	for _, p := range r.parts {
		w += copy(pb[w:], p)
	}
	buf := buffer.MakeWithView(hdr)
	buf.Append(payload)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buf})
	pkt.NetworkProtocolNumber = proto
	pkt.RXChecksumValidated = true
	c.d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

// deliver hands p up as it is. It returns false for a packet that is
// neither IPv4 nor IPv6, which it drops.
func (c *coalescer) deliver(p []byte) bool {
	var proto tcpip.NetworkProtocolNumber
	switch p[0] >> 4 {
	case 4:
		proto = header.IPv4ProtocolNumber
	case 6:
		proto = header.IPv6ProtocolNumber
	default:
		return false
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
	pkt.NetworkProtocolNumber = proto
	pkt.RXChecksumValidated = true
	c.d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
	return true
}
