// Package wgnet is the WireGuard data path shared by agents and gateways: a
// userspace WireGuard device (wireguard-go) whose network stack is gVisor's
// netstack, so it needs no root, no TUN device and no kernel routes. TCP
// connections are dialled and accepted on the overlay with
// [Device.DialContext] and [Device.Listen]; the device's peers are reconciled
// with [Device.SetPeers], which reads the live configuration, diffs it
// against the desired peers and writes only the difference.
//
// WireGuard's cryptokey routing is the isolation boundary: a packet leaves
// only towards the peer whose AllowedIPs contain its destination, and a
// packet arriving from a peer is delivered only if its source lies within
// that peer's AllowedIPs. A netstack never forwards between peers, so a hub
// (a gateway) cannot be used to reach one peer (an agent) from another.
//
// Private keys never reach a log: [PrivateKey] redacts itself in every
// format, and wireguard-go's own messages (whose configuration strings carry
// keys in hex) pass through a redacting adapter, [DeviceLogger].
//
// The network stack is gVisor's, joined to wireguard-go by this package's
// own link (link.go) rather than wireguard-go's stock netstack adapter: it
// moves packets in batches and does TCP segmentation offload outbound and
// receive coalescing inbound, so the stack works with 64 KiB segments while
// the packets on the wire stay within the MTU. BenchmarkBulkCPU measures it
// against the stock adapter (kept for that purpose) in the same run. The
// link and this package's UDP bind also bound how many packets wait inside
// wireguard-go in each direction (flight.go), which would otherwise hold a
// 64 KiB buffer for every packet of a TCP window.
//
// It imports the standard library, golang.zx2c4.com/wireguard (device, conn,
// tun and tun/netstack), gVisor's tcpip packages and package api for its
// sentinel errors; nothing else of this module.
package wgnet
