package floatip

import (
	"fmt"
	"net"
	"net/netip"

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
