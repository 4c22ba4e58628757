//go:build linux

package wgnet

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// openBind opens a udpBind on a random port and closes it with the test.
func openBind(t *testing.T) (*udpBind, []conn.ReceiveFunc, uint16) {
	t.Helper()
	b := newBind(nil).(*udpBind)
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, fns, port
}

// batch is n packets, packet i of sizes[i%len(sizes)] bytes, each filled
// with its own index so that order and content can be checked.
func batch(n int, sizes ...int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Repeat([]byte{byte(i)}, sizes[i%len(sizes)])
	}
	return out
}

// receiveAll reads from fn until want packets have come, or fails.
func receiveAll(t *testing.T, fn conn.ReceiveFunc, want int) ([][]byte, []conn.Endpoint) {
	t.Helper()
	var got [][]byte
	var eps []conn.Endpoint
	bufs := make([][]byte, conn.IdealBatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16)
	}
	sizes := make([]int, len(bufs))
	peps := make([]conn.Endpoint, len(bufs))
	done := make(chan error, 1)
	go func() {
		for len(got) < want {
			n, err := fn(bufs, sizes, peps)
			if err != nil {
				done <- err
				return
			}
			for i := range n {
				got = append(got, append([]byte(nil), bufs[i][:sizes[i]]...))
				eps = append(eps, peps[i])
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("received %d of %d packets", len(got), want)
	}
	return got, eps
}

// TestBindSendsBatchesInOrder sends batches mixing runs of equal sizes
// (one segmented datagram each), short tails and single packets, over
// IPv4 and IPv6 loopback, and checks that every packet arrives once, in
// order, whole, and from the sender's port.
func TestBindSendsBatchesInOrder(t *testing.T) {
	for _, family := range []struct {
		name string
		addr string
		fn   int
	}{{"ipv4", "127.0.0.1", 0}, {"ipv6", "::1", 1}} {
		t.Run(family.name, func(t *testing.T) {
			a, _, aport := openBind(t)
			_, fns, bport := openBind(t)
			if len(fns) < 2 {
				t.Skip("no IPv6 socket")
			}
			if !a.socks.Load()[family.fn].gso.Load() {
				t.Log("this kernel has no UDP segmentation offload: every packet is sent alone")
			}
			ep, err := a.ParseEndpoint(netip.AddrPortFrom(netip.MustParseAddr(family.addr), bport).String())
			if err != nil {
				t.Fatal(err)
			}
			batches := [][][]byte{
				batch(128, 1452),                  // two full segmented datagrams
				batch(100, 1452, 1452, 1452, 300), // runs of three ended by a short one
				batch(7, 60, 1452, 148, 1452),     // sizes that grow: nothing to segment
				batch(1, 32),
			}
			want := 0
			for _, bufs := range batches {
				if err := a.Send(bufs, ep); err != nil {
					t.Fatal(err)
				}
				want += len(bufs)
			}
			got, eps := receiveAll(t, fns[family.fn], want)
			i := 0
			for bi, bufs := range batches {
				for pi, p := range bufs {
					if !bytes.Equal(got[i], p) {
						t.Fatalf("batch %d packet %d: got %d bytes starting %v, want %d bytes of %d", bi, pi, len(got[i]), got[i][:min(4, len(got[i]))], len(p), p[0])
					}
					if from := eps[i].DstToString(); from != netip.AddrPortFrom(netip.MustParseAddr(family.addr), aport).String() {
						t.Fatalf("packet %d came from %s, want the sender's port %d", i, from, aport)
					}
					i++
				}
			}
		})
	}
}

// TestBindRepliesFromTheAddressAsked: a packet to 127.0.0.3 is answered
// from 127.0.0.3 (the sticky source), not from the address routing would
// pick; once wireguard-go clears the source, routing picks.
func TestBindRepliesFromTheAddressAsked(t *testing.T) {
	b, fns, port := openBind(t)
	c := loopbackUDP(t)
	ask := func(to string) string {
		t.Helper()
		if _, err := c.WriteToUDPAddrPort([]byte("ping"), netip.MustParseAddrPort(fmt.Sprintf("%s:%d", to, port))); err != nil {
			t.Fatal(err)
		}
		_, eps := receiveAll(t, fns[0], 1)
		if got := eps[0].SrcIP().String(); got != to {
			t.Fatalf("sticky source %s, want %s", got, to)
		}
		return answer(t, b, c, eps[0])
	}
	if from := ask("127.0.0.3"); from != "127.0.0.3" {
		t.Fatalf("reply came from %s, want 127.0.0.3", from)
	}
	// The same source gives the same endpoint; after ClearSrc, a fresh
	// one that remembers the source again.
	c.WriteToUDPAddrPort([]byte("ping"), netip.MustParseAddrPort(fmt.Sprintf("127.0.0.3:%d", port)))
	_, eps1 := receiveAll(t, fns[0], 1)
	c.WriteToUDPAddrPort([]byte("ping"), netip.MustParseAddrPort(fmt.Sprintf("127.0.0.3:%d", port)))
	_, eps2 := receiveAll(t, fns[0], 1)
	if eps1[0] != eps2[0] {
		t.Fatal("two datagrams from one source gave two endpoints")
	}
	eps1[0].ClearSrc()
	if from := answer(t, b, c, eps1[0]); from != "127.0.0.1" {
		t.Fatalf("with the source cleared the reply came from %s, want 127.0.0.1", from)
	}
	if from := ask("127.0.0.3"); from != "127.0.0.3" {
		t.Fatalf("after ClearSrc, reply came from %s, want 127.0.0.3", from)
	}
}

// loopbackUDP is a plain UDP socket on 127.0.0.1, closed with the test.
func loopbackUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// answer sends a reply through b to ep and returns the address c saw it
// come from.
func answer(t *testing.T, b *udpBind, c *net.UDPConn, ep conn.Endpoint) string {
	t.Helper()
	// Three packets of one size: one segmented datagram, its source
	// and segment size in one control message buffer.
	pong := [][]byte{[]byte("pong"), []byte("pong"), []byte("pong")}
	if err := b.Send(pong, ep); err != nil {
		t.Fatal(err)
	}
	var first netip.AddrPort
	for i := range pong {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != "pong" {
			t.Fatalf("reply %d: %q, %v", i, buf[:n], err)
		}
		if i > 0 && from != first {
			t.Fatalf("reply %d came from %s, the first from %s", i, from, first)
		}
		first = from
	}
	return first.Addr().String()
}

// TestBindDropsASourceThatIsNoLongerLocal: a sticky source the host no
// longer has (its address was removed) would make every send fail; the
// bind lets routing choose instead.
func TestBindDropsASourceThatIsNoLongerLocal(t *testing.T) {
	b, _, _ := openBind(t)
	c := loopbackUDP(t)
	ep, _ := b.ParseEndpoint(c.LocalAddr().String())
	e := ep.(*bindEndpoint)
	e.src.Store(newStickySource(netip.MustParseAddr("192.0.2.7"), 0, false))
	if from := answer(t, b, c, ep); from != "127.0.0.1" {
		t.Fatalf("reply came from %s", from)
	}
	if e.SrcIP().IsValid() {
		t.Fatalf("the source %s was kept", e.SrcIP())
	}
	if e.src.Load() != droppedSource {
		t.Fatal("the dropped source reads as cleared: the next datagram would bring it back")
	}
	if from := answer(t, b, c, ep); from != "127.0.0.1" {
		t.Fatalf("second reply came from %s", from)
	}
}

// TestBindPlaceSplitsCoalescedDatagrams feeds place what a read returns
// when the kernel coalesces (UDP_GRO): datagrams of several packets each.
// It must hand out the packets in order, and keep the ones that do not fit
// the batch for the next call, which must not read the socket first.
func TestBindPlaceSplitsCoalescedDatagrams(t *testing.T) {
	s := &bindSocket{}
	r := &s.rx
	r.init(s)
	const batchSize = 8
	bufs := make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16)
	}
	// Datagrams as read: 1 packet; 3 coalesced of 100 bytes with a
	// 40-byte tail; 1 packet; 5 coalesced (only 3 of them fit); 2.
	type dgram struct{ seg, n int }
	dgrams := []dgram{{0, 50}, {100, 240}, {0, 70}, {20, 100}, {10, 20}}
	want := [][]byte{}
	next := byte(0)
	for i, d := range dgrams {
		seg := d.seg
		if seg == 0 {
			seg = d.n
		}
		for off := 0; off < d.n; off += seg {
			p := bytes.Repeat([]byte{next}, min(seg, d.n-off))
			copy(bufs[i][off:], p)
			want = append(want, p)
			next++
		}
		r.hdrs[i].Len = uint32(d.n)
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&r.names[i]))
		*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: 0x3930, Addr: [4]byte{127, 0, 0, 1}}
		oob := r.oob[i*oobSize : (i+1)*oobSize]
		clear(oob)
		n := 0
		if d.seg > 0 {
			h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
			h.SetLen(unix.CmsgLen(4))
			*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = int32(d.seg)
			n = unix.CmsgSpace(4)
		}
		r.hdrs[i].Hdr.SetControllen(n)
	}
	r.got = len(dgrams)
	sizes := make([]int, batchSize)
	eps := make([]conn.Endpoint, batchSize)
	var got [][]byte
	n := r.place(bufs, sizes, eps)
	for i := range n {
		got = append(got, append([]byte(nil), bufs[i][:sizes[i]]...))
		if eps[i].DstToString() != "127.0.0.1:12345" {
			t.Fatalf("packet %d from %s", i, eps[i].DstToString())
		}
	}
	if n != 5 {
		t.Fatalf("first batch: %d packets, want the 5 of the first three datagrams", n)
	}
	if len(r.carry) == 0 {
		t.Fatal("nothing carried")
	}
	if r.perMsg != 5 {
		t.Fatalf("perMsg %d, want 5: the next read must ask for fewer datagrams", r.perMsg)
	}
	// The rest comes from the carry, without a socket (s.rc is nil: a
	// read would panic).
	for len(got) < len(want) {
		n, err := s.receive(bufs, sizes, eps)
		if err != nil || n == 0 {
			t.Fatalf("carry: %d, %v", n, err)
		}
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][:sizes[i]]...))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d packets, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("packet %d: got %d bytes of %v, want %d bytes of %d", i, len(got[i]), got[i][:1], len(want[i]), want[i][0])
		}
	}
}

