package qemu

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQMP serves one QMP connection the way QEMU does: greeting, then
// answers; "quit" closes the connection without a reply, as QEMU may.
func fakeQMP(t *testing.T) (path string, got chan string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	got = make(chan string, 10)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintln(c, `{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}`)
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var cmd struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
				t.Errorf("bad command %q", sc.Text())
				return
			}
			got <- cmd.Execute
			switch cmd.Execute {
			case "quit":
				return
			case "system_powerdown":
				// QEMU sends the event before the reply.
				fmt.Fprintln(c, `{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "POWERDOWN"}`)
				fmt.Fprintf(c, "{\"return\": {}, \"id\": %s}\n", cmd.ID)
			case "bogus":
				fmt.Fprintf(c, "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command bogus has not been found\"}, \"id\": %s}\n", cmd.ID)
			default:
				// A stale reply with another id first: it must be skipped.
				fmt.Fprintln(c, `{"return": {"stale": true}, "id": 999}`)
				fmt.Fprintf(c, "{\"return\": {\"status\": \"running\"}, \"id\": %s}\n", cmd.ID)
			}
		}
	}()
	return path, got
}

func TestQMP(t *testing.T) {
	path, got := fakeQMP(t)
	var events []string
	q, err := dialQMP(path, time.Now().Add(5*time.Second), nil, func(e Event) { events = append(events, e.Name) })
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	if c := <-got; c != "qmp_capabilities" {
		t.Fatalf("first command %q, want qmp_capabilities", c)
	}

	r, err := q.execute("query-status", nil, time.Second)
	if err != nil || !strings.Contains(string(r), "running") {
		t.Fatalf("query-status: %s %v", r, err)
	}
	if _, err := q.execute("system_powerdown", nil, time.Second); err != nil {
		t.Fatal(err)
	}
	ev := q.eventsSoFar()
	if len(ev) != 1 || ev[0].Name != "POWERDOWN" || ev[0].Time.Unix() != 1700000000 || len(events) != 1 {
		t.Errorf("events %+v", ev)
	}
	if _, err := q.execute("bogus", nil, time.Second); err == nil || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Errorf("error reply: %v", err)
	}
	if _, err := q.execute("quit", nil, 5*time.Second); !errors.Is(err, errQMPClosed) {
		t.Errorf("quit: %v, want errQMPClosed", err)
	}
}

func TestQMPQEMUExited(t *testing.T) {
	exited := make(chan struct{})
	close(exited)
	_, err := dialQMP(filepath.Join(t.TempDir(), "none.sock"), time.Now().Add(time.Minute), exited, nil)
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("dial with QEMU gone: %v", err)
	}
}
