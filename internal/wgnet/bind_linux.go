//go:build linux

package wgnet

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// udpBind is how WireGuard's packets reach the network on Linux: one UDP
// socket per address family on the same port, read and written in batches
// of up to conn.IdealBatchSize packets per system call. It does what
// wireguard-go's standard bind does (sticky source addresses, UDP
// segmentation and receive offload) with less work per call, which is
// most of what the stock bind costs when packets arrive a few at a time:
//
//   - a read asks for as many datagrams as the batch can hold, not for two
//     coalesced ones: whenever what is waiting was not coalesced (packets
//     sent one by one, NICs without receive offload) the stock bind reads
//     two packets per call;
//   - nothing is reset or allocated per call or per packet: the system
//     call's headers are built once, and endpoints are cached by source;
//   - a write hands each run of equal-sized packets to the kernel as one
//     segmented datagram over the packets' own buffers (an iovec each),
//     instead of copying them into one buffer first.
type udpBind struct {
	log *slog.Logger
	mu  sync.Mutex // serialises Open, Close and SetMark
	// socks are the IPv4 and IPv6 sockets, nil when closed or
	// unsupported; Send reads them without taking mu.
	socks atomic.Pointer[[2]*bindSocket]
	told  bool // the limited socket buffers were logged
	// outFlight counts the data packets Send passes on, and inFlight those the
	// sockets receive (flight.go); nil counts nothing. Set before the
	// bind is used.
	outFlight, inFlight *flight
	indices             localIndices // the receiver indices in counts
}

// counted makes recv wait while too many received packets are still inside
// wireguard-go, and count what it receives.
func (b *udpBind) counted(recv conn.ReceiveFunc) conn.ReceiveFunc {
	if b.inFlight == nil {
		return recv
	}
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		b.inFlight.wait()
		n, err := recv(bufs, sizes, eps)
		b.inFlight.add(b.indices.ours(bufs, sizes, n))
		return n, err
	}
}

var _ conn.Bind = (*udpBind)(nil)

func newBind(log *slog.Logger) conn.Bind { return &udpBind{log: log} }

// Sizes of the kernel's limits on one segmented send.
const (
	// maxSegments is the most datagrams one UDP_SEGMENT send may carry on
	// every kernel with the option (64 before Linux 6.11).
	maxSegments = 64
	// maxGSOBytes is the most UDP payload one segmented datagram carries.
	// A segmented packet that reaches the device's GSO size (64 KiB on
	// loopback and on most NICs) with its headers, the link's included,
	// is cut up in software before the device, and the receiver then
	// gets every packet alone, each with its own wake-up: 46 WireGuard
	// packets of 1,424 bytes are under the 65,507 bytes UDP allows, but
	// not with their headers under 64 KiB. Room is left for UDP, IPv6
	// and a link header.
	maxGSOBytes = 65536 - 8 - 40 - 64
)

// socketBuffer is the send and receive buffer asked of each socket, as
// wireguard-go's bind asks: room for a burst of a fast stream.
const socketBuffer = 7 << 20

// oobSize is room for the control messages of one datagram: its
// destination address (PKTINFO) and its segment size.
var oobSize = unix.CmsgSpace(unix.SizeofInet6Pktinfo) + unix.CmsgSpace(2) + 16

// maxCachedEndpoints bounds the endpoints a socket remembers by source:
// anyone may send from any address before a handshake proves who they
// are, so the cache is dropped whole when it grows past this.
const maxCachedEndpoints = 4096

func (b *udpBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.socks.Load() != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	// Both families on the same port; a random port taken on the other
	// family is retried.
	for tries := 0; ; tries++ {
		s4, p, err := openSocket(false, int(port))
		if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
			return nil, 0, err
		}
		s6, p6, err := openSocket(true, p)
		if port == 0 && errors.Is(err, syscall.EADDRINUSE) && tries < 100 {
			s4.close()
			continue
		}
		if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
			s4.close()
			return nil, 0, err
		}
		if s4 == nil && s6 == nil {
			return nil, 0, syscall.EAFNOSUPPORT
		}
		if s4 == nil {
			p = p6
		}
		socks := [2]*bindSocket{s4, s6}
		b.socks.Store(&socks)
		b.tellLimitedBuffers(socks)
		var fns []conn.ReceiveFunc
		for _, s := range socks {
			if s != nil {
				fns = append(fns, b.counted(s.receive))
			}
		}
		return fns, uint16(p), nil
	}
}

