package netcfg

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"keel.dev/keel/agent/api"
)

// FieldError is one problem with a configuration, naming the field in the
// JSON path form an operator can find it by, e.g. "interfaces[0].mtu".
type FieldError = api.FieldError

// ValidationError lists every problem found, so an operator can fix them
// all in one round.
type ValidationError []FieldError

func (v ValidationError) Error() string {
	parts := make([]string, len(v))
	for i, e := range v {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// subnet is a configured static address with what it says about reachability.
type subnet struct {
	prefix  netip.Prefix
	iface   int  // index into Config.Interfaces
	enabled bool // the address and its interface are both enabled
}

// Validate checks c without looking at the machine; the reconciler reports
// what only the machine can tell (a link that is not there).
func (c Config) Validate() error {
	var errs ValidationError
	bad := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
	}

	var subnets []subnet
	seenIface := map[string]string{}
	seenAddr := map[netip.Addr]string{}
	for i, ifc := range c.Interfaces {
		f := fmt.Sprintf("interfaces[%d]", i)
		if ifc.Name == "" && ifc.MAC == "" {
			bad(f, "needs a name or a mac to match a link")
		}
		if ifc.Name != "" {
			if err := checkLinkName(ifc.Name); err != nil {
				bad(f+".name", "%q %s", ifc.Name, err)
			} else if prev, ok := seenIface["name "+ifc.Name]; ok {
				bad(f+".name", "%q is already configured in %s", ifc.Name, prev)
			} else {
				seenIface["name "+ifc.Name] = f
			}
		}
		if ifc.MAC != "" {
			if hw, err := net.ParseMAC(ifc.MAC); err != nil || len(hw) != 6 {
				bad(f+".mac", "%q is not an Ethernet MAC address (e.g. 52:54:00:12:34:56)", ifc.MAC)
			} else if prev, ok := seenIface["mac "+hw.String()]; ok {
				bad(f+".mac", "%s is already configured in %s", hw, prev)
			} else {
				seenIface["mac "+hw.String()] = f
			}
		}
		if ifc.MTU != 0 && (ifc.MTU < 68 || ifc.MTU > 65535) {
			bad(f+".mtu", "%d is out of range (68 to 65535, or 0 to keep the link's own)", ifc.MTU)
		}
		methods := map[Method]bool{}
		for j, a := range ifc.Addresses {
			af := fmt.Sprintf("%s.addresses[%d]", f, j)
			switch m := a.method(); m {
			case MethodDHCP, MethodSLAAC:
				if a.Address != "" {
					bad(af+".address", "must be empty for method %q", m)
				}
				if a.Shared {
					bad(af+".shared", "only a static address can be shared")
				}
				if methods[m] {
					bad(af+".method", "%q is listed twice on this interface", m)
				}
				methods[m] = true
			case MethodStatic:
				p, err := netip.ParsePrefix(a.Address)
				if err != nil {
					bad(af+".address", "%q is not a valid CIDR (e.g. 192.0.2.10/24 or 2001:db8::10/64)", a.Address)
					continue
				}
				ip := p.Addr()
				if ip.Is4In6() {
					bad(af+".address", "%q is an IPv4-mapped IPv6 address; write it as IPv4", a.Address)
					continue
				}
				if !ip.IsGlobalUnicast() && !ip.IsPrivate() {
					bad(af+".address", "%s is not a unicast host address", ip)
					continue
				}
				if ip.Is4() && p.Bits() < 31 && (ip == p.Masked().Addr() || ip == lastAddr(p)) {
					bad(af+".address", "%s is the network or broadcast address of %s", ip, p.Masked())
					continue
				}
				if prev, ok := seenAddr[ip]; ok {
					bad(af+".address", "%s duplicates the address in %s", ip, prev)
					continue
				}
				seenAddr[ip] = af
				if ip.Is6() && ifc.MTU != 0 && ifc.MTU < 1280 {
					bad(f+".mtu", "%d is below 1280, the IPv6 minimum, and the interface has IPv6 address %s", ifc.MTU, ip)
				}
				subnets = append(subnets, subnet{prefix: p, iface: i, enabled: a.Enabled && ifc.Enabled})
			default:
				bad(af+".method", "%q is not one of static, dhcp, slaac", a.Method)
			}
		}
	}

	for k, g := range c.Gateways {
		f := fmt.Sprintf("gateways[%d]", k)
		gw, err := netip.ParseAddr(g.Via)
		if err != nil {
			bad(f+".via", "%q is not an IP address", g.Via)
			continue
		}
		if g.Metric < 0 {
			bad(f+".metric", "%d is negative", g.Metric)
		}
		c.checkNextHop(f, gw, g.Interface, subnets, bad)
	}

	for k, r := range c.Routes {
		f := fmt.Sprintf("routes[%d]", k)
		dst, err := netip.ParsePrefix(r.Destination)
		if err != nil {
			bad(f+".destination", "%q is not a valid CIDR (e.g. 10.20.0.0/16)", r.Destination)
			continue
		}
		if dst != dst.Masked() {
			bad(f+".destination", "%s has host bits set; the network is %s", dst, dst.Masked())
		}
		if dst.Bits() == 0 {
			bad(f+".destination", "%s is a default route; list it under gateways", dst)
		}
		if r.Metric < 0 {
			bad(f+".metric", "%d is negative", r.Metric)
		}
		if r.Via == "" {
			if r.Interface == "" {
				bad(f, "needs a via gateway, an interface, or both")
				continue
			}
			c.checkLink(f+".interface", r.Interface, bad)
			continue
		}
		gw, err := netip.ParseAddr(r.Via)
		if err != nil {
			bad(f+".via", "%q is not an IP address", r.Via)
			continue
		}
		if gw.Is4() != dst.Addr().Is4() {
			bad(f+".via", "%s is not of the same IP family as %s", gw, dst)
			continue
		}
		c.checkNextHop(f, gw, r.Interface, subnets, bad)
	}

	for k, s := range c.DNS.Servers {
		if _, err := netip.ParseAddr(s); err != nil {
			bad(fmt.Sprintf("dns.servers[%d]", k), "%q is not an IP address", s)
		}
	}
	if len(c.DNS.Search) > 6 {
		bad("dns.search", "has %d domains; the resolver uses at most 6", len(c.DNS.Search))
	}
	for k, d := range c.DNS.Search {
		if !validHostname(d, 253) {
			bad(fmt.Sprintf("dns.search[%d]", k), "%q is not a domain name", d)
		}
	}
	if c.Hostname != "" && !validHostname(c.Hostname, 64) {
		bad("hostname", "%q is not a host name (letters, digits and hyphens in dot-separated labels, at most 64 characters)", c.Hostname)
	}
	for k, s := range c.NTPServers {
		// The time service takes "host" or "host:port" (a server on a
		// non-standard port); so must its configuration.
		host := s
		if h, port, err := net.SplitHostPort(s); err == nil {
			if n, perr := strconv.Atoi(port); perr == nil && n > 0 && n < 65536 {
				host = h
			}
		}
		if _, err := netip.ParseAddr(host); err != nil && !validHostname(host, 253) {
			bad(fmt.Sprintf("ntp_servers[%d]", k), "%q is neither an IP address nor a host name (with an optional :port)", s)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// checkNextHop checks that gateway gw (for the gateway or route at field f,
// optionally pinned to interface ref) is reachable through a configured,
// enabled link.
func (c Config) checkNextHop(f string, gw netip.Addr, ref string, subnets []subnet, bad func(string, string, ...any)) {
	idx := -1
	if ref != "" {
		if idx = c.checkLink(f+".interface", ref, bad); idx < 0 {
			return
		}
	}
	if gw.Is6() && gw.IsLinkLocalUnicast() {
		if idx < 0 {
			bad(f+".interface", "is needed: %s is link-local", gw)
		}
		return
	}
	onDisabled := ""
	for _, s := range subnets {
		if !s.prefix.Contains(gw) || (idx >= 0 && s.iface != idx) {
			continue
		}
		if s.enabled {
			return
		}
		onDisabled = c.Interfaces[s.iface].Key()
	}
	// A dynamic address's subnet is unknown until the lease or router
	// advertisement arrives, so a gateway pinned to such an interface is
	// taken on trust.
	if idx >= 0 {
		ifc := c.Interfaces[idx]
		if (gw.Is4() && ifc.UsesDHCP()) || (gw.Is6() && ifc.UsesSLAAC()) {
			return
		}
	}
	if onDisabled != "" {
		bad(f+".via", "%s is only reachable through %s, whose address or link is disabled", gw, onDisabled)
		return
	}
	bad(f+".via", "%s is on no configured subnet", gw)
}

// checkLink resolves ref to an enabled configured interface and returns its
// index, or reports the problem and returns -1.
func (c Config) checkLink(f, ref string, bad func(string, string, ...any)) int {
	for i, ifc := range c.Interfaces {
		if ifc.refersTo(ref) {
			if !ifc.Enabled {
				bad(f, "%s is disabled; a route cannot go through a down link", ref)
				return -1
			}
			return i
		}
	}
	bad(f, "%s is not a configured interface", ref)
	return -1
}

func checkLinkName(n string) error {
	if len(n) > 15 {
		return fmt.Errorf("is longer than 15 characters")
	}
	if n == "." || n == ".." || strings.ContainsAny(n, "/: \t\n") {
		return fmt.Errorf("is not a valid link name")
	}
	return nil
}

func validHostname(s string, max int) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > max {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
