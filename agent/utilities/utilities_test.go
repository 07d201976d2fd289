package utilities

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// Every test talks to loopback only.

func post(t *testing.T, mux *http.ServeMux, path, body string) (int, string) {
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(body)))
	return rec.Code, rec.Body.String()
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	defer ln.Close()
	if r := TCP(context.Background(), "127.0.0.1", port, time.Second); !r.Connected {
		t.Fatalf("open port: %+v", r)
	}
	ln.Close()
	if r := TCP(context.Background(), "127.0.0.1", port, time.Second); r.Connected || !strings.Contains(r.Error, "refused") {
		t.Fatalf("closed port: %+v", r)
	}
	mux := http.NewServeMux()
	Routes(mux, nil)
	if code, body := post(t, mux, "/api/v1/utilities/tcp", `{"host":"127.0.0.1","port":70000}`); code != 400 || !strings.Contains(body, `"error":"port:`) {
		t.Errorf("bad port: %d %s", code, body)
	}
	if code, body := post(t, mux, "/api/v1/utilities/tcp", `{"host":"127.0.0.1","port":1,"timeout_ms":60000}`); code != 400 || !strings.Contains(body, "timeout_ms") {
		t.Errorf("long timeout: %d %s", code, body)
	}
}

func TestDNSLocalhost(t *testing.T) {
	// "localhost" resolves from /etc/hosts: no query leaves the machine.
	r := DNS(context.Background(), &net.Resolver{PreferGo: true}, "localhost", time.Second)
	if r.Error != "" || len(r.Addresses) == 0 {
		t.Fatalf("%+v", r)
	}
}

func TestPingLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: raw ICMP sockets need root")
	}
	mux := http.NewServeMux()
	Routes(mux, nil)
	code, body := post(t, mux, "/api/v1/utilities/ping", `{"host":"127.0.0.1","count":2,"timeout_ms":1000}`)
	if code != 200 || !strings.Contains(body, `"received":2`) {
		t.Fatalf("ping: %d %s", code, body)
	}
	if code, body := post(t, mux, "/api/v1/utilities/ping", `{"host":"127.0.0.1","count":1000}`); code != 400 {
		t.Errorf("count over the bound: %d %s", code, body)
	}
}
