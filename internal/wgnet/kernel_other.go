//go:build !linux

package wgnet

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
)

// kernelStack exists on Linux only.
type kernelStack struct{}

func newKernelStack(string, netip.Addr, int) (*kernelStack, tun.Device, error) {
	return nil, nil, errors.New("the tun backend is only available on Linux")
}

func (*kernelStack) dialTCP(context.Context, netip.AddrPort) (net.Conn, error) {
	return nil, net.ErrClosed
}
func (*kernelStack) listenTCP(netip.AddrPort) (net.Listener, error)   { return nil, net.ErrClosed }
func (*kernelStack) listenUDP(netip.AddrPort) (net.PacketConn, error) { return nil, net.ErrClosed }
func (*kernelStack) dialUDP(netip.AddrPort) (net.Conn, error)         { return nil, net.ErrClosed }
func (*kernelStack) syncRoutes([]netip.Prefix) error                  { return nil }
