package wgnet

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// outQueueLen and outQueueBytes bound what the stack may queue for
// WireGuard before it sees packets dropped, as a NIC's transmit queue
// does. With segmentation offload one queued packet may carry 64 KiB, so
// the bytes matter: a deep queue only adds delay (and memory) once
// WireGuard is the slower side, and TCP backs off on the drops.
const (
	outQueueLen   = 1024
	outQueueBytes = 4 << 20
)

// gsoMaxSize is the largest TCP segment the stack hands the link: the
// largest IP packet.
const gsoMaxSize = 1 << 16

// link joins gVisor's stack to wireguard-go. It is the stack's network
// interface (a stack.LinkEndpoint) and wireguard-go's TUN device (a
// tun.Device) at once, and it is where the stock netstack adapter loses
// most of its time, so it works in batches both ways:
//
//   - Outbound, the stack writes TCP segments of up to 64 KiB (it is told
//     the link segments them, as a NIC with TSO would); Read cuts them into
//     MTU-sized packets with their own headers and checksums straight into
//     wireguard-go's buffers, a whole batch per call, so that WireGuard
//     encrypts and sends them in batches too.
//   - Inbound, Write receives the batch of packets WireGuard decrypted
//     together and coalesces consecutive segments of one TCP flow into one
//     large segment (coalesce.go) before the stack sees them. WireGuard
//     authenticated every packet, so transport checksums are not checked
//     again.
//
// Packets on the wire stay within the MTU; only the stack's view of them is
// large. Nothing runs a goroutine per packet: the stack's writer queues
// under a mutex and wireguard-go's single TUN reader takes the whole queue.
type link struct {
	mtu    int
	events chan tun.Event

	dispatcher atomic.Pointer[stack.NetworkDispatcher]

	mu       sync.Mutex
	ready    *sync.Cond // signalled when out gains packets or the link closes
	out      []*stack.PacketBuffer
	outBytes int // the size of what is in out
	closed   bool

	// Bare acknowledgements held back (ack.go); zero ackDelay holds none.
	ackDelay  time.Duration
	held      map[flowKey]heldAck
	heldTimer *time.Timer // fires releaseHeld
	heldArmed bool
	acks      ackLog // last acknowledgement sent, per connection
	quickAck  uint32 // acknowledging this many new bytes goes at once

	// Only Read touches these: wireguard-go has one TUN reader.
	pending []*stack.PacketBuffer // taken from out; pending[head:] not yet all read
	head    int
	next    int // segment of pending[head] to read next

	coalescers sync.Pool // *coalescer, one per concurrent Write

	// outFlight counts what Read handed wireguard-go and the bind has not yet
	// sent, inFlight what the bind received and Write has not yet been given
	// (flight.go); both nil where the bind does not count.
	outFlight, inFlight *flight
	stopped             chan struct{} // closed by shut
}

var (
	_ stack.LinkEndpoint = (*link)(nil)
	_ stack.GSOEndpoint  = (*link)(nil)
	_ tun.Device         = tunDevice{}
)

func newLink(mtu int, ackDelay time.Duration) *link {
	l := &link{mtu: mtu, events: make(chan tun.Event, 1), ackDelay: ackDelay, stopped: make(chan struct{})}
	l.ready = sync.NewCond(&l.mu)
	if ackDelay > 0 {
		l.quickAck = uint32(2 * (mtu - header.IPv4MinimumSize - header.TCPMinimumSize))
		l.held = make(map[flowKey]heldAck)
		l.heldTimer = time.AfterFunc(time.Hour, l.releaseHeld)
		l.heldTimer.Stop()
	}
	l.events <- tun.EventUp
	l.coalescers.New = func() any { return new(coalescer) }
	return l
}

// --- stack.LinkEndpoint ---

func (l *link) MTU() uint32                      { return uint32(l.mtu) }
func (l *link) SetMTU(uint32)                    {}
func (l *link) MaxHeaderLength() uint16          { return 0 }
func (l *link) LinkAddress() tcpip.LinkAddress   { return "" }
func (l *link) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities: packets from WireGuard were authenticated, so the stack
// need not verify their checksums; outbound checksums are still computed
// (by the stack, or by Read for segments it cuts), so any peer stack,
// a kernel's included, accepts them.
func (l *link) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

func (l *link) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		l.dispatcher.Store(nil)
		return
	}
	l.dispatcher.Store(&d)
}

func (l *link) IsAttached() bool                        { return l.dispatcher.Load() != nil }
func (l *link) Wait()                                   {}
func (l *link) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (l *link) AddHeader(*stack.PacketBuffer)           {}
func (l *link) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (l *link) SetOnCloseAction(func())                 {}

// Close is called by the stack when the NIC goes; the device's own Close
// (tunDevice.Close) stops the link.
func (l *link) Close() {}

