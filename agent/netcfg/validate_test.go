package netcfg_test

import (
	"encoding/json"
	"strings"
	"testing"

	"keel.dev/keel/agent/netcfg"
)

func TestValidateNamesFieldAndProblem(t *testing.T) {
	for _, tc := range []struct{ name, config, want string }{
		{"bad CIDR", `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.0.0.300/24"}]}]}`,
			`interfaces[0].addresses[0].address: "10.0.0.300/24" is not a valid CIDR`},
		{"missing prefix length", `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.0.0.3"}]}]}`,
			`interfaces[0].addresses[0].address: "10.0.0.3" is not a valid CIDR`},
		{"gateway off subnet", `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.0.0.2/24"}]}],"gateways":[{"via":"192.168.9.1"}]}`,
			`gateways[0].via: 192.168.9.1 is on no configured subnet`},
		{"duplicate address", `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.0.0.2/24"}]},{"name":"eth1","addresses":[{"address":"10.0.0.2/16"}]}]}`,
			`interfaces[1].addresses[0].address: 10.0.0.2 duplicates the address in interfaces[0].addresses[0]`},
		{"route through disabled link", `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.0.0.2/24"}]},{"name":"eth1","enabled":false,"addresses":[{"address":"10.1.0.2/24"}]}],"routes":[{"destination":"10.20.0.0/16","via":"10.1.0.1","interface":"eth1"}]}`,
			`routes[0].interface: eth1 is disabled; a route cannot go through a down link`},
		{"route via disabled address", `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.0.0.2/24","enabled":false}]}],"routes":[{"destination":"10.20.0.0/16","via":"10.0.0.1"}]}`,
			`routes[0].via: 10.0.0.1 is only reachable through eth0, whose address or link is disabled`},
		{"route host bits", `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.0.0.2/24"}]}],"routes":[{"destination":"10.20.0.1/16","via":"10.0.0.1"}]}`,
			`routes[0].destination: 10.20.0.1/16 has host bits set; the network is 10.20.0.0/16`},
		{"bad mac", `{"interfaces":[{"mac":"52:54:00:zz:00:01"}]}`, `interfaces[0].mac: "52:54:00:zz:00:01" is not an Ethernet MAC address`},
		{"dhcp with address", `{"interfaces":[{"name":"eth0","addresses":[{"method":"dhcp","address":"10.0.0.2/24"}]}]}`,
			`interfaces[0].addresses[0].address: must be empty for method "dhcp"`},
		{"bad hostname", `{"interfaces":[],"hostname":"box_1"}`, `hostname: "box_1" is not a host name`},
		{"bad dns", `{"interfaces":[],"dns":{"servers":["8.8.8"]}}`, `dns.servers[0]: "8.8.8" is not an IP address`},
		{"mtu", `{"interfaces":[{"name":"eth0","mtu":20}]}`, `interfaces[0].mtu: 20 is out of range`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c netcfg.Config
			if err := json.Unmarshal([]byte(tc.config), &c); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestValidateAcceptsGoodConfig(t *testing.T) {
	var c netcfg.Config
	js := `{"interfaces":[{"mac":"52:54:00:12:34:56","addresses":[{"method":"dhcp"},{"method":"slaac"},{"address":"10.0.0.2/24"}]},
		{"name":"eth1","addresses":[{"method":"dhcp"}]}],
		"gateways":[{"via":"10.0.0.1"},{"via":"172.16.0.1","interface":"eth1","metric":100},{"via":"fe80::1","interface":"52:54:00:12:34:56"}],
		"routes":[{"destination":"10.20.0.0/16","via":"10.0.0.254"},{"destination":"192.0.2.0/24","interface":"eth1"}],
		"dns":{"servers":["10.0.0.53","2001:db8::53"],"search":["lab.example"]},"hostname":"box-1.lab.example","ntp_servers":["ntp.example","10.0.0.123"]}`
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !c.Interfaces[0].Enabled || !c.Interfaces[0].Addresses[2].Enabled {
		t.Error("enabled does not default to true")
	}
}
