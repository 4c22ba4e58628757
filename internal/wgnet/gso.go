package wgnet

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// segment cuts pkt, a TCP segment the stack built larger than the MTU
// (pkt.GSOOptions says how), into packets of at most GSOOptions.MSS bytes
// of payload, as a NIC with TCP segmentation offload does: each packet
// gets a copy of the IP and TCP headers with its own length, IPv4 ID,
// sequence number and checksums; FIN and PSH stay on the last packet only
// and CWR on the first. It writes segments from first on, one per buffer
// at offset, and reports how many buffers it filled, the segment to
// continue from and whether it wrote the last one.
//
// The stack leaves the TCP checksum field holding only its pseudo-header
// sum (checksum offload); every packet written here carries the full
// checksum, so the receiving stack may be any stack.
func segment(pkt *stack.PacketBuffer, first int, bufs [][]byte, sizes []int, offset int) (filled, next int, done bool) {
	nh := len(pkt.NetworkHeader().Slice())
	th := len(pkt.TransportHeader().Slice())
	hl := nh + th
	payload := pkt.Size() - hl
	mss := int(pkt.GSOOptions.MSS)
	if mss <= 0 || mss > payload {
		mss = max(payload, 1)
	}
	count := max(1, (payload+mss-1)/mss)
	src := pkt.AsSlices()
	v6 := pkt.GSOOptions.Type == stack.GSOTCPv6

	i := first
	for ; i < count && filled < len(bufs); i++ {
		out := bufs[filled][offset:]
		start := i * mss
		n := min(mss, payload-start)
		if hl+n > len(out) {
			// A segment larger than the buffer: the stack was told the
			// MTU, so this does not happen; drop the packet whole.
			return filled, count, true
		}
		gather(out[:hl], src, 0)
		gather(out[hl:hl+n], src, hl+start)
		finishSegment(out[:hl+n], nh, v6, i, start, i == count-1)
		sizes[filled] = hl + n
		filled++
	}
	return filled, i, i == count
}

// finishSegment fixes up the headers of the i-th packet p cut from a large
// segment (its payload starting start bytes in) and computes its
// checksums. nh is the length of the IP header.
func finishSegment(p []byte, nh int, v6 bool, i, start int, last bool) {
	tcp := header.TCP(p[nh:])
	var src, dst tcpip.Address
	if v6 {
		ip := header.IPv6(p)
		ip.SetPayloadLength(uint16(len(p) - header.IPv6MinimumSize))
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	} else {
		ip := header.IPv4(p[:nh])
		ip.SetTotalLength(uint16(len(p)))
		ip.SetID(ip.ID() + uint16(i))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	}
	tcp.SetSequenceNumber(tcp.SequenceNumber() + uint32(start))
	flags := tcp.Flags()
	if !last {
		flags &^= header.TCPFlagFin | header.TCPFlagPsh
	}
	if i > 0 {
		flags &^= header.TCPFlagCwr
	}
	tcp.SetFlags(uint8(flags))
	tcp.SetChecksum(0)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(p)-nh))
	tcp.SetChecksum(^checksum.Checksum(p[nh:], sum))
}

// gather copies len(dst) bytes of the concatenation of src, from byte off
// on, into dst.
func gather(dst []byte, src [][]byte, off int) {
	for _, s := range src {
		if off >= len(s) {
			off -= len(s)
			continue
		}
		w := copy(dst, s[off:])
		dst = dst[w:]
		off = 0
		if len(dst) == 0 {
			return
		}
	}
}
