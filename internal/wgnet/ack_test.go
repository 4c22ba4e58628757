package wgnet

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tcpPacket builds an outbound IPv4 TCP packet as the stack hands it to
// the link: headers pushed, protocol numbers set.
func tcpPacket(sport uint16, flags header.TCPFlags, ack uint32, win uint16, payload []byte, opts []byte) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 80, Payload: buffer.MakeWithData(payload)})
	th := header.TCPMinimumSize + len(opts)
	tcp := header.TCP(pkt.TransportHeader().Push(th))
	tcp.Encode(&header.TCPFields{SrcPort: sport, DstPort: 443, SeqNum: 1000, AckNum: ack, DataOffset: uint8(th), Flags: flags, WindowSize: win})
	copy(tcp[header.TCPMinimumSize:], opts)
	ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(header.IPv4MinimumSize + th + len(payload)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4([4]byte{100, 64, 0, 1}), DstAddr: tcpip.AddrFrom4([4]byte{100, 64, 0, 2})})
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	return pkt
}

// sent drains what the link would hand wireguard-go now, without
// blocking, as "port:flags:ack" strings.
func sent(l *link) []string {
	l.mu.Lock()
	n := len(l.out)
	l.mu.Unlock()
	if n == 0 {
		return nil
	}
	bufs := make([][]byte, n+8)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	sizes := make([]int, len(bufs))
	k, err := l.Read(bufs, sizes, 0)
	if err != nil {
		panic(err)
	}
	var out []string
	for i := range k {
		tcp := header.TCP(bufs[i][header.IPv4MinimumSize:sizes[i]])
		kind := "ack"
		switch {
		case len(tcp) > int(tcp.DataOffset()):
			kind = "data"
		case tcp.Flags().Contains(header.TCPFlagFin):
			kind = "fin"
		}
		out = append(out, fmt.Sprintf("%d:%s:%d", tcp.SourcePort(), kind, tcp.AckNumber()))
	}
	return out
}

func write(t *testing.T, l *link, pkts ...*stack.PacketBuffer) {
	t.Helper()
	var list stack.PacketBufferList
	for _, p := range pkts {
		list.PushBack(p)
	}
	if n, err := l.WritePackets(list); err != nil || n != len(pkts) {
		t.Fatalf("WritePackets: %d of %d, %v", n, len(pkts), err)
	}
	for _, p := range pkts {
		p.DecRef()
	}
}

