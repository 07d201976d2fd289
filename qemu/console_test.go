package qemu

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

func res(patterns ...string) []*regexp.Regexp {
	out := make([]*regexp.Regexp, len(patterns))
	for i, p := range patterns {
		out[i] = regexp.MustCompile(p)
	}
	return out
}

func TestConsoleCleansOutput(t *testing.T) {
	var log, tee bytes.Buffer
	c := newConsole(&log, &tee)
	raw := "\x1b[2J\x1b[01;01H\x1b[=3hGNU GRUB\r\n\x1b(Bline two\r\n\x1b]0;title\x07end\x00\r\n"
	// Byte by byte: escape sequences split across writes must still go.
	for i := range len(raw) {
		c.Write([]byte{raw[i]})
	}
	if got, want := c.Output(), "GNU GRUB\nline two\nend\n"; got != want {
		t.Errorf("Output() = %q, want %q", got, want)
	}
	if log.String() != raw || tee.String() != raw {
		t.Errorf("log %q tee %q, want the raw bytes", log.String(), tee.String())
	}
}

func TestConsoleExpectCursor(t *testing.T) {
	c := newConsole(&bytes.Buffer{}, nil)
	never := make(chan struct{})
	go func() {
		for _, s := range []string{"boot 1\r\n", "ready\r\n", "boot 2\r\n", "re", "ady\r\n"} {
			time.Sleep(5 * time.Millisecond)
			c.Write([]byte(s))
		}
	}()
	m, err := c.expectOne(`boot (\d)`, never)
	if err != nil || m[1] != "1" {
		t.Fatalf("first: %q %v", m, err)
	}
	if _, err := c.expectOne(`ready\n`, never); err != nil {
		t.Fatal(err)
	}
	m, err = c.expectOne(`boot (\d)`, never)
	if err != nil || m[1] != "2" {
		t.Fatalf("second boot: %q %v", m, err)
	}
	// "ready" arrives in two writes; the earlier "ready" is behind the cursor.
	if _, err := c.expectOne(`(?m)^ready$`, never); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.expect(res(`ready`), 50*time.Millisecond, never); err == nil {
		t.Fatal("matched output behind the cursor")
	}
}

func (c *console) expectOne(re string, exited <-chan struct{}) ([]string, error) {
	_, m, err := c.expect(res(re), 5*time.Second, exited)
	return m, err
}

func TestConsoleExpectAnyEarliest(t *testing.T) {
	c := newConsole(&bytes.Buffer{}, nil)
	c.Write([]byte("login: \nKernel panic\n"))
	i, m, err := c.expect(res(`Kernel panic`, `login:`), time.Second, nil)
	if err != nil || i != 1 || m[0] != "login:" {
		t.Fatalf("got %d %q %v, want the earliest match (login:)", i, m, err)
	}
	i, _, err = c.expect(res(`Kernel panic`, `login:`), time.Second, nil)
	if err != nil || i != 0 {
		t.Fatalf("got %d %v, want Kernel panic next", i, err)
	}
}

func TestConsoleExpectTimeoutShowsTail(t *testing.T) {
	c := newConsole(&bytes.Buffer{}, nil)
	c.Write([]byte(strings.Repeat("x", 5000) + "LAST LINE\n"))
	_, _, err := c.expect(res(`never`), 20*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), "LAST LINE") || !strings.Contains(err.Error(), `"never"`) {
		t.Fatalf("error %v", err)
	}
	if len(err.Error()) > tailBytes+200 {
		t.Errorf("error is %d bytes, want about %d", len(err.Error()), tailBytes)
	}
}

func TestConsoleExpectStopsWhenExited(t *testing.T) {
	c := newConsole(&bytes.Buffer{}, nil)
	exited := make(chan struct{})
	c.Write([]byte("partial"))
	close(exited)
	start := time.Now()
	_, _, err := c.expect(res(`never`), time.Minute, exited)
	if err == nil || !strings.Contains(err.Error(), "exited") || time.Since(start) > 5*time.Second {
		t.Fatalf("error %v after %v", err, time.Since(start))
	}
	// Output that arrived before the exit still matches.
	if _, _, err := c.expect(res(`part`), time.Minute, exited); err != nil {
		t.Fatal(err)
	}
}

func TestConsoleEmptyMatchAdvances(t *testing.T) {
	c := newConsole(&bytes.Buffer{}, nil)
	c.Write([]byte("ab"))
	for range 2 {
		if _, _, err := c.expect(res(`x*`), time.Second, nil); err != nil {
			t.Fatal(err)
		}
	}
	if c.cursor != 2 {
		t.Errorf("cursor %d after two empty matches, want 2", c.cursor)
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 4}
	b.Write([]byte("abc"))
	b.Write([]byte("def"))
	if b.String() != "cdef" {
		t.Errorf("tail %q", b.String())
	}
}

// The bench's timeline reads when a line arrived, not when it was looked
// for: a match in output that came before a pause has the earlier time.
func TestConsoleSeenAtIsArrivalTime(t *testing.T) {
	c := newConsole(&bytes.Buffer{}, nil)
	c.Write([]byte("BdsDxe: loading\r\n"))
	first := time.Now()
	time.Sleep(20 * time.Millisecond)
	c.Write([]byte("Welcome to GRUB!\r\nkeel: booting slot a\r\n"))
	second := time.Now()
	time.Sleep(20 * time.Millisecond)

	at, _, ok := c.seenAt(regexp.MustCompile(`BdsDxe`))
	if !ok || at.After(first) {
		t.Errorf("BdsDxe seen at %v (ok %v), want by %v", at, ok, first)
	}
	at, subs, ok := c.seenAt(regexp.MustCompile(`booting slot (\w)`))
	if !ok || !at.After(first) || at.After(second) || subs[1] != "a" {
		t.Errorf("booting slot seen at %v %q (ok %v), want between %v and %v", at, subs, ok, first, second)
	}
	if _, _, ok := c.seenAt(regexp.MustCompile(`Linux version`)); ok {
		t.Error("a line that never came was seen")
	}
}
