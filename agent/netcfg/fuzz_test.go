package netcfg

import (
	"encoding/json"
	"testing"
)

// FuzzConfig feeds the network configuration's decoding and validation
// what an operator (or a restored backup) could send: it never panics.
func FuzzConfig(f *testing.F) {
	f.Add([]byte(`{"interfaces":[{"name":"eth0","enabled":true,"addresses":[{"method":"dhcp","enabled":true}]}]}`))
	f.Add([]byte(`{"interfaces":[{"mac":"52:54:00:12:34:56","mtu":1500,"addresses":[{"address":"192.0.2.10/24","enabled":true,"shared":true}]}],"gateways":[{"via":"192.0.2.1"}],"routes":[{"destination":"10.0.0.0/8","via":"192.0.2.254"}],"dns":{"servers":["192.0.2.53"],"search":["example.com"]},"hostname":"box","ntp_servers":["pool.ntp.org"]}`))
	f.Add([]byte(`{"interfaces":[{"name":"eth0","addresses":[{"address":"2001:db8::1/64"}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Config
		if json.Unmarshal(b, &c) != nil {
			return
		}
		_ = c.Validate()
	})
}