// TestBindAsksForMoreDatagramsGradually: once the kernel has been seen
// coalescing, a read of plain datagrams (a keepalive between bursts) only
// halves how many packets a datagram is expected to hold, so the next
// burst is not mostly copied aside.
func TestBindAsksForMoreDatagramsGradually(t *testing.T) {
	s := &bindSocket{gro: true}
	r := &s.rx
	r.init(s)
	r.perMsg = 64
	bufs := make([][]byte, conn.IdealBatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	for i := range 2 {
		r.hdrs[i].Len = 32
		*(*unix.RawSockaddrInet4)(unsafe.Pointer(&r.names[i])) = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
		r.hdrs[i].Hdr.SetControllen(0)
	}
	r.got = 2
	if n := r.place(bufs, make([]int, len(bufs)), make([]conn.Endpoint, len(bufs))); n != 2 {
		t.Fatalf("%d packets, want 2", n)
	}
	if r.perMsg != 32 {
		t.Fatalf("perMsg %d after a plain read, want 32 (halved)", r.perMsg)
	}
}

// TestBindBuildsSegmentedDatagrams checks how a batch is laid out as
// messages: a run of one size and a shorter tail per datagram, within the
// kernel's limits of segments and bytes; one message per packet without
// segmentation offload.
func TestBindBuildsSegmentedDatagrams(t *testing.T) {
	tx := newTxState()
	e4 := newBindEndpoint(netip.MustParseAddrPort("127.0.0.1:1"))
	for _, c := range []struct {
		name string
		bufs [][]byte
		gso  bool
		want []int // packets per message
		segs []int // segment size per message, 0 if not segmented
	}{
		{"full runs", batch(128, 1452), true, []int{45, 45, 38}, []int{1452, 1452, 1452}},
		{"small packets", batch(128, 100), true, []int{64, 64}, []int{100, 100}},
		{"short tails", batch(8, 1000, 1000, 300), true, []int{3, 3, 2}, []int{1000, 1000, 1000}},
		{"growing sizes", batch(3, 60, 1452, 1452), true, []int{1, 2}, []int{0, 1452}},
		{"no offload", batch(3, 1000), false, []int{1, 1, 1}, []int{0, 0, 0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tx.build(c.bufs, e4, nil, c.gso)
			if tx.n != len(c.want) {
				t.Fatalf("%d messages, want %d", tx.n, len(c.want))
			}
			for m := range tx.n {
				h := &tx.hdrs[m].Hdr
				seg := 0
				if h.Controllen > 0 {
					oob := unsafe.Slice(h.Control, h.Controllen)
					seg = int(*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])))
				}
				if int(h.Iovlen) != c.want[m] || seg != c.segs[m] {
					t.Fatalf("message %d: %d packets of segment %d, want %d of %d", m, h.Iovlen, seg, c.want[m], c.segs[m])
				}
			}
		})
	}
}