func (b *udpBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	socks := b.socks.Swap(nil)
	if socks == nil {
		return nil
	}
	return errors.Join(socks[0].close(), socks[1].close())
}

func (b *udpBind) SetMark(mark uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	socks := b.socks.Load()
	if socks == nil {
		return nil
	}
	for _, s := range socks {
		if s == nil {
			continue
		}
		var serr error
		if err := s.rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
	}
	return nil
}

func (b *udpBind) BatchSize() int { return conn.IdealBatchSize }

func (b *udpBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return newBindEndpoint(ap), nil
}

func (b *udpBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*bindEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	socks := b.socks.Load()
	if socks == nil {
		socks = new([2]*bindSocket) // closed: no socket of either family
	}
	s := socks[0]
	if e.v6 {
		s = socks[1]
	}
	// Counted as out whether or not the send succeeds: either way
	// wireguard-go is done with them.
	data := transportPackets(bufs)
	b.outFlight.done(data)
	if b.inFlight != nil && data < len(bufs) {
		// Something other than data: perhaps a handshake.
		b.indices.note(bufs)
	}
	if s == nil {
		return syscall.EAFNOSUPPORT
	}
	return s.send(bufs, e)
}

// bindSocket is one family's socket.
type bindSocket struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	v6   bool
	// gso: the kernel segments a datagram sent with UDP_SEGMENT. Cleared
	// for good if a send with it fails with EIO (a device without
	// checksum offload).
	gso atomic.Bool
	// gro: the socket asked for coalesced datagrams (UDP_GRO).
	gro bool

	rx  rxState   // only the socket's one receiving goroutine uses it
	txs sync.Pool // *txState
}

// openSocket listens on port of one family with the options the bind
// relies on, and returns it and the port it got.
func openSocket(v6 bool, port int) (*bindSocket, int, error) {
	network := "udp4"
	if v6 {
		network = "udp6"
	}
	s := &bindSocket{v6: v6}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			f := int(fd)
			// Raise the buffers past the system's limit where we may
			// (root), else as far as it allows.
			for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
				if unix.SetsockoptInt(f, unix.SOL_SOCKET, o[0], socketBuffer) != nil {
					_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, o[1], socketBuffer)
				}
			}
			if v6 {
				if serr = unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); serr != nil {
					return
				}
				if serr = unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); serr != nil {
					return
				}
			} else if serr = unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); serr != nil {
				return
			}
			if _, err := unix.GetsockoptInt(f, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err == nil {
				s.gso.Store(true)
			}
			s.gro = unix.SetsockoptInt(f, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), network, ":"+strconv.Itoa(port))
	if err != nil {
		return nil, 0, err
	}
	s.conn = pc.(*net.UDPConn)
	if s.rc, err = s.conn.SyscallConn(); err != nil {
		s.conn.Close()
		return nil, 0, err
	}
	s.rx.init(s)
	s.txs.New = func() any { return newTxState() }
	return s, s.conn.LocalAddr().(*net.UDPAddr).Port, nil
}

