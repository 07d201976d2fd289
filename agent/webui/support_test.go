package webui

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

func TestSupportRunsAUtilityAndShowsItsOutput(t *testing.T) {
	b := newBox(t, false)
	br := b.browser(t)
	br.login(firstPassword)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	a := br.form(Prefix+"/support", url.Values{"do": {"utility"}, "tool": {"tcp"}, "host": {"127.0.0.1"}, "port": {port}})
	if a.code != http.StatusOK || !strings.Contains(a.body, "connected to 127.0.0.1:"+port) {
		t.Fatalf("TCP test: %d %s", a.code, a.body)
	}
	a = br.form(Prefix+"/support", url.Values{"do": {"utility"}, "tool": {"tcp"}, "host": {"127.0.0.1"}, "port": {"0"}})
	if a.code != http.StatusBadRequest || !strings.Contains(a.body, "port: must be between 1 and 65535") {
		t.Fatalf("a bad port: %d", a.code)
	}
	// Without an installer the API's own sentence reaches the page.
	a = br.form(Prefix+"/support", url.Values{"do": {"check"}})
	if a.code == http.StatusOK {
		t.Fatalf("check without an update service: %d", a.code)
	}
}