// TestHeldAcks drives the link's acknowledgement holding packet by packet:
// what it sends at once, what it holds, what it drops, and that nothing
// it holds is lost.
func TestHeldAcks(t *testing.T) {
	sack := []byte{1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP SACK(1..2)
	data := []byte("hello")
	ack := func(port uint16, n uint32) *stack.PacketBuffer {
		return tcpPacket(port, header.TCPFlagAck, n, 100, nil, nil)
	}
	steps := []struct {
		name string
		pkts []*stack.PacketBuffer
		want string // sent at once, in order
	}{
		{"a connection's first ACK goes at once (it may finish a handshake)", []*stack.PacketBuffer{ack(1, 10)}, "1:ack:10"},
		{"an ACK of a little more is held", []*stack.PacketBuffer{ack(1, 110)}, ""},
		{"data of the same flow carries it: the held one is dropped",
			[]*stack.PacketBuffer{tcpPacket(1, header.TCPFlagAck|header.TCPFlagPsh, 110, 100, data, nil)}, "1:data:110"},
		{"an ACK of two full packets or more goes at once", []*stack.PacketBuffer{ack(1, 110+2760)}, "1:ack:2870"},
		{"another flow's ACK is held on its own", []*stack.PacketBuffer{ack(2, 20), ack(2, 25)}, "2:ack:20"},
		{"a second, newer ACK of that flow goes at once and replaces the held one", []*stack.PacketBuffer{ack(2, 30)}, "2:ack:30"},
		{"so the next is held again", []*stack.PacketBuffer{ack(2, 40)}, ""},
		{"a duplicate ACK sends the held one first, then itself", []*stack.PacketBuffer{ack(2, 40)}, "2:ack:40 2:ack:40"},
		{"an ACK with SACK blocks is never held",
			[]*stack.PacketBuffer{ack(3, 50), tcpPacket(3, header.TCPFlagAck, 50, 100, nil, sack)}, "3:ack:50 3:ack:50"},
		{"a held ACK goes before a SACK of its flow",
			[]*stack.PacketBuffer{ack(3, 60), tcpPacket(3, header.TCPFlagAck, 60, 100, nil, sack)}, "3:ack:60 3:ack:60"},
		{"a FIN carries the held ACK",
			[]*stack.PacketBuffer{ack(4, 70), ack(4, 71), tcpPacket(4, header.TCPFlagAck|header.TCPFlagFin, 71, 100, nil, nil)}, "4:ack:70 4:fin:71"},
		{"and ends what the link remembers of the connection", []*stack.PacketBuffer{ack(4, 72)}, "4:ack:72"},
	}
	l := newLink(1420, time.Hour) // released only by hand below
	defer l.shut()
	for _, s := range steps {
		write(t, l, s.pkts...)
		if got := strings.Join(sent(l), " "); got != s.want {
			t.Fatalf("%s: sent %q, want %q", s.name, got, s.want)
		}
	}
	// Flow 5's ACK is held, as is nothing else; the timer sends it.
	write(t, l, ack(5, 79))
	sent(l)
	write(t, l, ack(5, 80))
	if len(l.held) != 1 {
		t.Fatalf("held %d acknowledgements, want 1 (flow 5's)", len(l.held))
	}
	// The timer is shared: firing before an ACK's delay is up leaves it
	// held (and the timer set for it).
	l.releaseHeld()
	if got := sent(l); got != nil || len(l.held) != 1 || !l.heldArmed {
		t.Fatalf("an early release sent %q and left %d held (timer set %t), want it still held", got, len(l.held), l.heldArmed)
	}
	l.mu.Lock()
	for k, h := range l.held {
		h.at = h.at.Add(-time.Hour)
		l.held[k] = h
	}
	l.mu.Unlock()
	l.releaseHeld()
	if got := strings.Join(sent(l), " "); got != "5:ack:80" {
		t.Fatalf("released %q, want flow 5's ACK", got)
	}
}

// TestHeldAckReleasedByTimer checks that a held acknowledgement with no
// data after it still goes, ackDelay later.
func TestHeldAckReleasedByTimer(t *testing.T) {
	l := newLink(1420, 5*time.Millisecond)
	defer l.shut()
	write(t, l, tcpPacket(1, header.TCPFlagAck, 9, 100, nil, nil))
	sent(l)
	start := time.Now()
	write(t, l, tcpPacket(1, header.TCPFlagAck, 10, 100, nil, nil))
	if got := sent(l); got != nil {
		t.Fatalf("sent %q at once, want it held", got)
	}
	bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
	n, err := l.Read(bufs, sizes, 0) // blocks until the timer releases it
	if err != nil || n != 1 {
		t.Fatalf("Read: %d, %v", n, err)
	}
	if d := time.Since(start); d < 5*time.Millisecond {
		t.Fatalf("released after %v, before the 5ms delay", d)
	}
}

// TestNoHeldAcks checks that a link with no delay sends bare ACKs at once.
func TestNoHeldAcks(t *testing.T) {
	l := newLink(1420, 0)
	defer l.shut()
	write(t, l, tcpPacket(1, header.TCPFlagAck, 10, 100, nil, nil))
	if got := strings.Join(sent(l), " "); got != "1:ack:10" {
		t.Fatalf("sent %q, want the ACK at once", got)
	}
}

// countingDispatcher records the packets a link delivers to its stack:
// how many, and which sequence numbers of which source port, in order.
type countingDispatcher struct {
	packets int
	seqs    map[uint16][]uint32
}

func (d *countingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.packets++
	hdr, _ := pkt.Data().PullUp(header.IPv4MinimumSize + header.TCPMinimumSize)
	tcp := header.TCP(hdr[header.IPv4MinimumSize:])
	d.seqs[tcp.SourcePort()] = append(d.seqs[tcp.SourcePort()], tcp.SequenceNumber())
}

func (d *countingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestLinkWriteHandsUpEveryPacket: every packet of a batch reaches the
// stack before Write returns, in order within its connection, however
// many connections the batch mixes: more of them than the link keeps runs
// open for (coalesceFlows).
func TestLinkWriteHandsUpEveryPacket(t *testing.T) {
	l := newLink(DefaultMTU, 0)
	d := &countingDispatcher{seqs: map[uint16][]uint32{}}
	l.Attach(d)
	const flows = 80 // more than the buckets hold: some are full
	for round := range 2 {
		var bufs [][]byte
		for f := range flows {
			bufs = append(bufs, tcpSegment(seg{sport: uint16(1000 + f), seq: uint32(1 + round*1000), ack: 1, flags: header.TCPFlagAck, payload: 1000}))
		}
		if _, err := l.Write(bufs, 0); err != nil {
			t.Fatal(err)
		}
		if d.packets != flows*(round+1) {
			t.Fatalf("after batch %d the stack has %d packets, want %d: some were kept back", round+1, d.packets, flows*(round+1))
		}
	}
	for port, seqs := range d.seqs {
		if len(seqs) != 2 || seqs[0] != 1 || seqs[1] != 1001 {
			t.Fatalf("connection from port %d delivered sequence numbers %v, want [1 1001]", port, seqs)
		}
	}
}
