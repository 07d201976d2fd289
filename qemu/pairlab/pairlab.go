// Package pairlab sets up a failover pair of keel VMs for the VM tests
// and the benchmarks: two boxes whose second NICs are taps on a bridge in
// a namespace of the caller's (never the host's network), with the
// bridge's own address as the witness and the place a prober pings from.
package pairlab

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"

	"keel.dev/keel/agent/failover"
	"keel.dev/keel/agent/netcfg/nstest"
	"keel.dev/keel/qemu"
)

// The segment's addresses.
const (
	Witness = "192.168.77.1"
	Shared  = "192.168.77.100/24"
	// SharedIP is Shared without its prefix length.
	SharedIP = "192.168.77.100"
	// AutoSettings turn automatic failover on with the default timing, the
	// hub as the witness.
	AutoSettings = `{"automatic":true,"witness":"` + Witness + `"}`
)

// Box is one appliance of the pair.
type Box struct {
	Name    string // "A" or "B"
	Serial  string
	Addr    string // its own address on the segment
	MAC     string
	Tap     string // its port on the bridge
	AppPort int    // the host port forwarded to its application's 8080
	VM      *qemu.VM
}

// Do makes one API request of a box as admin.
type Do func(x *Box, method, path, body string) (int, []byte, error)

// Lab is the pair and its segment.
type Lab struct {
	NS   *nstest.Lab
	A, B *Box
	do   Do
}

// New makes the segment; Config gives each box's VM its place on it.
func New(t nstest.T, do Do) (*Lab, error) {
	l := &Lab{NS: nstest.New(t), do: do}
	l.NS.HubAddress(Witness + "/24")
	l.A = &Box{Name: "A", Serial: "KEEL-PAIR-A", Addr: "192.168.77.11", MAC: "52:54:00:77:00:0a", Tap: "tapa"}
	l.B = &Box{Name: "B", Serial: "KEEL-PAIR-B", Addr: "192.168.77.12", MAC: "52:54:00:77:00:0b", Tap: "tapb"}
	for _, x := range []*Box{l.A, l.B} {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		x.AppPort = p
	}
	return l, nil
}

// Config is c with x's segment NIC, serial and application forward.
func (l *Lab) Config(x *Box, c qemu.Config) qemu.Config {
	c.Serial, c.Segment, c.SegmentMAC = x.Serial, l.NS.Tap(x.Tap), x.MAC
	c.HostFwd = append(c.HostFwd, fmt.Sprintf("tcp:127.0.0.1:%d-:8080", x.AppPort))
	return c
}

// Prepare gives both booted boxes their own addresses on the segment and
// the same inter-appliance key, and puts the shared address on A as a
// floating address; they are not paired yet.
func (l *Lab) Prepare() error {
	for _, x := range []*Box{l.A, l.B} {
		if err := l.segmentAddress(x); err != nil {
			return err
		}
	}
	var key struct {
		Key string `json:"key"`
	}
	if err := l.call(l.A, "POST", "/api/v1/peer-key/generate", "", &key); err != nil {
		return err
	}
	if err := l.call(l.B, "PUT", "/api/v1/peer-key", fmt.Sprintf(`{"key":%q}`, key.Key), nil); err != nil {
		return err
	}
	return l.call(l.A, "POST", "/api/v1/network/floating/enable", fmt.Sprintf(`{"interface":"eth1","address":%q}`, Shared), nil)
}

// call makes a request that must succeed and reads its JSON answer into v.
func (l *Lab) call(x *Box, method, path, body string, v any) error {
	code, b, err := l.do(x, method, path, body)
	if err != nil {
		return fmt.Errorf("%s: %s %s: %w", x.Name, method, path, err)
	}
	if code/100 != 2 {
		return fmt.Errorf("%s: %s %s: %d %s", x.Name, method, path, code, b)
	}
	if v != nil {
		return json.Unmarshal(b, v)
	}
	return nil
}

// segmentAddress gives eth1 the box's own static address.
func (l *Lab) segmentAddress(x *Box) error {
	var v struct {
		Config map[string]any `json:"config"`
	}
	if err := l.call(x, "GET", "/api/v1/network", "", &v); err != nil {
		return err
	}
	var ifs []any
	for _, i := range v.Config["interfaces"].([]any) {
		if i.(map[string]any)["name"] != "eth1" {
			ifs = append(ifs, i)
		}
	}
	v.Config["interfaces"] = append(ifs, map[string]any{"name": "eth1", "enabled": true,
		"addresses": []any{map[string]any{"method": "static", "address": x.Addr + "/24", "enabled": true}}})
	b, _ := json.Marshal(v.Config)
	code, body, err := l.do(x, "PUT", "/api/v1/network", string(b))
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("%s: give eth1 %s: %d %s %v", x.Name, x.Addr, code, body, err)
	}
	return nil
}

// Establish makes primary the primary of backup; settings is JSON or "".
func (l *Lab) Establish(primary, backup *Box, settings string) error {
	body := fmt.Sprintf(`{"peer_address":%q,"reverse_address":%q`, backup.Addr, primary.Addr)
	if settings != "" {
		body += `,"settings":` + settings
	}
	if err := l.call(primary, "POST", "/api/v1/failover/establish", body+"}", nil); err != nil {
		return err
	}
	st, err := l.Status(backup)
	if err != nil {
		return err
	}
	if st.Role != "backup" {
		return fmt.Errorf("%s is %s after the establish, want backup", backup.Name, st.Role)
	}
	return nil
}

// Status is GET /api/v1/failover.
func (l *Lab) Status(x *Box) (failover.Status, error) {
	var st failover.Status
	err := l.call(x, "GET", "/api/v1/failover", "", &st)
	return st, err
}

var arpReply = regexp.MustCompile(`reply from \S+ \[([0-9A-Fa-f:]+)\]`)

// ARP asks the segment who has addr, from the hub: the MAC that answers.
func (l *Lab) ARP(addr string) string {
	out, _ := exec.Command("ip", "netns", "exec", l.NS.Hub(), "arping", "-c", "2", "-w", "3", "-I", "br0", addr).CombinedOutput()
	m := arpReply.FindStringSubmatch(string(out))
	if m == nil {
		return ""
	}
	return strings.ToLower(m[1])
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
