package webui

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/floatip"
	"keel.dev/keel/agent/netcfg"
)

// networkView is the Networking page: GET /api/v1/network, shown as form
// fields.
type networkView struct {
	Config     netcfg.Config `json:"config"`
	Status     netcfg.Status `json:"status"`
	Interfaces []ifaceView
	Pending    *netcfg.Pending // a change waiting for its confirmation
	Countdown  int             // seconds left to confirm
	// ConfirmPath is where Pending's token is confirmed: the network
	// change's or a floating address's disable.
	ConfirmPath string
	Floating    []floatip.Address
}

// ifaceView is one interface's row of the form.
type ifaceView struct {
	Index   int
	Name    string
	Enabled bool
	DHCP    bool
	Static  string // the static addresses, one space between each
	Leases  []netcfg.Lease
}

func (u *UI) networkPage(w http.ResponseWriter, r *http.Request, ses Session) {
	u.renderNetwork(w, r, ses, http.StatusOK, "", "", nil)
}

func (u *UI) renderNetwork(w http.ResponseWriter, r *http.Request, ses Session, code int, msg, failed string, pending *netcfg.Pending) {
	u.renderNetworkConfirm(w, r, ses, code, msg, failed, pending, "")
}

func (u *UI) renderNetworkConfirm(w http.ResponseWriter, r *http.Request, ses Session, code int, msg, failed string, pending *netcfg.Pending, confirmPath string) {
	v := &networkView{}
	if e := u.get(r, ses, "/api/v1/network", v); e != "" && failed == "" {
		failed = e
	}
	for i, it := range v.Config.Interfaces {
		iv := ifaceView{Index: i, Name: ifaceName(it), Enabled: it.Enabled}
		var static []string
		for _, a := range it.Addresses {
			switch {
			case a.Shared:
			case a.Method == netcfg.MethodDHCP:
				iv.DHCP = a.Enabled
			case a.Method == "" || a.Method == netcfg.MethodStatic:
				if a.Enabled {
					static = append(static, a.Address)
				}
			}
		}
		iv.Static = strings.Join(static, " ")
		for _, l := range v.Status.Leases {
			if l.Link == it.Name {
				iv.Leases = append(iv.Leases, l)
			}
		}
		v.Interfaces = append(v.Interfaces, iv)
	}
	if pending == nil && v.Status.Pending != nil {
		// A change waits, but this browser did not make it (or reloaded):
		// without the token it can only wait for the rollback.
		msg = "a network change waits for its confirmation; unless it is confirmed by " + v.Status.Pending.RollbackAt.UTC().Format("15:04:05 UTC") + ", the previous configuration comes back"
	}
	var fl struct {
		Addresses []floatip.Address `json:"addresses"`
	}
	if e := u.get(r, ses, "/api/v1/network/floating", &fl); e != "" && failed == "" {
		failed = e
	}
	v.Floating = fl.Addresses
	if pending != nil {
		v.Pending = pending
		v.ConfirmPath = confirmPath
		if confirmPath == "" {
			v.ConfirmPath = "network"
		}
		v.Countdown = max(0, int(time.Until(pending.RollbackAt).Seconds()))
	}
	u.render(w, code, "network", page{Session: &ses, Network: v, Message: msg, Error: failed})
}

func ifaceName(it netcfg.Interface) string {
	if it.Name != "" {
		return it.Name
	}
	return it.MAC
}