// buffers returns the receive and send buffers the system granted s.
func (s *bindSocket) buffers() (rcv, snd int) {
	s.rc.Control(func(fd uintptr) {
		// The kernel reports twice what it grants (its bookkeeping).
		rcv, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	return rcv / 2, snd / 2
}

// tellLimitedBuffers logs, once, that the system granted smaller socket
// buffers than asked: a fast stream's bursts may then overflow them, which
// looks like a slow network.
func (b *udpBind) tellLimitedBuffers(socks [2]*bindSocket) {
	if b.told || b.log == nil {
		return
	}
	for _, s := range socks {
		if s == nil {
			continue
		}
		if rcv, snd := s.buffers(); rcv < socketBuffer || snd < socketBuffer {
			b.told = true
			b.log.Info("wireguard UDP socket buffers are smaller than asked; raise net.core.rmem_max and net.core.wmem_max, or grant CAP_NET_ADMIN, for full throughput",
				"receive_kib", rcv>>10, "send_kib", snd>>10, "asked_kib", socketBuffer>>10)
			return
		}
	}
}

// close closes s; a nil s is already closed.
func (s *bindSocket) close() error {
	if s == nil {
		return nil
	}
	return s.conn.Close()
}

// --- endpoints ---

// bindEndpoint is a peer's address, and the local address and interface
// its packets last arrived on (the sticky source replies leave from, so
// that a gateway with several addresses answers from the one it was asked
// on). The destination is fixed; the source may be cleared at any time by
// wireguard-go, so it is an atomic pointer.
type bindEndpoint struct {
	dst  netip.AddrPort
	v6   bool
	name unix.RawSockaddrInet6 // dst as the kernel takes it (sockaddr_in in the first bytes for IPv4)
	nlen uint32
	src  atomic.Pointer[stickySource]
	// noGSO: the route to dst refused segmented datagrams (its MTU is
	// below a segment), so packets to it go one by one.
	noGSO atomic.Bool
}

// stickySource is the local end a packet arrived on, and the PKTINFO
// control message that sends from it.
type stickySource struct {
	addr netip.Addr
	cmsg []byte
}

var _ conn.Endpoint = (*bindEndpoint)(nil)

func newBindEndpoint(ap netip.AddrPort) *bindEndpoint {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	e := &bindEndpoint{dst: ap, v6: ap.Addr().Is6()}
	port := uint16(ap.Port()>>8 | ap.Port()<<8) // network byte order
	if e.v6 {
		e.name = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: port, Addr: ap.Addr().As16(), Scope_id: zoneIndex(ap.Addr().Zone())}
		e.nlen = unix.SizeofSockaddrInet6
	} else {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&e.name))
		*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: port, Addr: ap.Addr().As4()}
		e.nlen = unix.SizeofSockaddrInet4
	}
	return e
}

// zoneIndex is the interface index an IPv6 zone names ("eth0" or "2"),
// zero if none or unknown.
func zoneIndex(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n)
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}

func (e *bindEndpoint) ClearSrc()           { e.src.Store(nil) }
func (e *bindEndpoint) DstIP() netip.Addr   { return e.dst.Addr() }
func (e *bindEndpoint) DstToString() string { return e.dst.String() }
func (e *bindEndpoint) DstToBytes() []byte {
	b, _ := e.dst.MarshalBinary()
	return b
}

func (e *bindEndpoint) SrcIP() netip.Addr {
	if s := e.src.Load(); s != nil {
		return s.addr
	}
	return netip.Addr{}
}

func (e *bindEndpoint) SrcToString() string {
	if a := e.SrcIP(); a.IsValid() {
		return a.String()
	}
	return ""
}

// droppedSource stands for a sticky source the bind dropped because the
// host no longer sends from it: replies go where routing says, and unlike
// a cleared source (nil), the endpoint cache does not take the next
// datagram to that address as a reason to try it again.
var droppedSource = &stickySource{}

// newStickySource builds the source and its PKTINFO message.
func newStickySource(addr netip.Addr, ifindex int32, v6 bool) *stickySource {
	s := &stickySource{addr: addr}
	if v6 {
		s.cmsg = make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&s.cmsg[0]))
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
		info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&s.cmsg[unix.CmsgLen(0)]))
		info.Addr, info.Ifindex = addr.As16(), uint32(ifindex)
	} else {
		s.cmsg = make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&s.cmsg[0]))
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&s.cmsg[unix.CmsgLen(0)]))
		// Spec_dst chooses the source address; the interface is left to
		// routing, as a reply may leave by another one.
		info.Spec_dst = addr.As4()
	}
	return s
}

// epKey is what makes two received datagrams' endpoints the same.
type epKey struct {
	from    netip.AddrPort
	scope   uint32 // IPv6 scope (interface) of from
	to      netip.Addr
	ifindex int32
}

// --- receiving ---

