package timesync

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is the host's clock plus a skew the test sets; Step and Slew
// change the skew, never the host's clock.
type fakeClock struct {
	mu    sync.Mutex
	skew  time.Duration
	steps []time.Duration
	slews []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.skew)
}

func (c *fakeClock) Step(d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.skew += d
	c.steps = append(c.steps, d)
	return nil
}

func (c *fakeClock) Slew(d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.skew += d // as if the slew had completed
	c.slews = append(c.slews, d)
	return nil
}

func TestChooseMajority(t *testing.T) {
	s := func(name string, off time.Duration) Sample {
		return Sample{Server: name, Offset: off, RTT: 2 * time.Millisecond}
	}
	for _, tc := range []struct {
		name    string
		in      []Sample
		want    time.Duration
		wantErr string
	}{
		{"one server", []Sample{s("a", time.Second)}, time.Second, ""},
		{"liar outvoted", []Sample{s("a", 2*time.Second), s("b", 2*time.Second+10*time.Millisecond), s("liar", time.Hour)}, 2*time.Second + 10*time.Millisecond, ""},
		{"two disagree", []Sample{s("a", 0), s("b", time.Hour)}, 0, "no majority"},
		{"no answers", nil, 0, "no server answered"},
		{"three way split", []Sample{s("a", 0), s("b", time.Minute), s("c", time.Hour)}, 0, "no majority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := choose(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got.Offset != tc.want {
				t.Fatalf("got %v, %v; want offset %v", got.Offset, err, tc.want)
			}
		})
	}
}

func TestStepAtBootThenSlew(t *testing.T) {
	clock := &fakeClock{}
	offset := 40 * time.Millisecond
	q := func(ctx context.Context, server string, now func() time.Time) (Sample, error) {
		return Sample{Server: server, Offset: offset, RTT: time.Millisecond, Stratum: 2}, nil
	}
	s := New(clock, q, nil)
	s.SetServers([]string{"a", "b", "c"})
	// The first correction is a step even though it is small.
	if st, err := s.Sync(context.Background()); err != nil || st.Action != "step" || !st.Synchronized {
		t.Fatalf("first sync: %+v, %v; want a step", st, err)
	}
	if st, err := s.Sync(context.Background()); err != nil || st.Action != "slew" {
		t.Fatalf("second sync: %+v, %v; want a slew", st, err)
	}
	offset = 5 * time.Second
	if st, err := s.Sync(context.Background()); err != nil || st.Action != "step" || st.OffsetMS != 5000 {
		t.Fatalf("large offset: %+v, %v; want a step of 5000 ms", st, err)
	}
	if len(clock.steps) != 2 || len(clock.slews) != 1 {
		t.Errorf("steps %v slews %v", clock.steps, clock.slews)
	}
}

func TestDHCPServersUsedWhenNoneConfigured(t *testing.T) {
	var asked []string
	var mu sync.Mutex
	q := func(ctx context.Context, server string, now func() time.Time) (Sample, error) {
		mu.Lock()
		asked = append(asked, server)
		mu.Unlock()
		return Sample{}, errors.New("unreachable")
	}
	s := New(&fakeClock{}, q, nil)
	if _, err := s.Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "no NTP servers") {
		t.Fatalf("sync with no servers: %v", err)
	}
	s.SetDHCPServers("eth0", nil)
	if _, src := s.Servers(); src != "none" {
		t.Fatalf("source %q", src)
	}
	s.SetDHCPServers("eth0", mustAddrs("192.0.2.123"))
	if list, src := s.Servers(); src != "dhcp" || len(list) != 1 || list[0] != "192.0.2.123" {
		t.Fatalf("servers %v from %q", list, src)
	}
	s.SetServers([]string{"ntp.example"})
	if list, src := s.Servers(); src != "configured" || list[0] != "ntp.example" {
		t.Fatalf("servers %v from %q", list, src)
	}
	s.Sync(context.Background())
	st := s.Status()
	if st.Synchronized || len(st.Servers) != 1 || st.Servers[0].Error == "" || len(asked) != 1 || asked[0] != "ntp.example" {
		t.Fatalf("status %+v, asked %v", st, asked)
	}
}

// startChrony runs chronyd on 127.0.0.1:port serving its local clock,
// with -x so it never touches the host's clock.
func startChrony(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: chronyd needs root (run the tests as root)")
	}
	if _, err := exec.LookPath("chronyd"); err != nil {
		t.Skip("skipped: needs chronyd (apt-get install chrony)")
	}
	port := freeUDPPort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "chrony.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`port %d