// TestBindSegmentedDatagramsArriveWhole sends a batch of 64 WireGuard
// packets of 1,424 bytes (a full batch of a bulk transfer at MTU 1420)
// over loopback to a socket that takes coalesced datagrams (UDP_GRO), and
// counts the datagrams it reads: each segmented datagram the bind builds
// must stay one, not be cut up by the kernel before the device, which
// happens when one reaches 64 KiB with its headers.
func TestBindSegmentedDatagramsArriveWhole(t *testing.T) {
	a, _, _ := openBind(t)
	if !a.socks.Load()[0].gso.Load() {
		t.Skip("this kernel has no UDP segmentation offload")
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1); err != nil {
		t.Skipf("this kernel has no UDP receive offload: %v", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := a.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port))
	if err != nil {
		t.Fatal(err)
	}
	const packets, size = 64, 1424
	if err := a.Send(batch(packets, size), ep); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	datagrams, bytes := 0, 0
	for bytes < packets*size {
		n, _, _, _, err := unix.Recvmsg(fd, buf, make([]byte, 64), 0)
		if err != nil {
			t.Fatalf("after %d datagrams of %d bytes: %v", datagrams, bytes, err)
		}
		datagrams++
		bytes += n
	}
	if want := (packets*size + maxGSOBytes - 1) / maxGSOBytes; datagrams > want+1 {
		t.Fatalf("%d packets came as %d datagrams, want about %d: the kernel cut the segmented ones up", packets, datagrams, want)
	}
}