// rxState is a socket's receive buffers: the headers of one recvmmsg
// call, built once, and datagrams the kernel coalesced beyond what the
// last batch could hold.
type rxState struct {
	s     *bindSocket
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte
	want  int // datagrams asked for by the pending call
	got   int
	errno syscall.Errno
	read  func(fd uintptr) bool // rx.recv, bound once

	// perMsg is how many packets a datagram held at most in the last
	// read: 1 while the kernel does not coalesce. A read asks for no more
	// datagrams than the batch can hold once split.
	perMsg int
	carry  []carried
	eps    map[epKey]*bindEndpoint

	split []msgInfo // scratch, one per datagram read
}

// carried is a coalesced datagram, or what is left of it, waiting for the
// next batch.
type carried struct {
	data []byte
	seg  int
	ep   *bindEndpoint
}

// msgInfo is one datagram of a read: its size, segment size (0 if not
// coalesced) and endpoint.
type msgInfo struct {
	n, seg int
	ep     *bindEndpoint
}

func (r *rxState) init(s *bindSocket) {
	n := conn.IdealBatchSize
	r.s = s
	r.hdrs = make([]unix.Mmsghdr, n)
	r.iovs = make([]unix.Iovec, n)
	r.names = make([]unix.RawSockaddrInet6, n)
	r.oob = make([]byte, n*oobSize)
	r.split = make([]msgInfo, n)
	r.perMsg = 1
	r.eps = make(map[epKey]*bindEndpoint)
	r.read = r.recv
}

// recv and sendmmsg use RawSyscall6: neither call ever blocks
// (MSG_DONTWAIT), so the runtime need not treat it as a system call that
// might. With Syscall6 a send of a batch, which on a fast path keeps the
// kernel busy for a hundred microseconds or more, had the runtime's
// monitor take the goroutine's processor away and wake another thread to
// run it: context switches on every batch, on both ends.
func (r *rxState) recv(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.want), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.got, r.errno = int(n), e
		return true
	}
}

// receive is the socket's conn.ReceiveFunc.
func (s *bindSocket) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	r := &s.rx
	if len(r.carry) > 0 {
		return r.fromCarry(bufs, sizes, eps), nil
	}
	r.want = max(1, min(len(bufs), len(r.hdrs))/r.perMsg)
	for i := range r.want {
		r.iovs[i].Base = unsafe.SliceData(bufs[i])
		r.iovs[i].SetLen(len(bufs[i]))
		h := &r.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Control = &r.oob[i*oobSize]
		h.SetControllen(oobSize)
		h.Flags = 0
	}
	r.got, r.errno = 0, 0
	if err := s.rc.Read(r.read); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, &net.OpError{Op: "read", Net: "udp", Source: s.conn.LocalAddr(), Err: r.errno}
	}
	return r.place(bufs, sizes, eps), nil
}

// place turns the datagrams of the last read, in bufs[:r.got], into
// packets in bufs from the first on, splitting coalesced ones. Packets
// that do not fit wait in r.carry for the next call.
func (r *rxState) place(bufs [][]byte, sizes []int, eps []conn.Endpoint) int {
	msgs := r.split[:r.got]
	total, most := 0, 1
	fit := len(msgs) // datagrams whose packets all fit
	for i := range msgs {
		m := &msgs[i]
		h := &r.hdrs[i]
		m.n, m.seg = int(h.Len), 0
		m.ep = r.endpoint(&r.names[i], r.oob[i*oobSize:i*oobSize+int(h.Hdr.Controllen)], &m.seg)
		c := m.count()
		most = max(most, c)
		if i < fit && total+c > len(bufs) {
			fit = i
		}
		if i < fit {
			total += c
		}
	}
	if most >= r.perMsg || !r.s.gro {
		r.perMsg = most
	} else {
		// A read of a few datagrams the kernel did not coalesce (a
		// keepalive between bursts) does not mean the next read will
		// not be: ask for more only gradually, or a burst of coalesced
		// datagrams would mostly be copied aside.
		r.perMsg = max(most, r.perMsg/2)
	}
	// Datagrams that do not fit are copied aside before their buffers are
	// written over.
	for i := fit; i < len(msgs); i++ {
		m := msgs[i]
		r.carry = append(r.carry, carried{data: append([]byte(nil), bufs[i][:m.n]...), seg: m.seg, ep: m.ep})
	}
	// Split from the last datagram back: datagram i's packets go to
	// bufs[at:at+count] with at >= i, buffers of datagrams already moved.
	at := total
	for i := fit - 1; i >= 0; i-- {
		m := msgs[i]
		c := m.count()
		at -= c
		for k := c - 1; k >= 0; k-- {
			lo := k * m.seg
			hi := m.n
			if c > 1 {
				hi = min(lo+m.seg, m.n)
			}
			if at+k != i || lo != 0 {
				copy(bufs[at+k], bufs[i][lo:hi])
			}
			sizes[at+k] = hi - lo
			eps[at+k] = m.ep
		}
	}
	if total == 0 && len(r.carry) > 0 {
		return r.fromCarry(bufs, sizes, eps)
	}
	return total
}

