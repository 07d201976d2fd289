package webui

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// The Failover page of a box outside any relationship offers the
// establish form; a refused establish shows the API's sentence and keeps
// what the operator typed.
func TestFailoverPageEstablishRefused(t *testing.T) {
	b := newBox(t, false)
	br := b.browser(t)
	br.login(firstPassword)
	page := br.do("GET", Prefix+"/failover", nil)
	if page.code != 200 || !strings.Contains(page.body, "not in a failover relationship") || !strings.Contains(page.body, `id="failover-establish"`) {
		t.Fatalf("the page: %d %s", page.code, page.body)
	}
	// Nothing listens on this port: the peer cannot be reached. The key
	// comes first.
	if a := br.form(Prefix+"/failover", url.Values{"do": {"establish"}, "peer_address": {"127.0.0.1"}, "peer_port": {"1"}, "reverse_address": {"127.0.0.1"}}); !strings.Contains(a.body, "no inter-appliance key is set") {
		t.Errorf("without a key: %d %s", a.code, a.body)
	}
	b.peer.Generate()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	a := br.form(Prefix+"/failover", url.Values{"do": {"establish"}, "peer_address": {"127.0.0.1"}, "peer_port": {strconv.Itoa(port)},
		"reverse_address": {"127.0.0.1"}, "shared": {"eth1 192.0.2.100/24"}, "automatic": {"1"}, "detection_time": {"600ms"}})
	if a.code != 502 || !strings.Contains(a.body, "cannot be reached") || !strings.Contains(a.body, "eth1 192.0.2.100/24") {
		t.Errorf("an unreachable peer: %d %s", a.code, a.body)
	}
	if a := br.form(Prefix+"/failover", url.Values{"do": {"establish"}, "peer_address": {"x"}, "reverse_address": {"y"}, "detection_time": {"soon"}}); a.code != 400 || !strings.Contains(a.body, "is not a duration") {
		t.Errorf("a bad duration: %d %s", a.code, a.body)
	}
}