// TestBindSendsAlongARouteBelowTheSegmentSize: where the route's MTU is
// smaller than a segment, the kernel refuses segmented datagrams; the
// batch still arrives whole (the kernel fragments each datagram), and
// the peer's packets are no longer segmented. Runs in a network namespace
// of its own, whose loopback MTU it lowers.
func TestBindSendsAlongARouteBelowTheSegmentSize(t *testing.T) {
	if !inNetns(t) {
		return
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetMTU(lo, 1400)
	}
	if err != nil {
		t.Fatal(err)
	}
	a, _, _ := openBind(t)
	if !a.socks.Load()[0].gso.Load() {
		t.Skip("this kernel has no UDP segmentation offload")
	}
	_, fns, port := openBind(t)
	ep, _ := a.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", port))
	bufs := batch(20, 1452)
	for range 2 {
		if err := a.Send(bufs, ep); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := receiveAll(t, fns[0], 2*len(bufs))
	for i, p := range got {
		if !bytes.Equal(p, bufs[i%len(bufs)]) {
			t.Fatalf("packet %d: %d bytes, want %d", i, len(p), len(bufs[i%len(bufs)]))
		}
	}
	if !ep.(*bindEndpoint).noGSO.Load() {
		t.Fatal("the endpoint still gets segmented datagrams")
	}
}

// TestBindSaysWhenItsBuffersAreLimited: without CAP_NET_ADMIN the system
// grants socket buffers only up to net.core.rmem_max and wmem_max, and the
// bind says so once, with what it got; with the capability it gets what it
// asked for and says nothing.
func TestBindSaysWhenItsBuffersAreLimited(t *testing.T) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil || caps[0].Effective&(1<<unix.CAP_NET_ADMIN) == 0 {
		t.Skip("needs CAP_NET_ADMIN: one bind opened with it, one without")
	}
	limit := min(sysctlInt(t, "/proc/sys/net/core/rmem_max"), sysctlInt(t, "/proc/sys/net/core/wmem_max"))
	if limit >= socketBuffer {
		t.Skipf("this host allows %d-byte socket buffers to anyone", limit)
	}
	open := func(withoutNetAdmin bool) string {
		var logs logBuffer
		b := newBind(slog.New(logs.handler())).(*udpBind)
		errc := make(chan error, 1)
		go func() {
			if withoutNetAdmin {
				// Capabilities belong to a thread. This one is never
				// unlocked, so it ends with the goroutine.
				runtime.LockOSThread()
				hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
				var caps [2]unix.CapUserData
				if err := unix.Capget(&hdr, &caps[0]); err != nil {
					errc <- err
					return
				}
				caps[0].Effective &^= 1 << unix.CAP_NET_ADMIN
				if err := unix.Capset(&hdr, &caps[0]); err != nil {
					errc <- err
					return
				}
			}
			_, _, err := b.Open(0)
			errc <- err
		}()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		b.Close()
		return logs.String()
	}
	if got := open(false); strings.Contains(got, "smaller than asked") {
		t.Fatalf("with CAP_NET_ADMIN the bind still reports limited buffers:\n%s", got)
	}
	got := open(true)
	if !strings.Contains(got, "smaller than asked") || !strings.Contains(got, fmt.Sprintf("receive_kib=%d", min(sysctlInt(t, "/proc/sys/net/core/rmem_max"), socketBuffer)>>10)) {
		t.Fatalf("without CAP_NET_ADMIN, got logs:\n%s\nwant the limited buffers reported with the size granted", got)
	}
}

// sysctlInt reads a number from a /proc/sys file.
func sysctlInt(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

// TestBindCloseEndsReceive: wireguard-go stops its readers on
// net.ErrClosed.
func TestBindCloseEndsReceive(t *testing.T) {
	b := newBind(nil).(*udpBind)
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, len(fns))
	for _, fn := range fns {
		go func() {
			bufs := [][]byte{make([]byte, 1500)}
			_, err := fn(bufs, make([]int, 1), make([]conn.Endpoint, 1))
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	b.Close()
	for range fns {
		select {
		case err := <-errs:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("receive after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("receive still blocked after Close")
		}
	}
	// A closed bind opens again, as wireguard-go does on every bind
	// update.
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	b.Close()
}
