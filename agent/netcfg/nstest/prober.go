package nstest

import (
	"encoding/binary"
	"net"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"keel.dev/keel/agent/netcfg"
)

// Prober pings an address from a namespace every 10 ms and keeps when
// replies came: what a client on the segment sees of a takeover.
type Prober struct {
	mu sync.Mutex
	// replies are when each answered ping was sent and when its answer
	// came.
	replies []reply
	stop    chan struct{}
	done    chan struct{}
}

// StartProber starts pinging addr from the namespace named ns; it stops
// when the test ends, or at Close.
func StartProber(t T, ns, addr string) *Prober {
	t.Helper()
	h, err := netcfg.NSFromPath("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var c *icmp.PacketConn
	if err := h.Do(func() error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	p := &Prober{stop: make(chan struct{}), done: make(chan struct{})}
	dst := &net.IPAddr{IP: net.ParseIP(addr)}
	id := int(time.Now().UnixNano() & 0xffff)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && len(e.Data) >= 8 && from.(*net.IPAddr).IP.Equal(dst.IP) {
				sent := time.Unix(0, int64(binary.BigEndian.Uint64(e.Data)))
				p.mu.Lock()
				p.replies = append(p.replies, reply{sent: sent, got: time.Now()})
				p.mu.Unlock()
			}
		}
	}()
	go func() {
		defer close(p.done)
		defer c.Close()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			data := make([]byte, 8)
			binary.BigEndian.PutUint64(data, uint64(time.Now().UnixNano()))
			b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq & 0xffff, Data: data}}).Marshal(nil)
			c.WriteTo(b, dst)
		}
	}()
	t.Cleanup(p.Close)
	return p
}

// Close stops the pings.
func (p *Prober) Close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
		<-p.done
	}
}

type reply struct{ sent, got time.Time }

// FirstAfter is when the first answer to a ping sent after t0 came;
// false when none came.
func (p *Prober) FirstAfter(t0 time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.replies {
		if r.sent.After(t0) {
			return r.got, true
		}
	}
	return time.Time{}, false
}

// Gap is the longest time between answered pings sent between from and
// to (from and to count as answered): how long the address was
// unreachable.
func (p *Prober) Gap(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := from
	var longest time.Duration
	for _, r := range p.replies {
		if r.sent.Before(from) || r.sent.After(to) {
			continue
		}
		longest = max(longest, r.sent.Sub(prev))
		prev = r.sent
	}
	return max(longest, to.Sub(prev))
}
