package floatip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// arpConn is a raw ARP socket on one link; the kernel adds and strips the
// Ethernet header.
type arpConn struct {
	c   *packet.Conn
	mac net.HardwareAddr
}

func openARP(ifi *net.Interface) (*arpConn, error) {
	c, err := packet.Listen(ifi, packet.Datagram, unix.ETH_P_ARP, nil)
	if err != nil {
		return nil, fmt.Errorf("open ARP socket on %s: %w", ifi.Name, err)
	}
	return &arpConn{c: c, mac: ifi.HardwareAddr}, nil
}

func (a *arpConn) Close() error { return a.c.Close() }

func (a *arpConn) send(op arp.Operation, senderIP, targetIP netip.Addr) error {
	p, err := arp.NewPacket(op, a.mac, senderIP, net.HardwareAddr{0, 0, 0, 0, 0, 0}, targetIP)
	if err != nil {
		return err
	}
	b, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = a.c.WriteTo(b, &packet.Addr{HardwareAddr: broadcast})
	return err
}

// probe sends RFC 5227 ARP probes for ip (sender address 0.0.0.0, so no
// neighbour learns anything from them) and listens until wait has passed
// since the last one. It returns the MAC of a host that uses ip, or nil.
func (a *arpConn) probe(ip netip.Addr, probes int, interval, wait time.Duration) (net.HardwareAddr, error) {
	var deadline time.Time
	for i := 0; i < probes; i++ {
		if err := a.send(arp.OperationRequest, netip.IPv4Unspecified(), ip); err != nil {
			return nil, fmt.Errorf("send ARP probe for %s: %w", ip, err)
		}
		deadline = time.Now().Add(interval)
		if i == probes-1 {
			deadline = time.Now().Add(wait)
		}
		if owner, err := a.listen(ip, deadline); owner != nil || err != nil {
			return owner, err
		}
	}
	return nil, nil
}

// listen reads ARP until deadline for a sign that another host holds ip:
// any ARP from ip, or another host's probe for it (RFC 5227 section 2.1.1).
func (a *arpConn) listen(ip netip.Addr, deadline time.Time) (net.HardwareAddr, error) {
	buf := make([]byte, 1500)
	for {
		if err := a.c.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		n, _, err := a.c.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read ARP: %w", err)
		}
		var p arp.Packet
		if p.UnmarshalBinary(buf[:n]) != nil || p.SenderHardwareAddr.String() == a.mac.String() {
			continue
		}
		if p.SenderIP == ip || (p.Operation == arp.OperationRequest && p.SenderIP.IsUnspecified() && p.TargetIP == ip) {
			return p.SenderHardwareAddr, nil
		}
	}
}

// announce sends a gratuitous ARP request (sender and target both ip), as
// `arping -U` does: neighbours that have an entry for ip take our MAC.
func (a *arpConn) announce(ip netip.Addr) error {
	if err := a.send(arp.OperationRequest, ip, ip); err != nil {
		return fmt.Errorf("send gratuitous ARP for %s: %w", ip, err)
	}
	return nil
}