// networkAction applies the form: it starts from the configuration in
// force and changes only what the form shows, so floating and SLAAC
// addresses, MACs, MTUs and static routes' metrics are kept.
func (u *UI) networkAction(w http.ResponseWriter, r *http.Request, ses Session) {
	var cur struct {
		Config netcfg.Config `json:"config"`
	}
	if e := u.get(r, ses, "/api/v1/network", &cur); e != "" {
		u.renderNetwork(w, r, ses, http.StatusBadGateway, "", e, nil)
		return
	}
	c, bad := networkForm(r, cur.Config)
	if bad != "" {
		u.renderNetwork(w, r, ses, http.StatusBadRequest, "", bad, nil)
		return
	}
	a := u.call(r, ses, http.MethodPut, "/api/v1/network", c)
	switch {
	case a.Code == http.StatusAccepted:
		var p netcfg.Pending
		json.Unmarshal(a.Body, &p)
		u.renderNetwork(w, r, ses, http.StatusAccepted, "the change is applied but may have cut this browser off: confirm it from here, as you reach the appliance now, or it is undone", "", &p)
	case !a.OK():
		u.renderNetwork(w, r, ses, a.Code, "", a.Sentence, nil)
	default:
		u.renderNetwork(w, r, ses, http.StatusOK, "the network configuration was applied and saved", "", nil)
	}
}

func (u *UI) networkConfirm(w http.ResponseWriter, r *http.Request, ses Session) {
	a := u.call(r, ses, http.MethodPost, "/api/v1/network/confirm", map[string]string{"token": r.PostFormValue("token")})
	if !a.OK() {
		u.renderNetwork(w, r, ses, a.Code, "", a.Sentence, nil)
		return
	}
	u.renderNetwork(w, r, ses, http.StatusOK, "the network change was confirmed and saved", "", nil)
}

// floatingAction enables or disables a floating address (POST
// /api/v1/network/floating/...); a disable of the address this browser
// came in on must be confirmed like a network change.
func (u *UI) floatingAction(w http.ResponseWriter, r *http.Request, ses Session) {
	do := r.PostFormValue("do")
	req := floatip.Request{Interface: r.PostFormValue("interface"), Address: strings.TrimSpace(r.PostFormValue("address")), Force: r.PostFormValue("force") == "1"}
	switch do {
	case "enable", "disable":
	case "confirm":
		a := u.call(r, ses, http.MethodPost, "/api/v1/network/floating/confirm", map[string]string{"token": r.PostFormValue("token")})
		if !a.OK() {
			u.renderNetwork(w, r, ses, a.Code, "", a.Sentence, nil)
			return
		}
		u.renderNetwork(w, r, ses, http.StatusOK, "the floating address stays released", "", nil)
		return
	default:
		u.renderNetwork(w, r, ses, http.StatusBadRequest, "", "choose enable or disable for a floating address", nil)
		return
	}
	a := u.call(r, ses, http.MethodPost, "/api/v1/network/floating/"+do, req)
	switch {
	case a.Code == http.StatusAccepted:
		var p netcfg.Pending
		json.Unmarshal(a.Body, &p)
		u.renderNetworkConfirm(w, r, ses, a.Code, "the floating address "+req.Address+" was released, and this browser came in on it: confirm from where you reach the appliance now, or it is taken back", "", &p, "floating")
	case !a.OK():
		u.renderNetwork(w, r, ses, a.Code, "", a.Sentence, nil)
	default:
		u.renderNetwork(w, r, ses, http.StatusOK, "the floating address "+req.Address+" on "+req.Interface+" was "+do+"d", "", nil)
	}
}

// networkForm is c with the form's fields put in.
func networkForm(r *http.Request, c netcfg.Config) (netcfg.Config, string) {
	c.Hostname = strings.TrimSpace(r.PostFormValue("hostname"))
	c.DNS.Servers = fields(r.PostFormValue("dns_servers"))
	c.DNS.Search = fields(r.PostFormValue("dns_search"))
	c.NTPServers = fields(r.PostFormValue("ntp_servers"))
	gws, bad := gatewaysForm(r.PostFormValue("gateways"))
	if bad != "" {
		return c, bad
	}
	c.Gateways = gws
	routes, bad := routesForm(r.PostFormValue("routes"))
	if bad != "" {
		return c, bad
	}
	c.Routes = routes
	ifs := make([]netcfg.Interface, len(c.Interfaces))
	copy(ifs, c.Interfaces)
	for i := range ifs {
		p := "if" + strconv.Itoa(i) + "_"
		if r.PostFormValue(p+"present") != "1" {
			continue // not on the form (added meanwhile): unchanged
		}
		it := &ifs[i]
		it.Enabled = r.PostFormValue(p+"enabled") == "1"
		dhcp := r.PostFormValue(p+"mode") == "dhcp"
		var kept []netcfg.Address
		for _, a := range it.Addresses {
			if a.Shared || a.Method == netcfg.MethodSLAAC {
				kept = append(kept, a)
			}
		}
		if dhcp {
			kept = append(kept, netcfg.Address{Method: netcfg.MethodDHCP, Enabled: true})
		}
		for _, s := range fields(r.PostFormValue(p + "static")) {
			kept = append(kept, netcfg.Address{Method: netcfg.MethodStatic, Address: s, Enabled: true})
		}
		it.Addresses = kept
	}
	c.Interfaces = ifs
	return c, ""
}