bindaddress 127.0.0.1
allow 127.0.0.1
local stratum 8
cmdport 0
pidfile %s
`, port, filepath.Join(dir, "chronyd.pid"))), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "chronyd", "-x", "-d", "-f", conf)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// Wait until it answers.
	for i := 0; i < 100; i++ {
		if _, err := QueryNTP(context.Background(), addr, time.Now); err == nil {
			return addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("chronyd on %s never answered:\n%s", addr, out.String())
	return ""
}

func freeUDPPort(t *testing.T) int {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// liar answers NTP on loopback with a time an hour ahead.
func liar(t *testing.T) string {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 128)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 48 {
				continue
			}
			now := time.Now().Add(time.Hour)
			resp := make([]byte, 48)
			resp[0] = 0<<6 | 4<<3 | 4 // no leap warning, version 4, server
			resp[1] = 2               // stratum
			copy(resp[24:32], buf[40:48])
			putTime(resp[16:24], now) // reference
			putTime(resp[32:40], now) // receive
			putTime(resp[40:48], now) // transmit
			c.WriteTo(resp, from)
		}
	}()
	return c.LocalAddr().String()
}

func putTime(b []byte, t time.Time) {
	const ntpEpoch = 2208988800
	secs := uint64(t.Unix() + ntpEpoch)
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	binary.BigEndian.PutUint64(b, secs<<32|frac)
}

func TestSyncAgainstChrony(t *testing.T) {
	a, b := startChrony(t), startChrony(t)
	// The test's clock is 3 s behind the host's, which is what the
	// chronyd instances serve.
	clock := &fakeClock{skew: -3 * time.Second}
	s := New(clock, nil, nil)
	s.SetServers([]string{a, b, liar(t)})
	st, err := s.Sync(context.Background())
	if err != nil {
		t.Fatalf("sync: %v (%+v)", err, st)
	}
	t.Logf("status: %+v", st)
	if !st.Synchronized || st.Action != "step" || st.OffsetMS < 2950 || st.OffsetMS > 3050 {
		t.Fatalf("status %+v; want synchronized after a step of about 3000 ms", st)
	}
	if st.Server != a && st.Server != b {
		t.Errorf("server %q: the liar won", st.Server)
	}
	if d := time.Until(clock.Now()); d > 50*time.Millisecond || d < -50*time.Millisecond {
		t.Errorf("after the step the clock is %v off the host's", d)
	}
	// Now close: a small offset is slewed.
	clock.mu.Lock()
	clock.skew -= 30 * time.Millisecond
	clock.mu.Unlock()
	st, err = s.Sync(context.Background())
	if err != nil || st.Action != "slew" || st.OffsetMS < 10 || st.OffsetMS > 50 {
		t.Fatalf("second sync: %+v, %v; want a slew of about 30 ms", st, err)
	}

	// The same through the HTTP API.
	mux := http.NewServeMux()
	s.Routes(mux, nil)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/api/v1/time/sync", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var v timeView
	json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if resp.StatusCode != 200 || !v.Status.Synchronized || len(v.Servers) != 3 {
		t.Fatalf("POST /api/v1/time/sync: %d %+v", resp.StatusCode, v)
	}
}

func TestPutTimeValidates(t *testing.T) {
	s := New(&fakeClock{}, func(context.Context, string, func() time.Time) (Sample, error) {
		return Sample{}, errors.New("offline")
	}, nil)
	var saved []string
	mux := http.NewServeMux()
	s.Routes(mux, func(l []string) error { saved = l; return nil })
	put := func(body string) (int, map[string]any) {
		req := httptest.NewRequest("PUT", "/api/v1/time", strings.NewReader(body))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		var m map[string]any
		json.Unmarshal(rec.Body.Bytes(), &m)
		return rec.Code, m
	}
	if code, m := put(`{"servers":["bad host!"]}`); code != 400 || !strings.Contains(fmt.Sprint(m["error"]), `servers[0]: "bad host!"`) {
		t.Errorf("bad server: %d %v", code, m)
	}
	if code, m := put(`{"servers":["192.0.2.1","ntp.example:123"]}`); code != 200 || len(saved) != 2 {
		t.Errorf("good servers: %d %v saved %v", code, m, saved)
	}
}