// count is how many packets m holds.
func (m msgInfo) count() int {
	if m.seg <= 0 || m.n <= m.seg {
		return 1
	}
	return (m.n + m.seg - 1) / m.seg
}

// fromCarry fills bufs with carried packets.
func (r *rxState) fromCarry(bufs [][]byte, sizes []int, eps []conn.Endpoint) int {
	n := 0
	for n < len(bufs) && len(r.carry) > 0 {
		c := &r.carry[0]
		k := len(c.data)
		if c.seg > 0 {
			k = min(k, c.seg)
		}
		sizes[n] = copy(bufs[n], c.data[:k])
		eps[n] = c.ep
		n++
		c.data = c.data[k:]
		if len(c.data) == 0 {
			r.carry[0] = carried{}
			r.carry = r.carry[1:]
		}
	}
	if len(r.carry) == 0 {
		r.carry = nil
	}
	return n
}

// endpoint returns the endpoint of a datagram from name, to the local
// address its control messages oob name, and sets seg to its segment size
// if the kernel coalesced it.
func (r *rxState) endpoint(name *unix.RawSockaddrInet6, oob []byte, seg *int) *bindEndpoint {
	var k epKey
	if name.Family == unix.AF_INET6 {
		k.from = netip.AddrPortFrom(netip.AddrFrom16(name.Addr).Unmap(), name.Port>>8|name.Port<<8)
		k.scope = name.Scope_id
	} else {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(name))
		k.from = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), sa.Port>>8|sa.Port<<8)
	}
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// Spec_dst is the local address the kernel would answer
			// from; Addr, the header's, may be a broadcast address.
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			k.to, k.ifindex = netip.AddrFrom4(info.Spec_dst), info.Ifindex
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			k.to, k.ifindex = netip.AddrFrom16(info.Addr), int32(info.Ifindex)
		case h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 4:
			// The kernel writes the segment size as a C int.
			*seg = int(*(*int32)(unsafe.Pointer(&data[0])))
		}
		oob = oob[min(len(oob), unix.CmsgSpace(l-unix.SizeofCmsghdr)):]
	}
	if e := r.eps[k]; e != nil {
		// wireguard-go may have cleared the source since: then this
		// datagram's source is news again.
		if s := e.src.Load(); (s == nil) == !k.to.IsValid() {
			return e
		}
	}
	if len(r.eps) >= maxCachedEndpoints {
		clear(r.eps)
	}
	e := newBindEndpoint(k.from)
	// A link-local peer is reached through the interface it came from,
	// with or without a sticky source.
	e.name.Scope_id = k.scope
	if k.to.IsValid() {
		e.src.Store(newStickySource(k.to, k.ifindex, r.s.v6))
	}
	r.eps[k] = e
	return e
}

// --- sending ---

// txState is the headers of one sendmmsg call; Send takes one from the
// socket's pool, as several peers send at once.
type txState struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	oob   []byte
	n     int // messages to send
	sent  int
	errno syscall.Errno
	write func(fd uintptr) bool // tx.sendmmsg, bound once
}

func newTxState() *txState {
	n := conn.IdealBatchSize
	t := &txState{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), oob: make([]byte, n*oobSize)}
	t.write = t.sendmmsg
	return t
}

func (t *txState) sendmmsg(fd uintptr) bool {
	for t.sent < t.n {
		n, _, e := syscall.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&t.hdrs[t.sent])), uintptr(t.n-t.sent), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			t.sent += int(n)
		case syscall.EAGAIN:
			return false
		case syscall.EINTR:
		default:
			t.errno = e
			return true
		}
	}
	return true
}

