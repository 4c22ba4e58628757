package wgnet

import (
	"bytes"
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// byteReader hands out fuzz bytes, zeros once exhausted.
type byteReader struct {
	b []byte
	i int
}

func (r *byteReader) u8() byte {
	if r.i >= len(r.b) {
		return 0
	}
	r.i++
	return r.b[r.i-1]
}
func (r *byteReader) done() bool { return r.i >= len(r.b) }

// orderKey says which TCP flow p belongs to, as far as the order of
// delivery goes, and whether p is a barrier: a packet whose ports the
// coalescer cannot read (an IPv4 fragment, an IPv6 packet behind extension
// headers), before which every run goes up.
func orderKey(p []byte) (key string, barrier, ok bool) {
	if len(p) < header.IPv4MinimumSize {
		return "", false, false
	}
	switch p[0] >> 4 {
	case 4:
		frag := binary.BigEndian.Uint16(p[6:8])&0x3fff != 0 // MF or an offset
		hl := int(p[0]&0xf) * 4
		if p[9] != 6 || hl < 20 || len(p) < hl+4 || binary.BigEndian.Uint16(p[6:8])&0x1fff != 0 {
			return "", frag, false
		}
		return "4" + string(p[12:20]) + string(p[hl:hl+4]), frag, true
	case 6:
		if len(p) < header.IPv6MinimumSize {
			return "", false, false
		}
		if p[6] != 6 {
			return "", ipv6Extension(p[6]), false
		}
		if len(p) < 44 {
			return "", false, false
		}
		return "6" + string(p[8:40]) + string(p[40:44]), false, true
	}
	return "", false, false
}

// checkDelivery checks that delivered is what came in, each packet once:
// either as it came, never ahead of an earlier packet of its flow (or, for
// a barrier, of any earlier TCP packet), or consecutive packets of one
// flow joined, with the first one's headers (but for lengths, the IPv4
// checksum and PSH) and parts that were allowed to join it.
func checkDelivery(t testing.TB, in, delivered [][]byte) {
	t.Helper()
	var pending []int
	for i, p := range in {
		if len(p) == 0 {
			continue
		}
		if v := p[0] >> 4; v != 4 && v != 6 {
			continue
		}
		pending = append(pending, i)
	}
	remove := func(k int) { pending = append(pending[:k], pending[k+1:]...) }
	for di, d := range delivered {
		// As it came?
		found := -1
		for k, j := range pending {
			if bytes.Equal(in[j], d) {
				found = k
				break
			}
		}
		if found >= 0 {
			j := pending[found]
			key, barrier, ok := orderKey(in[j])
			for _, e := range pending[:found] {
				ek, _, eok := orderKey(in[e])
				if ok && eok && ek == key {
					t.Fatalf("delivered %d (input %d) overtakes input %d of its flow", di, j, e)
				}
				if barrier && eok {
					t.Fatalf("delivered %d (input %d, whose ports cannot be read) overtakes TCP input %d", di, j, e)
				}
			}
			remove(found)
			continue
		}
		// Joined.
		nh, hl, ok := tcpHeaders(d)
		if !ok {
			t.Fatalf("delivered %d is neither an input nor a valid joined segment: % x", di, d[:min(len(d), 64)])
		}
		if len(d) > 0xffff {
			t.Fatalf("joined %d too long", di)
		}
		if nh == 20 && !header.IPv4(d).IsChecksumValid() {
			t.Fatalf("joined %d bad IPv4 checksum", di)
		}
		key, _, _ := orderKey(d)
		k := -1
		for kk, j := range pending {
			if ek, _, eok := orderKey(in[j]); eok && ek == key {
				k = kk
				break
			}
		}
		if k < 0 {
			t.Fatalf("joined %d: no pending input of its flow", di)
		}
		first := in[pending[k]]
		fnh, fhl, fok := tcpHeaders(first)
		if !fok || fnh != nh || fhl != hl {
			t.Fatalf("joined %d: its flow's next input %d is not joinable", di, pending[k])
		}
		if header.TCP(first[nh:]).Flags() != header.TCPFlagAck {
			t.Fatalf("joined %d: first has flags %v", di, header.TCP(first[nh:]).Flags())
		}
		// Header of d equals first except lengths, IPv4 csum, PSH.
		a, b := bytes.Clone(first[:hl]), bytes.Clone(d[:hl])
		for _, x := range [][]byte{a, b} {
			if nh == 20 {
				x[2], x[3], x[10], x[11] = 0, 0, 0, 0
			} else {
				x[4], x[5] = 0, 0
			}
			x[nh+13] &^= byte(header.TCPFlagPsh)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("joined %d: headers differ from first's beyond length/PSH", di)
		}
		rest := d[hl:]
		seq := header.TCP(first[nh:]).SequenceNumber()
		seg := len(first) - hl
		n := 0
		lastPsh := false
		for len(rest) > 0 {
			if k >= len(pending) {
				t.Fatalf("joined %d carries more than pending", di)
			}
			j := pending[k]
			p := in[j]
			if ek, _, eok := orderKey(p); !eok || ek != key {
				k++
				continue
			}
			pnh, phl, pok := tcpHeaders(p)
			if !pok || pnh != nh || phl != hl {
				t.Fatalf("joined %d: part %d (input %d) is not joinable", di, n, j)
			}
			if header.TCP(p[nh:]).SequenceNumber() != seq {
				t.Fatalf("joined %d: part %d seq gap", di, n)
			}
			if lastPsh {
				t.Fatalf("joined %d: part after PSH", di)
			}
			pl := len(p) - hl
			if pl > seg {
				t.Fatalf("joined %d: part %d longer than first", di, n)
			}
			fl := header.TCP(p[nh:]).Flags()
			if fl != header.TCPFlagAck && fl != header.TCPFlagAck|header.TCPFlagPsh {
				t.Fatalf("joined %d: part %d flags %v", di, n, fl)
			}
			lastPsh = fl&header.TCPFlagPsh != 0
			// Same headers as first but seq, flags, csums, length, ID.
			a, b := bytes.Clone(first[:hl]), bytes.Clone(p[:hl])
			for _, x := range [][]byte{a, b} {
				if nh == 20 {
					x[2], x[3], x[4], x[5], x[10], x[11] = 0, 0, 0, 0, 0, 0
					x[6] &^= 0x80
				} else {
					x[4], x[5] = 0, 0
				}
				copy(x[nh+4:nh+8], []byte{0, 0, 0, 0})
				x[nh+13] = 0
				x[nh+16], x[nh+17] = 0, 0
			}
			if !bytes.Equal(a, b) {
				t.Fatalf("joined %d: part %d (input %d) headers differ:\n% x\n% x", di, n, j, a, b)
			}
			if !bytes.HasPrefix(rest, p[hl:]) {
				t.Fatalf("joined %d: part %d payload differs", di, n)
			}
			rest = rest[pl:]
			seq += uint32(pl)
			if pl < seg && len(rest) > 0 {
				t.Fatalf("joined %d: continues after a short part", di)
			}
			remove(k)
			n++
		}
		if n < 2 {
			t.Fatalf("joined %d: changed but not joined", di)
		}
		if gotPsh := header.TCP(d[nh:]).Flags()&header.TCPFlagPsh != 0; gotPsh != lastPsh {
			t.Fatalf("joined %d: PSH %v, last part's %v", di, gotPsh, lastPsh)
		}
		if nh == 20 && int(header.IPv4(d).TotalLength()) != len(d) || nh == 40 && int(header.IPv6(d).PayloadLength()) != len(d)-40 {
			t.Fatalf("joined %d: length field wrong", di)
		}
	}
	if len(pending) != 0 {
		t.Fatalf("%d inputs never delivered: %v", len(pending), pending)
	}
}

// genBatch builds a batch of up to 160 packets from fuzz bytes: segments of
// up to 10 flows (more than the coalescer keeps runs for) in stretches,
// with every flag, gaps, retransmissions, other sizes, options, TTL, TOS,
// DF, flow label, IP options, IPv6 extension headers, fragments,
// truncation, wrong lengths and data offsets, flipped header bytes and
// random bytes.
func genBatch(data []byte) [][]byte {
	r := &byteReader{b: data}
	var seqs [10]uint32
	for i := range seqs {
		seqs[i] = uint32(i) * 0x1000_0000
	}
	var out [][]byte
	cur := 0
	for !r.done() && len(out) < 160 {
		op := r.u8()
		if fb := r.u8(); fb&0x80 != 0 {
			cur = int(fb&0x7f) % 10
		}
		f := cur
		v6 := f%3 == 2
		s := seg{v6: v6, sport: uint16(100 + f), seq: seqs[f], ack: 1, flags: header.TCPFlagAck, payload: 1000, tsval: 5}
		var mut func(p []byte) []byte
		nh := 20
		if v6 {
			nh = 40
		}
		switch op % 40 {
		case 0:
			s.payload = 0
		case 1:
			s.flags |= header.TCPFlagPsh
			s.payload = 1 + int(r.u8())*4
		case 2:
			s.flags = header.TCPFlagSyn
		case 3:
			s.flags |= header.TCPFlagFin
		case 4:
			s.flags |= header.TCPFlagRst
		case 5:
			s.flags |= header.TCPFlagUrg
		case 6:
			s.flags |= header.TCPFlagCwr
		case 7:
			s.flags |= header.TCPFlagEce
		case 8:
			s.seq += 1000
		case 9:
			s.seq -= 1000
		case 10:
			s.payload = 1 + int(r.u8())*8
		case 11:
			s.payload = int(r.u8())*64 + 1
		case 12:
			s.tsval = 6
		case 13:
			s.ttl = 63
		case 14:
			s.ack = 2
		case 15:
			s.tsval = 0
		case 16: // TOS / traffic class (ECN CE)
			mut = func(p []byte) []byte {
				if v6 {
					p[1] |= 0x30
				} else {
					p[1] = 3
					fixIPv4(p)
				}
				return p
			}
		case 17: // DF / flow label
			mut = func(p []byte) []byte {
				if v6 {
					p[3] ^= 1
				} else {
					p[6] |= 0x40
					fixIPv4(p)
				}
				return p
			}
		case 18: // IPv4 options / IPv6 hop-by-hop header
			mut = func(p []byte) []byte {
				if v6 {
					q := make([]byte, len(p)+8)
					copy(q, p[:40])
					q[6] = 0 // hop-by-hop
					q[40] = 6
					q[41] = 0
					q[42], q[43] = 1, 4 // PadN
					copy(q[48:], p[40:])
					binary.BigEndian.PutUint16(q[4:6], uint16(len(q)-40))
					return q
				}
				q := make([]byte, len(p)+4)
				copy(q, p[:20])
				q[0] = 0x46
				q[20] = 1 // NOP options
				q[21], q[22], q[23] = 1, 1, 0
				copy(q[24:], p[20:])
				binary.BigEndian.PutUint16(q[2:4], uint16(len(q)))
				fixIPv4(q)
				return q
			}
		case 19: // fragment
			mut = func(p []byte) []byte {
				if v6 {
					return p
				}
				p[6] |= 0x20
				fixIPv4(p)
				return p
			}
		case 20: // non-first fragment, payload random
			mut = func(p []byte) []byte {
				if v6 {
					return p
				}
				binary.BigEndian.PutUint16(p[6:8], 100)
				fixIPv4(p)
				return p
			}
		case 21: // truncate
			n := int(r.u8())<<2 | int(r.u8())&3
			mut = func(p []byte) []byte { return p[:min(len(p), 1+n%len(p))] }
		case 22: // random bytes
			n := 1 + int(r.u8())
			q := make([]byte, n)
			for i := range q {
				q[i] = r.u8()
			}
			out = append(out, q)
			continue
		case 23: // total length off
			mut = func(p []byte) []byte {
				if v6 {
					binary.BigEndian.PutUint16(p[4:6], binary.BigEndian.Uint16(p[4:6])-1)
				} else {
					binary.BigEndian.PutUint16(p[2:4], binary.BigEndian.Uint16(p[2:4])-1)
					fixIPv4(p)
				}
				return p
			}
		case 24: // data offset weird
			v := r.u8()
			mut = func(p []byte) []byte { p[nh+12] = v; return p }
		case 25: // window
			mut = func(p []byte) []byte { p[nh+15] ^= 1; return p }
		case 26: // urgent ptr
			mut = func(p []byte) []byte { p[nh+19] ^= 1; return p }
		case 27: // reserved/NS bits
			mut = func(p []byte) []byte { p[nh+12] ^= 1; return p }
		case 28: // UDP of same ports
			mut = func(p []byte) []byte {
				if v6 {
					p[6] = 17
				} else {
					p[9] = 17
					fixIPv4(p)
				}
				return p
			}
		case 29: // IPv4 reserved flag
			mut = func(p []byte) []byte {
				if !v6 {
					p[6] |= 0x80
					fixIPv4(p)
				}
				return p
			}
		case 30: // any byte of the header flipped
			at := int(r.u8())
			x := r.u8()
			mut = func(p []byte) []byte { p[at%min(len(p), nh+32)] ^= x | 1; return p }
		case 31:
			s.flags |= header.TCPFlagPsh
		case 32:
			s.payload = 1001
		}
		p := tcpSegment(s)
		if mut != nil {
			p = mut(p)
		}
		seqs[f] = s.seq + uint32(s.payload)
		out = append(out, p)
	}
	return out
}

// fixIPv4 recomputes the IPv4 header checksum of p.
func fixIPv4(p []byte) {
	ip := header.IPv4(p)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
}

// runCoalescer writes copies of in to a link as one batch and returns what
// reached its stack; Write must leave the batch's buffers as they were.
func runCoalescer(t testing.TB, in [][]byte) [][]byte {
	d := &recordingDispatcher{}
	l := newLink(DefaultMTU, 0)
	l.Attach(d)
	bufs := make([][]byte, len(in))
	for i, p := range in {
		bufs[i] = bytes.Clone(p)
	}
	l.Write(bufs, 0)
	for i := range in {
		if !bytes.Equal(bufs[i], in[i]) {
			t.Fatalf("Write changed input %d", i)
		}
	}
	return d.pkts
}

// FuzzCoalescer runs batches built by genBatch through the link and checks
// what the stack got (checkDelivery).
func FuzzCoalescer(f *testing.F) {
	f.Add([]byte{})
	seed := make([]byte, 0, 400)
	for i := range 150 {
		seed = append(seed, 39, byte(0x80|(i/20)))
	}
	f.Add(seed)
	seed = nil
	for i := range 150 {
		seed = append(seed, byte(i*7), byte(i*13))
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		in := genBatch(data)
		out := runCoalescer(t, in)
		checkDelivery(t, in, out)
	})
}

// FuzzCoalescerRaw runs batches of arbitrary bytes (each packet prefixed
// by its length in 8-byte units) through the link: nothing may panic, and
// what goes up is checked as in FuzzCoalescer.
func FuzzCoalescerRaw(f *testing.F) {
	f.Add([]byte{0x45, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var in [][]byte
		for len(data) > 0 && len(in) < 128 {
			n := int(data[0])*8 + 1
			data = data[1:]
			n = min(n, len(data))
			in = append(in, data[:n])
			data = data[n:]
		}
		out := runCoalescer(t, in)
		checkDelivery(t, in, out)
	})
}