// GSOMaxSize and SupportedGSO tell the stack to hand TCP segments of up to
// 64 KiB to the link, which segments them (Read).
func (l *link) GSOMaxSize() uint32               { return gsoMaxSize }
func (l *link) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

// WritePackets queues the stack's outbound packets for Read. A full queue
// drops, as a NIC does; TCP recovers.
func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, &tcpip.ErrClosedForSend{}
	}
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if !l.queueLocked(pkt) {
			break
		}
		n++
	}
	if len(l.out) > 0 {
		l.ready.Signal()
	}
	l.mu.Unlock()
	if n == 0 {
		return 0, &tcpip.ErrNoBufferSpace{}
	}
	return n, nil
}

// --- tun.Device, through tunDevice ---

// tunDevice is the link as wireguard-go sees it: tun.Device's MTU and Close
// differ from stack.LinkEndpoint's, so it is a type of its own.
type tunDevice struct {
	l *link
	// close tears the whole stack down; wireguard-go calls it once, from
	// device.Close.
	close func()
}

func (t tunDevice) File() *os.File                               { return nil }
func (t tunDevice) Name() (string, error)                        { return "kakuremichi", nil }
func (t tunDevice) Events() <-chan tun.Event                     { return t.l.events }
func (t tunDevice) BatchSize() int                               { return conn.IdealBatchSize }
func (t tunDevice) MTU() (int, error)                            { return t.l.mtu, nil }
func (t tunDevice) Read(b [][]byte, s []int, o int) (int, error) { return t.l.Read(b, s, o) }
func (t tunDevice) Write(b [][]byte, o int) (int, error)         { return t.l.Write(b, o) }
func (t tunDevice) Close() error {
	t.close()
	return nil
}

func (l *link) dispatcherOrNil() stack.NetworkDispatcher {
	if d := l.dispatcher.Load(); d != nil {
		return *d
	}
	return nil
}

// Read fills bufs with outbound packets, each at offset, cutting large TCP
// segments into MTU-sized packets; it blocks until there is at least one
// and returns how many it wrote. A segment cut short by the end of bufs
// continues on the next call.
func (l *link) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	l.outFlight.wait()
	if l.head == len(l.pending) {
		l.mu.Lock()
		for len(l.out) == 0 && !l.closed {
			l.ready.Wait()
		}
		if l.closed {
			l.mu.Unlock()
			return 0, os.ErrClosed
		}
		// Swap the queues: the stack appends to the reader's old array.
		l.out, l.pending, l.head = l.pending[:0], l.out, 0
		l.outBytes = 0
		l.mu.Unlock()
	}
	n := 0
	for n < len(bufs) && l.head < len(l.pending) {
		pkt := l.pending[l.head]
		k, done := l.emit(pkt, bufs[n:], sizes[n:], offset)
		n += k
		if !done {
			break
		}
		pkt.DecRef()
		l.pending[l.head] = nil
		l.head++
		l.next = 0
	}
	l.outFlight.add(n)
	return n, nil
}

// emit writes pkt, or the rest of it from segment l.next, into bufs and
// reports how many buffers it filled and whether pkt is done.
func (l *link) emit(pkt *stack.PacketBuffer, bufs [][]byte, sizes []int, offset int) (int, bool) {
	switch pkt.GSOOptions.Type {
	case stack.GSOTCPv4, stack.GSOTCPv6:
		k, next, done := segment(pkt, l.next, bufs, sizes, offset)
		l.next = next
		return k, done
	}
	buf := bufs[0][offset:]
	if pkt.Size() > len(buf) {
		// Larger than the MTU and not TCP: the stack fragments IP
		// packets itself, so this does not happen; drop it rather than
		// send a truncated packet.
		return 0, true
	}
	w := 0
	for _, s := range pkt.AsSlices() {
		w += copy(buf[w:], s)
	}
	sizes[0] = w
	return 1, true
}

// Write delivers a batch of decrypted packets, each at offset, to the
// stack, coalescing TCP segments of one flow on the way.
func (l *link) Write(bufs [][]byte, offset int) (int, error) {
	d := l.dispatcherOrNil()
	if d == nil {
		return 0, os.ErrClosed
	}
	c := l.coalescers.Get().(*coalescer)
	c.d = d
	var err error
	written := 0
	for _, b := range bufs {
		p := b[offset:]
		if len(p) == 0 {
			continue
		}
		written++
		if !c.add(p) {
			err = syscall.EAFNOSUPPORT
		}
	}
	c.flushAll()
	c.d = nil
	l.coalescers.Put(c)
	l.inFlight.done(written)
	if err != nil {
		return 0, err
	}
	return len(bufs), nil
}

// shut wakes the reader with os.ErrClosed and drops what is queued.
func (l *link) shut() {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		for _, p := range l.out {
			p.DecRef()
		}
		l.out, l.outBytes = nil, 0
		l.dropHeldLocked()
		close(l.events)
		close(l.stopped)
	}
	l.ready.Broadcast()
	l.mu.Unlock()
}
