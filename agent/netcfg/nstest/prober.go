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
	mu      sync.Mutex
	replies []time.Time
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
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && from.(*net.IPAddr).IP.Equal(dst.IP) {
				p.mu.Lock()
				p.replies = append(p.replies, time.Now())
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

// FirstAfter is the first reply after t0; false when none came.
func (p *Prober) FirstAfter(t0 time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.replies {
		if r.After(t0) {
			return r, true
		}
	}
	return time.Time{}, false
}

// LastBefore is the last reply before t0.
func (p *Prober) LastBefore(t0 time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, r := range p.replies {
		if r.Before(t0) {
			last = r
		}
	}
	return last
}

// Gap is the longest time without a reply between from and to.
func (p *Prober) Gap(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := from
	var longest time.Duration
	for _, r := range p.replies {
		if r.Before(from) || r.After(to) {
			continue
		}
		longest = max(longest, r.Sub(prev))
		prev = r
	}
	return max(longest, to.Sub(prev))
}
