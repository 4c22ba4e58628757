package wgnet

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// gsoPacket builds a TCP segment as the stack hands it to a link with
// segmentation offload: headers pushed in front of the payload, the TCP
// checksum holding only the pseudo-header sum.
func gsoPacket(v6 bool, payload []byte, mss int, flags header.TCPFlags) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 80, Payload: buffer.MakeWithData(payload)})
	tcp := header.TCP(pkt.TransportHeader().Push(header.TCPMinimumSize + 12))
	tcp.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 7000, SeqNum: 0xfffff000, AckNum: 77, DataOffset: header.TCPMinimumSize + 12, Flags: flags, WindowSize: 1000})
	copy(tcp[header.TCPMinimumSize:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}) // NOP NOP timestamps
	src, dst := tcpip.AddrFrom4([4]byte{100, 64, 0, 1}), tcpip.AddrFrom4([4]byte{100, 64, 0, 2})
	gso := stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: uint16(mss), L3HdrLen: header.IPv4MinimumSize}
	tcpLen := uint16(len(tcp) + len(payload))
	if v6 {
		src = tcpip.AddrFrom16([16]byte{0xfd, 15: 1})
		dst = tcpip.AddrFrom16([16]byte{0xfd, 15: 2})
		ip := header.IPv6(pkt.NetworkHeader().Push(header.IPv6MinimumSize))
		ip.Encode(&header.IPv6Fields{PayloadLength: tcpLen, TransportProtocol: header.TCPProtocolNumber, HopLimit: 64, SrcAddr: src, DstAddr: dst})
		gso.Type, gso.L3HdrLen = stack.GSOTCPv6, header.IPv6MinimumSize
	} else {
		ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
		ip.Encode(&header.IPv4Fields{TotalLength: tcpLen + header.IPv4MinimumSize, ID: 65530, Flags: header.IPv4FlagDontFragment, TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, tcpLen))
	pkt.GSOOptions = gso
	return pkt
}

// TestSegment cuts segments of many sizes, IPv4 and IPv6, a few buffers at
// a time as wireguard-go's batches would take them, and checks every
// packet as a receiving stack would: lengths, checksums, contiguous
// sequence numbers, flags, the payload reassembled.
func TestSegment(t *testing.T) {
	const mss = 1380
	rng := rand.New(rand.NewPCG(1, 2))
	for _, v6 := range []bool{false, true} {
		for _, size := range []int{0, 1, mss - 1, mss, mss + 1, 3*mss + 17, 45 * mss, 65000} {
			for _, batch := range []int{1, 3, 128} {
				t.Run(fmt.Sprintf("v6=%t/size=%d/batch=%d", v6, size, batch), func(t *testing.T) {
					payload := make([]byte, size)
					for i := range payload {
						payload[i] = byte(rng.Uint32())
					}
					flags := header.TCPFlagAck | header.TCPFlagPsh | header.TCPFlagFin | header.TCPFlagCwr
					pkt := gsoPacket(v6, payload, mss, flags)
					defer pkt.DecRef()
					hl := len(pkt.NetworkHeader().Slice()) + len(pkt.TransportHeader().Slice())

					var got [][]byte
					next, done := 0, false
					for calls := 0; !done; calls++ {
						if calls > 1000 {
							t.Fatal("segment never finished")
						}
						bufs := make([][]byte, batch)
						for i := range bufs {
							bufs[i] = make([]byte, 16+1500)
						}
						sizes := make([]int, batch)
						var k int
						k, next, done = segment(pkt, next, bufs, sizes, 16)
						for i := range k {
							got = append(got, bufs[i][16:16+sizes[i]])
						}
					}
					want := max(1, (size+mss-1)/mss)
					if len(got) != want {
						t.Fatalf("got %d packets, want %d", len(got), want)
					}
					var joined []byte
					for i, p := range got {
						joined = append(joined, checkSegment(t, p, v6, hl, i, len(got), mss)...)
					}
					if !bytes.Equal(joined, payload) {
						t.Fatal("the packets' payloads do not add up to the segment's")
					}
				})
			}
		}
	}
}

// checkSegment verifies packet i of n and returns its payload.
func checkSegment(t *testing.T, p []byte, v6 bool, hl, i, n, mss int) []byte {
	t.Helper()
	var tcp header.TCP
	var src, dst tcpip.Address
	if v6 {
		ip := header.IPv6(p)
		if !ip.IsValid(len(p)) || int(ip.PayloadLength())+header.IPv6MinimumSize != len(p) {
			t.Fatalf("packet %d: bad IPv6 header (payload length %d, packet %d)", i, ip.PayloadLength(), len(p))
		}
		tcp, src, dst = header.TCP(p[header.IPv6MinimumSize:]), ip.SourceAddress(), ip.DestinationAddress()
	} else {
		ip := header.IPv4(p)
		if !ip.IsValid(len(p)) || !ip.IsChecksumValid() || int(ip.TotalLength()) != len(p) {
			t.Fatalf("packet %d: bad IPv4 header (total length %d, packet %d, checksum valid %t)", i, ip.TotalLength(), len(p), ip.IsChecksumValid())
		}
		if want := uint16(65530 + i); ip.ID() != want {
			t.Errorf("packet %d: IPv4 ID %d, want %d", i, ip.ID(), want)
		}
		tcp, src, dst = header.TCP(p[header.IPv4MinimumSize:]), ip.SourceAddress(), ip.DestinationAddress()
	}
	payload := p[hl:]
	if len(payload) > mss {
		t.Errorf("packet %d: %d bytes of payload, more than the MSS %d", i, len(payload), mss)
	}
	if !tcp.IsChecksumValid(src, dst, checksum.Checksum(payload, 0), uint16(len(payload))) {
		t.Errorf("packet %d: TCP checksum invalid", i)
	}
	if want := uint32(0xfffff000) + uint32(i*mss); tcp.SequenceNumber() != want {
		t.Errorf("packet %d: sequence %#x, want %#x", i, tcp.SequenceNumber(), want)
	}
	f := tcp.Flags()
	last := i == n-1
	if (f&header.TCPFlagFin != 0) != last || (f&header.TCPFlagPsh != 0) != last {
		t.Errorf("packet %d of %d: flags %v: FIN and PSH belong to the last only", i, n, f)
	}
	if (f&header.TCPFlagCwr != 0) != (i == 0) || f&header.TCPFlagAck == 0 {
		t.Errorf("packet %d: flags %v: CWR belongs to the first only, ACK to all", i, f)
	}
	return payload
}
