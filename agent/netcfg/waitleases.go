package netcfg

import (
	"context"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// leasePoll is how often WaitLeases looks at the clients and carriers.
const leasePoll = 50 * time.Millisecond

// WaitLeases returns once every link that runs a DHCP client and has a
// carrier holds a lease, or when ctx ends; then it returns the links still
// waiting for one. A link without a carrier (no cable) is not waited for:
// its client gets a lease whenever a cable and a server come. The boot
// waits here so that its ready line means the box answers on its
// addresses (before, one later boot in three printed it with the lease
// still on its way, and a client that connected at once got no answer for
// seconds).
func (m *Manager) WaitLeases(ctx context.Context) ([]string, error) {
	select {
	case <-m.ready:
	case <-ctx.Done():
	}
	// A handle of its own: the reconciler's belongs to apply.
	h, err := m.opts.NS.Netlink()
	if err != nil {
		return nil, fmt.Errorf("wait for DHCP leases: open netlink: %w", err)
	}
	defer h.Close()
	tick := time.NewTicker(leasePoll)
	defer tick.Stop()
	for {
		var waiting []string
		for _, name := range m.unleased() {
			l, err := h.LinkByName(name)
			if err == nil && l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0 {
				waiting = append(waiting, name)
			}
		}
		if len(waiting) == 0 || ctx.Err() != nil {
			return waiting, nil
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// unleased lists the links whose DHCP client holds no lease, sorted.
func (m *Manager) unleased() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for link := range m.clients {
		if _, ok := m.leases[link]; !ok {
			out = append(out, link)
		}
	}
	slices.Sort(out)
	return out
}
