package wgnet

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// deviceState is what wireguard-go's "get" operation reports, minus the
// private key, which the parser skips so that it is never held here.
type deviceState struct {
	listenPort uint16
	peers      []PeerStatus
}

// parseUAPI reads the output of device.IpcGet. See
// https://www.wireguard.com/xplatform/#configuration-protocol.
func parseUAPI(s string) (deviceState, error) {
	var st deviceState
	var p *PeerStatus
	var hsSec, hsNsec int64
	finishPeer := func() {
		if p == nil {
			return
		}
		if hsSec != 0 || hsNsec != 0 {
			p.LastHandshake = time.Unix(hsSec, hsNsec)
		}
		st.peers = append(st.peers, *p)
		p, hsSec, hsNsec = nil, 0, 0
	}
	for line := range strings.Lines(s) {
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return deviceState{}, fmt.Errorf("parsing device state: line without '=': %q", redact(line))
		}
		var err error
		switch k {
		case "private_key", "fwmark", "preshared_key", "protocol_version":
			// Not ours to report (and private_key must not be kept).
		case "listen_port":
			var port uint64
			port, err = strconv.ParseUint(v, 10, 16)
			st.listenPort = uint16(port)
		case "public_key":
			finishPeer()
			p = &PeerStatus{}
			err = decodeHexKey(p.PublicKey[:], v)
		default:
			if p == nil {
				return deviceState{}, fmt.Errorf("parsing device state: %q before any peer", k)
			}
			switch k {
			case "endpoint":
				p.Endpoint, err = netip.ParseAddrPort(v)
			case "last_handshake_time_sec":
				hsSec, err = strconv.ParseInt(v, 10, 64)
			case "last_handshake_time_nsec":
				hsNsec, err = strconv.ParseInt(v, 10, 64)
			case "rx_bytes":
				p.RxBytes, err = strconv.ParseUint(v, 10, 64)
			case "tx_bytes":
				p.TxBytes, err = strconv.ParseUint(v, 10, 64)
			case "persistent_keepalive_interval":
				var secs uint64
				secs, err = strconv.ParseUint(v, 10, 16)
				p.PersistentKeepalive = time.Duration(secs) * time.Second
			case "allowed_ip":
				var pfx netip.Prefix
				pfx, err = netip.ParsePrefix(v)
				p.AllowedIPs = append(p.AllowedIPs, pfx)
			default:
				// A newer wireguard-go may report more; it does not change
				// what we compare.
			}
		}
		if err != nil {
			return deviceState{}, fmt.Errorf("parsing device state: %s: %w", k, err)
		}
	}
	finishPeer()
	slices.SortFunc(st.peers, func(a, b PeerStatus) int { return cmpKey(a.PublicKey, b.PublicKey) })
	for i := range st.peers {
		sortPrefixes(st.peers[i].AllowedIPs)
	}
	return st, nil
}

func decodeHexKey(dst []byte, s string) error {
	if len(s) != 2*KeyLen {
		return fmt.Errorf("got %d hex digits, want %d", len(s), 2*KeyLen)
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("not hex")
	}
	return nil
}

func cmpKey(a, b Key) int { return slices.Compare(a[:], b[:]) }

func sortPrefixes(ps []netip.Prefix) {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
}

// peerDelta is the minimal configuration change that turns the live peers
// into the desired ones, as UAPI "set" text, plus a summary of each change
// for the log (with abbreviated keys). An empty text means nothing to do.
//
// desired must be normalised (see normalisePeers). written holds the
// endpoint last written for each peer: a desired endpoint is compared with
// that, not with the live one, because the live one moves when the peer
// roams (its NAT mapping changed) and undoing a roam would cut the peer off.
func peerDelta(live []PeerStatus, desired []Peer, written map[Key]netip.AddrPort) (uapi string, summary []string) {
	var b strings.Builder
	set := func(k, v string) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
		b.WriteByte('\n')
	}
	liveByKey := make(map[Key]*PeerStatus, len(live))
	for i := range live {
		liveByKey[live[i].PublicKey] = &live[i]
	}
	want := make(map[Key]bool, len(desired))
	for _, p := range desired {
		want[p.PublicKey] = true
	}

	// Removals first, so that an allowed IP moving from a removed peer to
	// another one is not taken away again after it was given.
	for _, l := range live {
		if !want[l.PublicKey] {
			set("public_key", l.PublicKey.hex())
			set("remove", "true")
			summary = append(summary, "remove peer "+l.PublicKey.Short())
		}
	}

	writeNew := func(p Peer) {
		set("public_key", p.PublicKey.hex())
		if p.Endpoint.IsValid() {
			set("endpoint", p.Endpoint.String())
		}
		for _, pfx := range p.AllowedIPs {
			set("allowed_ip", pfx.String())
		}
		// Last, because turning keepalive on sends a packet at once and
		// the peer should be complete by then.
		if p.PersistentKeepalive > 0 {
			set("persistent_keepalive_interval", strconv.Itoa(int(p.PersistentKeepalive/time.Second)))
		}
	}

	for _, p := range desired {
		l, ok := liveByKey[p.PublicKey]
		if !ok {
			writeNew(p)
			summary = append(summary, "add peer "+p.PublicKey.Short())
			continue
		}
		if p.Endpoint.IsValid() && p.Endpoint != written[p.PublicKey] && p.Endpoint != l.Endpoint {
			// The peer was told to be somewhere else: most likely it is a
			// new process there (a restarted gateway) and the session we
			// hold is useless. Recreating the peer starts a fresh handshake
			// at once instead of after the 15 s it takes WireGuard to notice
			// a dead session. Connections inside the netstack survive it.
			set("public_key", p.PublicKey.hex())
			set("remove", "true")
			writeNew(p)
			summary = append(summary, fmt.Sprintf("peer %s: endpoint %s -> %s (peer recreated)", p.PublicKey.Short(), l.Endpoint, p.Endpoint))
			continue
		}
		var lines []string
		var what []string
		have := make(map[netip.Prefix]bool, len(l.AllowedIPs))
		for _, pfx := range l.AllowedIPs {
			have[pfx] = true
		}
		for _, pfx := range p.AllowedIPs {
			if !have[pfx] {
				lines = append(lines, "allowed_ip="+pfx.String())
				what = append(what, "+"+pfx.String())
			}
			delete(have, pfx)
		}
		for _, pfx := range l.AllowedIPs {
			if have[pfx] {
				lines = append(lines, "allowed_ip=-"+pfx.String())
				what = append(what, "-"+pfx.String())
			}
		}
		if p.PersistentKeepalive != l.PersistentKeepalive {
			if p.PersistentKeepalive > 0 && l.PersistentKeepalive > 0 {
				// wireguard-go keeps the running timer, so a new interval
				// would start only when the old one next fires (possibly
				// minutes away). Switching off and on sends a keepalive
				// now and arms the timer with the new interval.
				lines = append(lines, "persistent_keepalive_interval=0")
			}
			lines = append(lines, "persistent_keepalive_interval="+strconv.Itoa(int(p.PersistentKeepalive/time.Second)))
			what = append(what, "keepalive "+p.PersistentKeepalive.String())
		}
		if len(lines) == 0 {
			continue
		}
		set("public_key", p.PublicKey.hex())
		// Never create: the peer exists, and if something removed it
		// meanwhile the next SetPeers adds it whole.
		set("update_only", "true")
		for _, ln := range lines {
			b.WriteString(ln)
			b.WriteByte('\n')
		}
		summary = append(summary, fmt.Sprintf("peer %s: %s", p.PublicKey.Short(), strings.Join(what, ", ")))
	}
	return b.String(), summary
}
