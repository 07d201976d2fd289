package utilities

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Bounds on a traceroute: one probe per hop, so at most MaxHops probes,
// and never longer than MaxTraceTime whatever the per-probe timeout.
const (
	MaxHops      = 30
	MaxTraceTime = 30 * time.Second
	// DefaultQueries probes per hop, as traceroute(8) sends: several
	// times show the spread of a hop's delay, and on a load-balanced path
	// more than one router at a hop.
	DefaultQueries = 3
	MaxQueries     = 5
	// DefaultProbeTimeout is the wait for each hop's answer when the
	// request gives none; routers answer in milliseconds or not at all.
	DefaultProbeTimeout = time.Second
	// udpBasePort is where UDP probes start, as in traceroute(8): high,
	// unlikely to be listened on, so the destination answers port
	// unreachable.
	udpBasePort = 33434
)

// Probe kinds.
const (
	ProbeICMP = "icmp" // echo requests; the destination answers with an echo reply
	ProbeUDP  = "udp"  // datagrams to high ports; the destination answers port unreachable
)

// TraceOptions bound a traceroute; zero values take the defaults.
type TraceOptions struct {
	MaxHops int           // at most MaxHops; default MaxHops
	Timeout time.Duration // per probe; default DefaultProbeTimeout, at most MaxTimeout
	Limit   time.Duration // whole trace; default and at most MaxTraceTime
	Probe   string        // ProbeICMP (default) or ProbeUDP
	Queries int           // probes per hop; default DefaultQueries, at most MaxQueries
}

// TraceHop is the answers for one TTL. Address and TimeMS are the first
// answer's; Probes has every probe's.
type TraceHop struct {
	TTL     int          `json:"ttl"`
	Address string       `json:"address,omitempty"` // who answered first; empty when nobody did
	TimeMS  float64      `json:"time_ms,omitempty"`
	Error   string       `json:"error,omitempty"` // no probe answered, or the destination is unreachable
	Probes  []TraceProbe `json:"probes"`
}

// TraceProbe is one probe's answer.
type TraceProbe struct {
	Address string  `json:"address,omitempty"`
	TimeMS  float64 `json:"time_ms,omitempty"`
	Error   string  `json:"error,omitempty"`
}

// TraceResult is a whole traceroute.
type TraceResult struct {
	Address string     `json:"address"`
	Probe   string     `json:"probe"`
	Reached bool       `json:"reached"`
	Hops    []TraceHop `json:"hops"`
	Error   string     `json:"error,omitempty"` // why it stopped before reaching the destination
}

