package netcfg

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is the network namespace a component works in. The zero value is the
// agent's own namespace, which is all production needs; tests hand in
// namespaces they create so they never touch the host's network.
type NS struct {
	h    netns.NsHandle
	open bool
}

// NSFromPath opens a namespace by its bind-mount path, e.g.
// /run/netns/NAME as made by `ip netns add NAME`.
func NSFromPath(path string) (NS, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return NS{}, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	return NS{h: h, open: true}, nil
}

// Close releases the namespace handle; the zero NS has none.
func (n *NS) Close() error {
	if !n.open {
		return nil
	}
	n.open = false
	return n.h.Close()
}

// Netlink opens a route netlink handle bound to the namespace. Only
// NETLINK_ROUTE: with no family named, the library also opens XFRM and
// netfilter sockets, which fail on a kernel without those modules loaded.
func (n NS) Netlink() (*netlink.Handle, error) {
	if !n.open {
		return netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	return netlink.NewHandleAt(n.h, unix.NETLINK_ROUTE)
}

// Do runs fn on an OS thread that is inside the namespace. Sockets fn opens
// stay in the namespace after Do returns, so this is how raw and UDP
// sockets get created for a namespace; goroutines fn starts do not inherit
// it.
func (n NS) Do(fn func() error) error {
	if !n.open {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime discards a locked thread when its
		// goroutine ends, so the namespace switch cannot leak into other
		// goroutines.
		runtime.LockOSThread()
		if err := netns.Set(n.h); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