// fields splits a text field on spaces, commas and line breaks.
func fields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

// gatewaysForm reads one gateway a line: "ADDRESS [dev INTERFACE] [metric N]".
func gatewaysForm(text string) ([]netcfg.Gateway, string) {
	var out []netcfg.Gateway
	for i, line := range lines(text) {
		f := strings.Fields(line)
		g := netcfg.Gateway{Via: f[0]}
		if bad := options(f[1:], &g.Interface, &g.Metric); bad != "" {
			return nil, "gateways, line " + strconv.Itoa(i+1) + ": " + bad
		}
		out = append(out, g)
	}
	return out, ""
}

// routesForm reads one route a line: "DESTINATION [via ADDRESS] [dev INTERFACE] [metric N]".
func routesForm(text string) ([]netcfg.Route, string) {
	var out []netcfg.Route
	for i, line := range lines(text) {
		f := strings.Fields(line)
		rt := netcfg.Route{Destination: f[0]}
		rest := f[1:]
		if len(rest) >= 2 && rest[0] == "via" {
			rt.Via, rest = rest[1], rest[2:]
		}
		if bad := options(rest, &rt.Interface, &rt.Metric); bad != "" {
			return nil, "static routes, line " + strconv.Itoa(i+1) + ": " + bad
		}
		out = append(out, rt)
	}
	return out, ""
}

func options(f []string, dev *string, metric *int) string {
	for len(f) > 0 {
		if len(f) < 2 {
			return "“" + f[0] + "” needs a value; write “dev eth0” or “metric 100”"
		}
		switch f[0] {
		case "dev":
			*dev = f[1]
		case "metric":
			n, err := strconv.Atoi(f[1])
			if err != nil || n < 0 {
				return "the metric must be a whole number"
			}
			*metric = n
		default:
			return "“" + f[0] + "” is not understood; write “dev INTERFACE” or “metric N”"
		}
		f = f[2:]
	}
	return ""
}

func lines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// gatewayLines and routeLines show the configuration in the form's syntax.
func gatewayLines(gs []netcfg.Gateway) string {
	var b strings.Builder
	for _, g := range gs {
		b.WriteString(g.Via)
		opts(&b, g.Interface, g.Metric)
		b.WriteByte('\n')
	}
	return b.String()
}

func routeLines(rs []netcfg.Route) string {
	var b strings.Builder
	for _, rt := range rs {
		b.WriteString(rt.Destination)
		if rt.Via != "" {
			b.WriteString(" via " + rt.Via)
		}
		opts(&b, rt.Interface, rt.Metric)
		b.WriteByte('\n')
	}
	return b.String()
}

func opts(b *strings.Builder, dev string, metric int) {
	if dev != "" {
		b.WriteString(" dev " + dev)
	}
	if metric != 0 {
		b.WriteString(" metric " + strconv.Itoa(metric))
	}
}

// auditPage is the audit log, newest first.
func (u *UI) auditPage(w http.ResponseWriter, r *http.Request, ses Session) {
	var l api.AuditLog
	failed := u.get(r, ses, "/api/v1/audit?limit=200", &l)
	u.render(w, http.StatusOK, "audit", page{Session: &ses, Audit: l.Entries, Error: failed})
}
