package failover

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// checkWindow is how long the checks before a takeover may take: the
// monitor starts them this much ahead of the detection time at most.
const checkWindow = 350 * time.Millisecond

// check runs, at once, the two checks a takeover needs: the witness
// answers an echo request (this box is not the one cut off), and no host
// answers for a shared address (the primary's system is not up with only
// its heartbeats lost).
func (s *Service) check(ctx context.Context, started time.Time) checkResult {
	r := checkResult{started: started}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w, err := s.witness()
		if err != nil {
			r.witness, r.why = "(none)", err.Error()
			return
		}
		r.witness = w.String()
		echo := s.echo
		if s.Echo != nil {
			echo = s.Echo
		}
		if err := echo(ctx, w, checkWindow); err != nil {
			r.why = err.Error()
			return
		}
		r.witnessOK = true
	}()
	var mu sync.Mutex
	for _, a := range s.State().Shared {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var owner net.HardwareAddr
			err := s.forShared(a, func(link string, p netip.Prefix) error {
				var err error
				owner, err = s.Floating.Probe(link, p)
				return err
			})
			if err != nil {
				s.log().Warn("the shared address could not be probed before a takeover", "address", a.Address, "err", err)
				return
			}
			if owner != nil {
				mu.Lock()
				r.owner, r.ownerAddr = owner, a.Address
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return r
}

// witness is the address that must answer: the configured one, else the
// default gateway.
func (s *Service) witness() (netip.Addr, error) {
	if w := s.State().Settings.Witness; w != "" {
		return netip.ParseAddr(w)
	}
	if s.Gateway == nil {
		return netip.Addr{}, fmt.Errorf("no witness is configured and there is no default gateway to ask; set a witness")
	}
	gw, err := s.Gateway()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no witness is configured and the default gateway is unknown (%v); set a witness", err)
	}
	return gw, nil
}

// echo sends ICMP echo requests to addr every 100 ms until one is
// answered or window passes.
func (s *Service) echo(ctx context.Context, addr netip.Addr, window time.Duration) error {
	network, proto, typ, reply := "ip4:icmp", 1, icmp.Type(ipv4.ICMPTypeEcho), icmp.Type(ipv4.ICMPTypeEchoReply)
	if addr.Is6() {
		network, proto, typ, reply = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var c *icmp.PacketConn
	if err := s.NS.Do(func() error {
		var err error
		c, err = icmp.ListenPacket(network, "")
		return err
	}); err != nil {
		return fmt.Errorf("open an ICMP socket: %w", err)
	}
	defer c.Close()
	var b [2]byte
	rand.Read(b[:])
	id := int(binary.BigEndian.Uint16(b[:]))
	dst := &net.IPAddr{IP: net.IP(addr.AsSlice())}
	deadline := time.Now().Add(window)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	buf := make([]byte, 1500)
	for seq := 1; time.Now().Before(deadline); seq++ {
		msg, _ := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("keel witness")}}).Marshal(nil)
		if _, err := c.WriteTo(msg, dst); err != nil {
			return fmt.Errorf("no route to it (%v)", err)
		}
		next := time.Now().Add(100 * time.Millisecond)
		if next.After(deadline) {
			next = deadline
		}
		c.SetReadDeadline(next)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || m.Type != reply {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id {
				if fa, ok := from.(*net.IPAddr); ok && fa.IP.Equal(dst.IP) {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("no answer within %s", window)
}
