package wgnet

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// recordingDispatcher keeps a copy of every packet a link delivers.
type recordingDispatcher struct{ pkts [][]byte }

func (d *recordingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.pkts = append(d.pkts, pkt.Data().AsRange().ToSlice())
}

func (d *recordingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// seg describes a TCP segment for tcpSegment.
type seg struct {
	v6      bool
	sport   uint16
	seq     uint32
	ack     uint32
	flags   header.TCPFlags
	payload int
	tsval   uint32 // timestamp option's value; 0 for no options
	ttl     uint8
}

// tcpSegment builds s as WireGuard decrypts it, its payload bytes derived
// from its sequence numbers so that a joined payload can be checked.
func tcpSegment(s seg) []byte {
	opts := 0
	if s.tsval != 0 {
		opts = 12
	}
	nh := header.IPv4MinimumSize
	if s.v6 {
		nh = header.IPv6MinimumSize
	}
	th := header.TCPMinimumSize + opts
	p := make([]byte, nh+th+s.payload)
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	if s.v6 {
		header.IPv6(p).Encode(&header.IPv6Fields{PayloadLength: uint16(th + s.payload), TransportProtocol: header.TCPProtocolNumber, HopLimit: ttl,
			SrcAddr: tcpip.AddrFrom16([16]byte{0xfd, 15: 2}), DstAddr: tcpip.AddrFrom16([16]byte{0xfd, 15: 1})})
	} else {
		ip := header.IPv4(p)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(p)), TTL: ttl, Protocol: uint8(header.TCPProtocolNumber),
			SrcAddr: tcpip.AddrFrom4([4]byte{100, 64, 0, 2}), DstAddr: tcpip.AddrFrom4([4]byte{100, 64, 0, 1})})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	tcp := header.TCP(p[nh:])
	tcp.Encode(&header.TCPFields{SrcPort: s.sport, DstPort: 443, SeqNum: s.seq, AckNum: s.ack,
		DataOffset: uint8(th), Flags: s.flags, WindowSize: 512})
	if s.tsval != 0 {
		header.EncodeTSOption(s.tsval, 7, p[nh+header.TCPMinimumSize:nh+th])
	}
	for i := range s.payload {
		p[nh+th+i] = byte((s.seq + uint32(i)) * 7)
	}
	// A checksum of its own, so that joining must not compare it.
	tcp.SetChecksum(uint16(s.seq))
	return p
}

// TestCoalescerJoinsARun: the 46 packets of one large segment, cut as the
// sender's link cuts it, reach the stack as one segment with the whole
// payload, the first one's sequence number, PSH from the last, and IP
// headers whose lengths (and IPv4 checksum) fit it; in IPv4 and IPv6.
func TestCoalescerJoinsARun(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			d := &recordingDispatcher{}
			c := &coalescer{d: d}
			var want []byte
			seq := uint32(1000)
			for i := range 46 {
				s := seg{v6: v6, sport: 1, seq: seq, ack: 9, flags: header.TCPFlagAck, payload: 1368, tsval: 5}
				if i == 45 {
					s.payload, s.flags = 200, header.TCPFlagAck|header.TCPFlagPsh
				}
				p := tcpSegment(s)
				want = append(want, p[len(p)-s.payload:]...)
				seq += uint32(s.payload)
				if !c.add(p) {
					t.Fatal("add refused a TCP packet")
				}
			}
			c.flushAll()
			if len(d.pkts) != 1 {
				t.Fatalf("%d packets reached the stack, want 1", len(d.pkts))
			}
			p := d.pkts[0]
			nh, hl, ok := tcpHeaders(p)
			if !ok {
				t.Fatalf("the joined segment's headers do not parse: % x", p[:60])
			}
			if v6 && nh != header.IPv6MinimumSize || !v6 && !header.IPv4(p).IsChecksumValid() {
				t.Fatal("the joined segment's IP header is wrong (version, or IPv4 checksum)")
			}
			tcp := header.TCP(p[nh:])
			if tcp.SequenceNumber() != 1000 || tcp.Flags() != header.TCPFlagAck|header.TCPFlagPsh || tcp.AckNumber() != 9 {
				t.Fatalf("joined segment: seq %d flags %v ack %d, want 1000, ACK|PSH, 9", tcp.SequenceNumber(), tcp.Flags(), tcp.AckNumber())
			}
			if !bytes.Equal(p[hl:], want) {
				t.Fatalf("joined payload of %d bytes differs from the %d sent", len(p)-hl, len(want))
			}
		})
	}
}

