//go:build linux

package wgnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// routeProtocol marks the routes this package adds to its TUN interface,
// so that it only ever removes its own (any value above RTPROT_STATIC is
// free for routing daemons; this one spells "KK").
const routeProtocol = netlink.RouteProtocol(0x4b)

// kernelStack is the host's own TCP/IP stack reached through a TUN
// interface: the kernel does TCP, with segmentation offload to and from
// wireguard-go (which the TUN device negotiates itself), and this package
// keeps the interface's address and a route per peer prefix.
type kernelStack struct {
	addr  netip.Addr
	link  netlink.Link
	name  string
	local net.Addr // for dialling from the overlay address
}

// newKernelStack creates the TUN interface name with addr as its only
// address and brings it up. Only packets to and from addr pass between
// the interface and WireGuard (see selfOnly): whatever the host's
// forwarding settings, the interface is never a router between peers.
func newKernelStack(name string, addr netip.Addr, mtu int) (*kernelStack, tun.Device, error) {
	if name == "" {
		name = DefaultInterface
	}
	dev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, nil, fmt.Errorf("creating TUN interface %s: %w (the tun backend needs CAP_NET_ADMIN and /dev/net/tun)", name, err)
	}
	fail := func(err error) (*kernelStack, tun.Device, error) {
		dev.Close()
		return nil, nil, fmt.Errorf("setting up TUN interface %s: %w", name, err)
	}
	if n, err := dev.Name(); err == nil {
		name = n
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fail(err)
	}
	bits := addr.BitLen()
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
	if addr.Is6() {
		a.Flags = unix.IFA_F_NODAD // usable at once, no duplicate detection on a point-to-point link
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return fail(fmt.Errorf("adding address %s: %w", addr, err))
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fail(fmt.Errorf("bringing it up: %w", err))
	}
	ks := &kernelStack{addr: addr, link: l, name: name, local: &net.TCPAddr{IP: addr.AsSlice()}}
	return ks, selfOnly{Device: dev, addr: addr}, nil
}

func (k *kernelStack) dialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{LocalAddr: k.local}
	return d.DialContext(ctx, "tcp", ap.String())
}

func (k *kernelStack) listenTCP(ap netip.AddrPort) (net.Listener, error) {
	return net.Listen("tcp", ap.String())
}

func (k *kernelStack) listenUDP(ap netip.AddrPort) (net.PacketConn, error) {
	return net.ListenPacket("udp", ap.String())
}

func (k *kernelStack) dialUDP(raddr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.UDPAddr{IP: k.addr.AsSlice()}}
	return d.Dial("udp", raddr.String())
}

// syncRoutes makes the interface's routes (those this package added)
// exactly prefixes.
func (k *kernelStack) syncRoutes(prefixes []netip.Prefix) error {
	family := unix.AF_INET
	if k.addr.Is6() {
		family = unix.AF_INET6
	}
	have, err := netlink.RouteListFiltered(family, &netlink.Route{LinkIndex: k.link.Attrs().Index, Protocol: routeProtocol},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("listing routes of %s: %w", k.name, err)
	}
	want := make(map[netip.Prefix]bool, len(prefixes))
	for _, p := range prefixes {
		if p.Addr().Is6() == k.addr.Is6() {
			want[p.Masked()] = true
		}
	}
	var errs []error
	for _, r := range have {
		if r.Dst == nil {
			continue
		}
		p, ok := netipPrefix(r.Dst)
		if ok && want[p] {
			delete(want, p)
			continue
		}
		if err := netlink.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("removing route %s: %w", r.Dst, err))
		}
	}
	add := make([]netip.Prefix, 0, len(want))
	for p := range want {
		add = append(add, p)
	}
	slices.SortFunc(add, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, p := range add {
		r := &netlink.Route{
			LinkIndex: k.link.Attrs().Index,
			Dst:       &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
			Src:       k.addr.AsSlice(),
			Protocol:  routeProtocol,
			Scope:     netlink.SCOPE_LINK,
		}
		if err := netlink.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("adding route %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// selfOnly lets through only packets between the overlay address and
// WireGuard: what the kernel sends from another source, and what a peer
// sends to any other destination, is dropped. A host with forwarding
// enabled would otherwise route one peer's packets to another.
type selfOnly struct {
	tun.Device
	addr netip.Addr
}

func (s selfOnly) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := s.Device.Read(bufs, sizes, offset)
	for i := range n {
		if !addrIs(bufs[i][offset:offset+sizes[i]], s.addr, true) {
			sizes[i] = 0 // wireguard-go skips empty packets
		}
	}
	return n, err
}

func (s selfOnly) Write(bufs [][]byte, offset int) (int, error) {
	keep := bufs[:0]
	for _, b := range bufs {
		if addrIs(b[offset:], s.addr, false) {
			keep = append(keep, b)
		}
	}
	if len(keep) == 0 {
		return len(bufs), nil
	}
	if _, err := s.Device.Write(keep, offset); err != nil {
		return 0, err
	}
	return len(bufs), nil
}

// addrIs reports whether packet p's source (src true) or destination is a.
func addrIs(p []byte, a netip.Addr, src bool) bool {
	if len(p) == 0 {
		return false
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 || !a.Is4() {
			return false
		}
		off := 16
		if src {
			off = 12
		}
		return netip.AddrFrom4([4]byte(p[off:off+4])) == a
	case 6:
		if len(p) < 40 || !a.Is6() {
			return false
		}
		off := 24
		if src {
			off = 8
		}
		return netip.AddrFrom16([16]byte(p[off:off+16])) == a
	}
	return false
}
