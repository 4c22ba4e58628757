package wgnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// nicID is the stack's one network interface.
const nicID = 1

// TCP buffer limits of the overlay's stack. The receive buffer grows with
// the connection (moderation) up to tcpRcvMax, enough for a fast stream
// over a long path; most connections stay small.
const (
	tcpRcvMax = 8 << 20
	tcpSndMax = 6 << 20
)

// netStack is a node's TCP/IP stack on the overlay: gVisor's, with one
// interface, the link, that carries its packets to and from wireguard-go.
type netStack struct {
	stack *stack.Stack
	link  *link
	addr  netip.Addr
	proto tcpip.NetworkProtocolNumber
}

// newNetStack creates the stack with addr as its only address, and the
// tun.Device wireguard-go reads and writes its packets through.
func newNetStack(addr netip.Addr, mtu int, ackDelay time.Duration) (*netStack, tun.Device, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	opts := []tcpip.SettableTransportProtocolOption{
		new(tcpip.TCPSACKEnabled),
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultReceiveBufferSize, Max: tcpRcvMax},
		&tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultSendBufferSize, Max: tcpSndMax},
		new(tcpip.TCPModerateReceiveBufferOption),
	}
	*opts[0].(*tcpip.TCPSACKEnabled) = true
	*opts[3].(*tcpip.TCPModerateReceiveBufferOption) = true
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			s.Close()
			return nil, nil, fmt.Errorf("setting TCP option %T: %s", o, err)
		}
	}
	l := newLink(mtu, ackDelay)
	if err := s.CreateNIC(nicID, l); err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("creating the network interface: %s", err)
	}
	ns := &netStack{stack: s, link: l, addr: addr, proto: ipv4.ProtocolNumber}
	route := header.IPv4EmptySubnet
	if addr.Is6() {
		ns.proto, route = ipv6.ProtocolNumber, header.IPv6EmptySubnet
	}
	pa := tcpip.ProtocolAddress{Protocol: ns.proto, AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix()}
	if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("adding address %s: %s", addr, err)
	}
	s.AddRoute(tcpip.Route{Destination: route, NIC: nicID})
	return ns, tunDevice{l: l, close: ns.close}, nil
}

// close stops the link, so wireguard-go's reader returns, and the stack
// with every endpoint on it.
func (ns *netStack) close() {
	ns.link.shut()
	ns.stack.RemoveNIC(nicID)
	ns.stack.Close()
}

func (ns *netStack) fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	fa := tcpip.FullAddress{NIC: nicID, Port: ap.Port()}
	if ap.Addr().IsValid() {
		fa.Addr = tcpip.AddrFromSlice(ap.Addr().AsSlice())
	}
	return fa, proto
}

// dialTCP opens a TCP connection to ap.
func (ns *netStack) dialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	fa, proto := ns.fullAddr(ap)
	return gonet.DialContextTCP(ctx, ns.stack, fa, proto)
}

// Keepalive of accepted connections: a peer silent this long is probed,
// and given up after keepaliveCount unanswered probes. Variables so that
// tests can shorten them.
var (
	keepaliveIdle     = 30 * time.Second
	keepaliveInterval = 10 * time.Second
	keepaliveCount    = 3
)

// listenTCP listens on ap, which must be the stack's address. Accepted
// connections send TCP keepalives: a peer that vanished without a word (a
// gateway whose host lost power) no longer holds them, and whatever they
// relay to, open forever.
func (ns *netStack) listenTCP(ap netip.AddrPort) (net.Listener, error) {
	fa, proto := ns.fullAddr(ap)
	l := &keepaliveListener{wq: new(waiter.Queue), closed: make(chan struct{})}
	ep, terr := ns.stack.NewEndpoint(tcp.ProtocolNumber, proto, l.wq)
	if terr != nil {
		return nil, fmt.Errorf("listening on %s: %s", ap, terr)
	}
	if terr := ep.Bind(fa); terr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "bind", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: errors.New(terr.String())}
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: errors.New(terr.String())}
	}
	l.ep = ep
	l.TCPListener = gonet.NewTCPListener(ns.stack, l.wq, ep)
	return l, nil
}

// listenBacklog is the accept queue of a listener, as Linux's usual
// somaxconn.
const listenBacklog = 4096

// keepaliveListener is gonet's listener with an Accept of its own, which
// turns keepalive on for each connection before gonet wraps it (gonet
// keeps the endpoint to itself afterwards).
type keepaliveListener struct {
	*gonet.TCPListener
	ep        tcpip.Endpoint
	wq        *waiter.Queue
	closeOnce sync.Once
	closed    chan struct{}
}

func (l *keepaliveListener) Accept() (net.Conn, error) {
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	l.wq.EventRegister(&entry)
	defer l.wq.EventUnregister(&entry)
	for {
		n, wq, terr := l.ep.Accept(nil)
		if _, wait := terr.(*tcpip.ErrWouldBlock); !wait {
			if terr != nil {
				return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: errors.New(terr.String())}
			}
			n.SocketOptions().SetKeepAlive(true)
			idle := tcpip.KeepaliveIdleOption(keepaliveIdle)
			ival := tcpip.KeepaliveIntervalOption(keepaliveInterval)
			n.SetSockOpt(&idle)
			n.SetSockOpt(&ival)
			n.SetSockOptInt(tcpip.KeepaliveCountOption, keepaliveCount)
			return gonet.NewTCPConn(wq, n), nil
		}
		select {
		case <-ready:
		case <-l.closed:
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
		}
	}
}

func (l *keepaliveListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.TCPListener.Close()
}

// listenUDP opens a UDP socket on ap.
func (ns *netStack) listenUDP(ap netip.AddrPort) (net.PacketConn, error) {
	fa, proto := ns.fullAddr(ap)
	return gonet.DialUDP(ns.stack, &fa, nil, proto)
}

// dialUDP opens a UDP socket connected to raddr, from the stack's address.
func (ns *netStack) dialUDP(raddr netip.AddrPort) (net.Conn, error) {
	fa, proto := ns.fullAddr(raddr)
	return gonet.DialUDP(ns.stack, nil, &fa, proto)
}

// overlayStack is what a Device needs of its network stack.
type overlayStack interface {
	dialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error)
	listenTCP(ap netip.AddrPort) (net.Listener, error)
	listenUDP(ap netip.AddrPort) (net.PacketConn, error)
	dialUDP(raddr netip.AddrPort) (net.Conn, error)
}

// stockStack is wireguard-go's own netstack adapter (one packet per call,
// no segmentation offload), kept as the benchmarks' baseline.
type stockStack struct{ n *netstack.Net }

func newStockStack(addr netip.Addr, mtu int) (stockStack, tun.Device, error) {
	dev, n, err := netstack.CreateNetTUN([]netip.Addr{addr}, nil, mtu)
	return stockStack{n}, dev, err
}

func (s stockStack) dialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	return s.n.DialContextTCPAddrPort(ctx, ap)
}

func (s stockStack) listenTCP(ap netip.AddrPort) (net.Listener, error) {
	return s.n.ListenTCPAddrPort(ap)
}

func (s stockStack) listenUDP(ap netip.AddrPort) (net.PacketConn, error) {
	return s.n.ListenUDPAddrPort(ap)
}

func (s stockStack) dialUDP(raddr netip.AddrPort) (net.Conn, error) {
	return s.n.DialUDPAddrPort(netip.AddrPort{}, raddr)
}
