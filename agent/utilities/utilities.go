// Package utilities runs the operator's network checks from the box: a
// TCP connection test (how operators check a failover peer's port), DNS
// lookups and ping, each bounded in count and time so the API cannot be
// used to flood a network.
package utilities

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Bounds on what one request may do.
const (
	MaxCount   = 10
	MaxTimeout = 10 * time.Second
)

// TCPResult is the outcome of a TCP connection test.
type TCPResult struct {
	Address   string  `json:"address"`
	Connected bool    `json:"connected"`
	TimeMS    float64 `json:"time_ms"`
	Error     string  `json:"error,omitempty"`
}

// TCP tries to open a TCP connection to host:port.
func TCP(ctx context.Context, host string, port int, timeout time.Duration) TCPResult {
	addr := net.JoinHostPort(host, fmt.Sprint(port))
	d := net.Dialer{Timeout: bound(timeout)}
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", addr)
	r := TCPResult{Address: addr, TimeMS: ms(time.Since(start))}
	if err != nil {
		r.Error = err.Error()
		return r
	}
	c.Close()
	r.Connected = true
	return r
}

// DNSResult is the outcome of a lookup.
type DNSResult struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses,omitempty"`
	Names     []string `json:"names,omitempty"` // for a reverse lookup
	TimeMS    float64  `json:"time_ms"`
	Error     string   `json:"error,omitempty"`
}

// DNS resolves name with the box's resolver; an IP address is looked up in
// reverse.
func DNS(ctx context.Context, r *net.Resolver, name string, timeout time.Duration) DNSResult {
	ctx, cancel := context.WithTimeout(ctx, bound(timeout))
	defer cancel()
	start := time.Now()
	res := DNSResult{Name: name}
	var err error
	if _, perr := netip.ParseAddr(name); perr == nil {
		res.Names, err = r.LookupAddr(ctx, name)
	} else {
		res.Addresses, err = r.LookupHost(ctx, name)
	}
	res.TimeMS = ms(time.Since(start))
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

// PingReply is one echo request's outcome.
type PingReply struct {
	Seq    int     `json:"seq"`
	TimeMS float64 `json:"time_ms,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// PingResult summarises a ping.
type PingResult struct {
	Address  string      `json:"address"`
	Sent     int         `json:"sent"`
	Received int         `json:"received"`
	Replies  []PingReply `json:"replies"`
}

// Ping sends count ICMP echo requests to host, one a second (the first at
// once), waiting up to timeout for each reply.
func Ping(ctx context.Context, r *net.Resolver, host string, count int, timeout time.Duration) (PingResult, error) {
	count = max(1, min(count, MaxCount))
	timeout = bound(timeout)
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return PingResult{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	ip := ips[0].Unmap()
	network, proto, typ := "ip4:icmp", 1, icmp.Type(ipv4.ICMPTypeEcho)
	if ip.Is6() {
		network, proto, typ = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest
	}
	c, err := icmp.ListenPacket(network, "")
	if err != nil {
		return PingResult{}, fmt.Errorf("open ICMP socket: %w", err)
	}
	defer c.Close()
	res := PingResult{Address: ip.String()}
	id := os.Getpid() & 0xffff
	buf := make([]byte, 1500)
	dst := &net.IPAddr{IP: net.IP(ip.AsSlice()), Zone: ip.Zone()}
	for seq := 1; seq <= count; seq++ {
		if seq > 1 {
			select {
			case <-ctx.Done():
				return res, nil
			case <-time.After(time.Second):
			}
		}
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("keel ping")}}
		b, _ := msg.Marshal(nil)
		start := time.Now()
		res.Sent++
		if _, err := c.WriteTo(b, dst); err != nil {
			res.Replies = append(res.Replies, PingReply{Seq: seq, Error: err.Error()})
			continue
		}
		reply := PingReply{Seq: seq, Error: "no reply within " + timeout.String()}
		c.SetReadDeadline(start.Add(timeout))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil {
				continue
			}
			echo, ok := m.Body.(*icmp.Echo)
			if !ok || echo.Seq != seq || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
				continue
			}
			// Raw sockets see every echo reply; ours came from dst.
			if fa, ok := from.(*net.IPAddr); !ok || !fa.IP.Equal(dst.IP) {
				continue
			}
			reply = PingReply{Seq: seq, TimeMS: ms(time.Since(start))}
			res.Received++
			break
		}
		res.Replies = append(res.Replies, reply)
	}
	return res, nil
}

func bound(d time.Duration) time.Duration {
	if d <= 0 || d > MaxTimeout {
		return 3 * time.Second
	}
	return d
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