// Traceroute sends opts.Queries probes per TTL, 1 and up, toward host and
// records who answers: routers with ICMP time exceeded, the destination with an
// echo reply (ICMP probes) or port unreachable (UDP probes). It stops at
// the destination, at an unreachable error, after opts.MaxHops, or when
// opts.Limit or ctx ends. It needs a raw ICMP socket (root or
// CAP_NET_RAW) and works in the calling thread's network namespace.
func Traceroute(ctx context.Context, r *net.Resolver, host string, opts TraceOptions) (TraceResult, error) {
	if opts.MaxHops <= 0 || opts.MaxHops > MaxHops {
		opts.MaxHops = MaxHops
	}
	if opts.Timeout <= 0 || opts.Timeout > MaxTimeout {
		opts.Timeout = DefaultProbeTimeout
	}
	if opts.Limit <= 0 || opts.Limit > MaxTraceTime {
		opts.Limit = MaxTraceTime
	}
	if opts.Queries <= 0 || opts.Queries > MaxQueries {
		opts.Queries = DefaultQueries
	}
	switch opts.Probe {
	case "":
		opts.Probe = ProbeICMP
	case ProbeICMP, ProbeUDP:
	default:
		return TraceResult{}, fmt.Errorf("probe %q: must be %q or %q", opts.Probe, ProbeICMP, ProbeUDP)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Limit)
	defer cancel()
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return TraceResult{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	t, err := newTracer(ips[0].Unmap(), opts.Probe)
	if err != nil {
		return TraceResult{}, err
	}
	defer t.close()
	res := TraceResult{Address: t.dst.String(), Probe: opts.Probe, Hops: []TraceHop{}}
	for ttl := 1; ttl <= opts.MaxHops; ttl++ {
		hop := TraceHop{TTL: ttl, Probes: []TraceProbe{}}
		done := false
		for q := range opts.Queries {
			// Checked against the clock as well: the context's own timer
			// may fire a moment after its deadline.
			if d, _ := ctx.Deadline(); ctx.Err() != nil || !time.Now().Before(d) {
				if len(hop.Probes) > 0 {
					res.Hops = append(res.Hops, hop.summed())
				}
				res.Error = fmt.Sprintf("stopped after %v, the time limit", opts.Limit)
				return res, nil
			}
			p, kind := t.send(ctx, (ttl-1)*opts.Queries+q+1, ttl, opts.Timeout)
			hop.Probes = append(hop.Probes, p)
			switch kind {
			case answerDest:
				done, res.Reached = true, true
			case answerUnreachable:
				done = true
			}
		}
		hop = hop.summed()
		res.Hops = append(res.Hops, hop)
		if done {
			if !res.Reached {
				res.Error = hop.Error
			}
			return res, nil
		}
	}
	res.Error = fmt.Sprintf("not reached within %d hops", opts.MaxHops)
	return res, nil
}

// summed fills the hop's own fields from its probes: the first answer, or
// the first probe's error when none answered. A destination that said it
// is unreachable makes that the hop's error.
func (h TraceHop) summed() TraceHop {
	for _, p := range h.Probes {
		if p.Address != "" && h.Address == "" {
			h.Address, h.TimeMS = p.Address, p.TimeMS
		}
		if p.Address != "" && p.Error != "" && h.Error == "" {
			h.Error = p.Error // someone answered "unreachable"
		}
	}
	if h.Address == "" && len(h.Probes) > 0 {
		h.Error = h.Probes[0].Error
	}
	return h
}

// tracer holds the sockets of one traceroute: the raw ICMP socket every
// answer arrives on, and for UDP probes the socket they leave from.
type tracer struct {
	dst  netip.Addr
	v6   bool
	icmp *icmp.PacketConn
	udp  net.PacketConn
	id   uint16 // echo identifier (ICMP) or source port (UDP)
}

func newTracer(dst netip.Addr, kind string) (*tracer, error) {
	t := &tracer{dst: dst, v6: dst.Is6()}
	network, laddr := "ip4:icmp", "0.0.0.0"
	if t.v6 {
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	c, err := icmp.ListenPacket(network, laddr)
	if err != nil {
		return nil, fmt.Errorf("open ICMP socket: %w", err)
	}
	t.icmp = c
	if kind == ProbeUDP {
		udpNet := "udp4"
		if t.v6 {
			udpNet = "udp6"
		}
		u, err := net.ListenPacket(udpNet, ":0")
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("open UDP socket: %w", err)
		}
		t.udp = u
		t.id = uint16(u.LocalAddr().(*net.UDPAddr).Port)
	} else {
		// A random identifier keeps two traceroutes (and pings) from
		// taking each other's answers.
		var b [2]byte
		rand.Read(b[:])
		t.id = binary.BigEndian.Uint16(b[:])
	}
	return t, nil
}

func (t *tracer) close() {
	t.icmp.Close()
	if t.udp != nil {
		t.udp.Close()
	}
}

// send sends probe number seq with ttl and waits for its answer, saying
// what kind of answer it was (answerNone when nobody answered).
func (t *tracer) send(ctx context.Context, seq, ttl int, timeout time.Duration) (TraceProbe, answer) {
	var p TraceProbe
	start := time.Now()
	if err := t.write(seq, ttl); err != nil {
		p.Error = err.Error()
		return p, answerNone
	}
	deadline := start.Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	t.icmp.SetReadDeadline(deadline)
	buf := make([]byte, 1500)
	for {
		n, from, err := t.icmp.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			p.Error = "no answer within " + timeout.String()
			return p, answerNone
		}
		if err != nil {
			p.Error = fmt.Sprintf("read ICMP: %v", err)
			return p, answerNone
		}
		addr := ""
		if ip, ok := from.(*net.IPAddr); ok {
			addr = ip.IP.String()
		}
		kind, ok := t.match(buf[:n], seq, addr)
		if !ok {
			continue
		}
		p.Address, p.TimeMS = addr, ms(time.Since(start))
		if kind == answerUnreachable {
			p.Error = fmt.Sprintf("%s answered that %s is unreachable", addr, t.dst)
		}
		return p, kind
	}
}