// TestCoalescerKeepsEachFlowsOrder throws random batches at the coalescer:
// up to 12 flows (more than it keeps runs for) interleaved in stretches,
// with bare ACKs, PSH, SYN and FIN, sequence gaps, retransmissions,
// segments longer than the first, timestamps and TTLs that change, and
// non-TCP packets. However they are joined, what reaches the stack must be
// what came, in each flow's order, each packet once (checkDelivery).
func TestCoalescerKeepsEachFlowsOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	udp := func(sport uint16) []byte {
		p := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+10)
		header.IPv4(p).Encode(&header.IPv4Fields{TotalLength: uint16(len(p)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
			SrcAddr: tcpip.AddrFrom4([4]byte{100, 64, 0, 2}), DstAddr: tcpip.AddrFrom4([4]byte{100, 64, 0, 1})})
		header.UDP(p[header.IPv4MinimumSize:]).Encode(&header.UDPFields{SrcPort: sport, DstPort: 53})
		return p
	}
	joined := 0
	for range 300 {
		flows := 1 + rng.IntN(12)
		seqs := make([]uint32, flows)
		for f := range seqs {
			seqs[f] = rng.Uint32()
		}
		var sent [][]byte
		for len(sent) < 200 {
			f := rng.IntN(flows)
			for range 1 + rng.IntN(20) {
				s := seg{v6: f%3 == 2, sport: uint16(100 + f), seq: seqs[f], ack: 1, flags: header.TCPFlagAck, payload: 1368, tsval: 5}
				switch r := rng.IntN(100); {
				case r < 5:
					s.payload = 0 // a bare ACK
				case r < 9:
					s.flags |= header.TCPFlagPsh
					s.payload = rng.IntN(1368) + 1
				case r < 11:
					s.flags = header.TCPFlagSyn
				case r < 13:
					s.flags |= header.TCPFlagFin
				case r < 16:
					s.seq += 1368 // a gap
				case r < 19:
					s.seq -= 1368 // a retransmission
				case r < 21:
					s.payload = 1400 // longer than the first
				case r < 23:
					s.tsval = 6
				case r < 24:
					s.ttl = 63
				case r < 26:
					s.payload = rng.IntN(1368) + 1 // short: ends a run
				}
				p := tcpSegment(s)
				seqs[f] = s.seq + uint32(s.payload)
				sent = append(sent, p)
				if rng.IntN(50) == 0 {
					sent = append(sent, udp(uint16(100+f)))
				}
			}
		}
		got := runCoalescer(t, sent)
		checkDelivery(t, sent, got)
		joined += len(sent) - len(got)
	}
	if joined == 0 {
		t.Fatal("nothing was ever joined")
	}
	if (&coalescer{d: &recordingDispatcher{}}).add([]byte{0x20, 0, 0, 0}) {
		t.Fatal("add took a packet that is neither IPv4 nor IPv6")
	}
}

