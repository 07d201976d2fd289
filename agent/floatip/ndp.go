package floatip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// advertise sends an unsolicited neighbour advertisement for ip to all
// nodes (RFC 4861 section 7.2.6) with the Override flag, so neighbours
// replace the link-layer address they have for ip with ours. The socket
// is bound to ip so it is the source, which the address must allow (it is
// added without duplicate address detection).
func advertise(ifi *net.Interface, ip netip.Addr) error {
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", ip.WithZone(ifi.Name).String())
	if err != nil {
		return fmt.Errorf("open ICMPv6 socket on %s: %w", ifi.Name, err)
	}
	defer c.Close()
	pc := c.IPv6PacketConn()
	// Receivers drop neighbour discovery that a router could have
	// forwarded: the hop limit must be 255.
	if err := pc.SetMulticastHopLimit(255); err != nil {
		return err
	}
	if err := pc.SetMulticastInterface(ifi); err != nil {
		return err
	}
	target := ip.As16()
	body := make([]byte, 4+16+8)
	body[0] = 0x20 // Override
	copy(body[4:20], target[:])
	body[20], body[21] = 2, 1 // option: target link-layer address, 8 bytes
	copy(body[22:28], ifi.HardwareAddr)
	msg := icmp.Message{Type: ipv6.ICMPTypeNeighborAdvertisement, Body: &icmp.RawBody{Data: body}}
	b, err := msg.Marshal(nil) // the kernel fills in the checksum for ICMPv6
	if err != nil {
		return err
	}
	dst := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: ifi.Name}
	if _, err := c.WriteTo(b, dst); err != nil {
		return fmt.Errorf("send neighbour advertisement for %s: %w", ip, err)
	}
	return nil
}

// ndpConn is a raw IPv6 socket on one link for duplicate address probes;
// the kernel adds and strips the Ethernet header. A packet socket is
// needed because a probe's source is the unspecified address, which an
// ICMPv6 socket does not send from.
type ndpConn struct {
	c   *packet.Conn
	mac net.HardwareAddr
}

func openNDP(ifi *net.Interface) (*ndpConn, error) {
	c, err := packet.Listen(ifi, packet.Datagram, unix.ETH_P_IPV6, nil)
	if err != nil {
		return nil, fmt.Errorf("open IPv6 socket on %s: %w", ifi.Name, err)
	}
	return &ndpConn{c: c, mac: ifi.HardwareAddr}, nil
}

func (n *ndpConn) Close() error { return n.c.Close() }

// probe sends duplicate address detection probes for ip (RFC 4862 section
// 5.4: a neighbour solicitation from :: to ip's solicited-node group) and
// listens until wait has passed since the last one. A holder answers with
// an advertisement to all nodes; it returns the holder's MAC, or nil.
func (n *ndpConn) probe(ip netip.Addr, probes int, interval, wait time.Duration) (net.HardwareAddr, error) {
	t := ip.As16()
	group := netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 11: 0x01, 12: 0xff, 13: t[13], 14: t[14], 15: t[15]})
	dstMAC := net.HardwareAddr{0x33, 0x33, 0xff, t[13], t[14], t[15]}
	pkt := ndpPacket(netip.IPv6Unspecified(), group, 135, t[:])
	var deadline time.Time
	for i := 0; i < probes; i++ {
		if _, err := n.c.WriteTo(pkt, &packet.Addr{HardwareAddr: dstMAC}); err != nil {
			return nil, fmt.Errorf("send neighbour solicitation for %s: %w", ip, err)
		}
		deadline = time.Now().Add(interval)
		if i == probes-1 {
			deadline = time.Now().Add(wait)
		}
		if owner, err := n.listen(ip, deadline); owner != nil || err != nil {
			return owner, err
		}
	}
	return nil, nil
}

// listen reads IPv6 until deadline for a neighbour advertisement of ip, or
// another host's duplicate address probe for it.
func (n *ndpConn) listen(ip netip.Addr, deadline time.Time) (net.HardwareAddr, error) {
	buf := make([]byte, 1500)
	for {
		if err := n.c.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		size, from, err := n.c.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read IPv6: %w", err)
		}
		p := buf[:size]
		// IPv6 header (40 bytes) with ICMPv6 next, then type, code,
		// checksum, flags/reserved and the 16-byte target.
		if len(p) < 40+24 || p[0]>>4 != 6 || p[6] != 58 || p[7] != 255 {
			continue
		}
		typ, target := p[40], netip.AddrFrom16([16]byte(p[48:64]))
		src := netip.AddrFrom16([16]byte(p[8:24]))
		sender, _ := from.(*packet.Addr)
		if target != ip || sender == nil || sender.HardwareAddr.String() == n.mac.String() {
			continue
		}
		if typ == 136 || typ == 135 && src.IsUnspecified() {
			if mac := linkLayerOption(p[64:], 2); typ == 136 && mac != nil {
				return mac, nil
			}
			return sender.HardwareAddr, nil
		}
	}
}

// linkLayerOption returns the link-layer address in the first option of
// type typ (1 source, 2 target), or nil.
func linkLayerOption(opts []byte, typ byte) net.HardwareAddr {
	for len(opts) >= 8 && opts[1] > 0 && int(opts[1])*8 <= len(opts) {
		if opts[0] == typ && opts[1] == 1 {
			return net.HardwareAddr(append([]byte(nil), opts[2:8]...))
		}
		opts = opts[int(opts[1])*8:]
	}
	return nil
}

// ndpPacket builds an IPv6 packet with hop limit 255 carrying a neighbour
// discovery message of type typ whose body is target.
func ndpPacket(src, dst netip.Addr, typ byte, target []byte) []byte {
	icmpLen := 8 + len(target)
	p := make([]byte, 40+icmpLen)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], uint16(icmpLen))
	p[6], p[7] = 58, 255
	s, d := src.As16(), dst.As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	p[40] = typ
	copy(p[48:], target)
	binary.BigEndian.PutUint16(p[42:44], icmp6Checksum(s, d, p[40:]))
	return p
}

// icmp6Checksum is the ICMPv6 checksum over the pseudo-header of RFC 8200
// section 8.1 and the message.
func icmp6Checksum(src, dst [16]byte, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	sum += uint32(len(msg)) + 58
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