// send writes bufs, in order, to e.
func (s *bindSocket) send(bufs [][]byte, e *bindEndpoint) error {
	t := s.txs.Get().(*txState)
	defer s.txs.Put(t)
	if len(bufs) > len(t.iovs) {
		// wireguard-go never hands more than the batch size; if it ever
		// does, send in batches.
		for len(bufs) > 0 {
			k := min(len(bufs), len(t.iovs))
			if err := s.send(bufs[:k], e); err != nil {
				return err
			}
			bufs = bufs[k:]
		}
		return nil
	}
	gso := s.gso.Load() && !e.noGSO.Load()
	refused, cleared := false, false
	for attempt := 0; ; attempt++ {
		src := e.src.Load()
		t.build(bufs, e, src, gso)
		t.sent, t.errno = 0, 0
		if err := s.rc.Write(t.write); err != nil {
			return err
		}
		if t.errno == 0 {
			if refused && !cleared {
				// Segmenting is what the route refused: not again to
				// this peer.
				e.noGSO.Store(true)
			}
			return nil
		}
		retry := attempt < 2
		switch {
		case !retry:
		case t.errno == syscall.EIO && gso:
			// The device cannot checksum segmented datagrams: send them
			// one by one from now on.
			s.gso.Store(false)
			gso = false
		case (t.errno == syscall.EINVAL || t.errno == syscall.EMSGSIZE) && gso:
			// A segment larger than the route's MTU allows: send
			// unsegmented, the kernel fragmenting as for any datagram.
			gso, refused = false, true
		case src != nil && src.cmsg != nil && (t.errno == syscall.EINVAL || t.errno == syscall.ENETUNREACH || t.errno == syscall.EADDRNOTAVAIL):
			// The sticky source is no longer ours (an address went, a
			// route changed): let routing choose.
			e.src.CompareAndSwap(src, droppedSource)
			cleared = true
		default:
			retry = false
		}
		if retry {
			bufs = bufs[t.packetsSent(bufs):]
			continue
		}
		return &net.OpError{Op: "write", Net: "udp", Source: s.conn.LocalAddr(), Addr: net.UDPAddrFromAddrPort(e.dst), Err: t.errno}
	}
}

// build lays bufs out as messages: with gso, each run of packets of one
// size (and a shorter last one) is one segmented datagram over their own
// buffers.
func (t *txState) build(bufs [][]byte, e *bindEndpoint, src *stickySource, gso bool) {
	t.n = 0
	for i := 0; i < len(bufs); {
		seg := len(bufs[i])
		j, size := i+1, seg
		if gso {
			for j < len(bufs) && j-i < maxSegments && size+len(bufs[j]) <= maxGSOBytes && len(bufs[j]) <= seg {
				size += len(bufs[j])
				j++
				if len(bufs[j-1]) < seg {
					break // a short packet ends the datagram
				}
			}
		}
		for k := i; k < j; k++ {
			t.iovs[k].Base = unsafe.SliceData(bufs[k])
			t.iovs[k].SetLen(len(bufs[k]))
		}
		oob := t.oob[t.n*oobSize : t.n*oobSize : (t.n+1)*oobSize]
		if src != nil {
			oob = append(oob, src.cmsg...)
		}
		if j-i > 1 {
			at := len(oob)
			oob = oob[:at+unix.CmsgSpace(2)]
			clear(oob[at:])
			h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[at]))
			h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			h.SetLen(unix.CmsgLen(2))
			*(*uint16)(unsafe.Pointer(&oob[at+unix.CmsgLen(0)])) = uint16(seg)
		}
		h := &t.hdrs[t.n].Hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&e.name)), Namelen: e.nlen, Iov: &t.iovs[i]}
		h.SetIovlen(j - i)
		if len(oob) > 0 {
			h.Control = &oob[0]
			h.SetControllen(len(oob))
		}
		t.n++
		i = j
	}
}

// packetsSent is how many of bufs the messages already sent carried.
func (t *txState) packetsSent(bufs [][]byte) int {
	n := 0
	for m := range t.sent {
		n += int(t.hdrs[m].Hdr.Iovlen)
	}
	return min(n, len(bufs))
}
