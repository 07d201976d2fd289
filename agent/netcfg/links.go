package netcfg

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// PhysicalLinks brings up every non-loopback device link and returns those
// that report a carrier within wait. It works in the agent's namespace; it
// is what the agent runs before any configuration exists.
func PhysicalLinks(wait time.Duration) ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var names []string
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || l.Type() != "device" {
			continue
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("bring up %s: %w", a.Name, err)
		}
		names = append(names, a.Name)
	}
	deadline := time.Now().Add(wait)
	var up []string
	for _, n := range names {
		for {
			if b, _ := os.ReadFile("/sys/class/net/" + n + "/carrier"); strings.TrimSpace(string(b)) == "1" {
				up = append(up, n)
				break
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return up, nil
}