// write sends probe seq with ttl; seq tells its answer from any other's.
func (t *tracer) write(seq, ttl int) error {
	dst := &net.IPAddr{IP: net.IP(t.dst.AsSlice())}
	if t.udp != nil {
		var err error
		if t.v6 {
			err = ipv6.NewPacketConn(t.udp).SetHopLimit(ttl)
		} else {
			err = ipv4.NewPacketConn(t.udp).SetTTL(ttl)
		}
		if err != nil {
			return fmt.Errorf("set TTL %d: %w", ttl, err)
		}
		// Each probe gets its own port, so a late answer is not taken for
		// the next probe's.
		if _, err := t.udp.WriteTo([]byte("keel traceroute"), &net.UDPAddr{IP: dst.IP, Port: udpBasePort + seq - 1}); err != nil {
			return fmt.Errorf("send UDP probe: %w", err)
		}
		return nil
	}
	var typ icmp.Type = ipv4.ICMPTypeEcho
	var err error
	if t.v6 {
		typ = ipv6.ICMPTypeEchoRequest
		err = t.icmp.IPv6PacketConn().SetHopLimit(ttl)
	} else {
		err = t.icmp.IPv4PacketConn().SetTTL(ttl)
	}
	if err != nil {
		return fmt.Errorf("set TTL %d: %w", ttl, err)
	}
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: int(t.id), Seq: seq, Data: []byte("keel traceroute")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := t.icmp.WriteTo(b, dst); err != nil {
		return fmt.Errorf("send ICMP probe: %w", err)
	}
	return nil
}

type answer int

const (
	answerNone        answer = iota // nobody answered
	answerHop                       // time exceeded: a router on the way
	answerDest                      // the destination itself
	answerUnreachable               // someone says the destination cannot be reached
)

// match decides whether an ICMP message read from the raw socket answers
// probe seq and what it says. A raw socket sees every ICMP message
// the host receives, so everything else is skipped.
func (t *tracer) match(b []byte, seq int, from string) (answer, bool) {
	proto := 1
	if t.v6 {
		proto = 58
	}
	m, err := icmp.ParseMessage(proto, b)
	if err != nil {
		return 0, false
	}
	switch body := m.Body.(type) {
	case *icmp.Echo:
		ok := t.udp == nil && (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) &&
			uint16(body.ID) == t.id && body.Seq == seq && from == t.dst.String()
		return answerDest, ok
	case *icmp.TimeExceeded:
		return answerHop, t.ours(body.Data, seq)
	case *icmp.DstUnreach:
		if !t.ours(body.Data, seq) {
			return 0, false
		}
		// Port unreachable from the destination is the expected end of
		// a UDP trace; anything else means it cannot be reached.
		portUnreach := (!t.v6 && m.Code == 3) || (t.v6 && m.Code == 4)
		if portUnreach && from == t.dst.String() {
			return answerDest, true
		}
		return answerUnreachable, true
	}
	return 0, false
}

// ours reports whether the datagram quoted in an ICMP error (its IP header
// and at least the first 8 bytes of its payload) is probe seq.
func (t *tracer) ours(quoted []byte, seq int) bool {
	var proto byte
	var dst netip.Addr
	var payload []byte
	if t.v6 {
		if len(quoted) < 48 {
			return false
		}
		proto, dst, payload = quoted[6], netip.AddrFrom16([16]byte(quoted[24:40])), quoted[40:]
	} else {
		if len(quoted) < 28 {
			return false
		}
		ihl := int(quoted[0]&0x0f) * 4
		if ihl < 20 || len(quoted) < ihl+8 {
			return false
		}
		proto, dst, payload = quoted[9], netip.AddrFrom4([4]byte(quoted[16:20])), quoted[ihl:]
	}
	if dst != t.dst {
		return false
	}
	if t.udp != nil {
		return proto == 17 && binary.BigEndian.Uint16(payload[0:2]) == t.id &&
			int(binary.BigEndian.Uint16(payload[2:4])) == udpBasePort+seq-1
	}
	echo := byte(8)
	if t.v6 {
		echo = 128
	}
	return (proto == 1 || proto == 58) && payload[0] == echo &&
		binary.BigEndian.Uint16(payload[4:6]) == t.id && int(binary.BigEndian.Uint16(payload[6:8])) == seq
}