// TestCoalescerLeavesAloneWhatMustNotJoin: consecutive segments of one
// flow stay apart where they differ in more than payload and sequence
// number, or do not follow each other.
func TestCoalescerLeavesAloneWhatMustNotJoin(t *testing.T) {
	base := seg{sport: 1, seq: 100, ack: 1, flags: header.TCPFlagAck, payload: 1000, tsval: 5}
	for _, c := range []struct {
		name   string
		second func(s seg) seg
	}{
		{"a gap in sequence", func(s seg) seg { s.seq += 1; return s }},
		{"another acknowledgement", func(s seg) seg { s.ack = 2; return s }},
		{"other options", func(s seg) seg { s.tsval = 6; return s }},
		{"another TTL", func(s seg) seg { s.ttl = 1; return s }},
		{"longer than the first", func(s seg) seg { s.payload = 1001; return s }},
		{"FIN", func(s seg) seg { s.flags |= header.TCPFlagFin; return s }},
		{"URG", func(s seg) seg { s.flags |= header.TCPFlagUrg; return s }},
		{"ECE", func(s seg) seg { s.flags |= header.TCPFlagEce; return s }},
		{"another port", func(s seg) seg { s.sport = 2; return s }},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &recordingDispatcher{}
			co := &coalescer{d: d}
			first := tcpSegment(base)
			s := base
			s.seq += uint32(base.payload)
			second := tcpSegment(c.second(s))
			co.add(first)
			co.add(second)
			co.flushAll()
			if len(d.pkts) != 2 || !bytes.Equal(d.pkts[0], first) || !bytes.Equal(d.pkts[1], second) {
				t.Fatalf("%d packets delivered, want the 2 sent as they were", len(d.pkts))
			}
		})
	}
	// And the same two packets with nothing changed are joined.
	d := &recordingDispatcher{}
	co := &coalescer{d: d}
	s := base
	s.seq += uint32(base.payload)
	co.add(tcpSegment(base))
	co.add(tcpSegment(s))
	co.flushAll()
	if len(d.pkts) != 1 {
		t.Fatalf("two packets that may join: %d delivered, want 1", len(d.pkts))
	}
	if slices.Equal(d.pkts[0], tcpSegment(base)) {
		t.Fatal("joined packet is the first one unchanged")
	}
}

// discardDispatcher takes every packet and keeps none.
type discardDispatcher struct{ n int }

func (d *discardDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.n += pkt.Data().Size()
}

func (d *discardDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// BenchmarkLinkWrite hands the link batches of 128 decrypted packets of
// one TCP flow, as a bulk download's arrive, and reports the cost per
// packet of making them the stack's.
func BenchmarkLinkWrite(b *testing.B) {
	l := newLink(DefaultMTU, 0)
	d := &discardDispatcher{}
	l.Attach(d)
	const payload = 1368
	bufs := make([][]byte, 128)
	seq := uint32(1)
	for i := range bufs {
		p := tcpSegment(seg{sport: 1, seq: seq, ack: 1, flags: header.TCPFlagAck, payload: payload, tsval: 5})
		seq += payload
		bufs[i] = p
	}
	b.SetBytes(int64(len(bufs) * payload))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Write(bufs, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(bufs)), "ns/packet")
}

// TestCoalescerStopsAtTheLargestPacket: a run is joined up to a packet of
// exactly 65,535 bytes and no further, headers included, in IPv4 and (which
// could carry 40 bytes more) in IPv6 alike.
func TestCoalescerStopsAtTheLargestPacket(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		nh := header.IPv4MinimumSize
		if v6 {
			nh = header.IPv6MinimumSize
		}
		// Five segments that fill the largest packet exactly, then one byte.
		room := 0xffff - nh - header.TCPMinimumSize
		var in [][]byte
		seq := uint32(7)
		for i := range 6 {
			n := room / 5
			if i == 0 {
				n += room % 5
			}
			if i == 5 {
				n = 1
			}
			in = append(in, tcpSegment(seg{v6: v6, sport: 1, seq: seq, ack: 1, flags: header.TCPFlagAck, payload: n}))
			seq += uint32(n)
		}
		out := runCoalescer(t, in)
		checkDelivery(t, in, out)
		want := 0xffff
		if len(out) != 2 || len(out[0]) != want {
			lens := make([]int, len(out))
			for i, p := range out {
				lens[i] = len(p)
			}
			t.Fatalf("v6=%v: delivered packets of %v bytes, want one of %d and the last byte apart", v6, lens, want)
		}
	}
}
