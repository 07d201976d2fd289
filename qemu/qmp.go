package qemu

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Event is an asynchronous QMP event, e.g. SHUTDOWN, RESET, POWERDOWN or
// WATCHDOG.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data,omitempty"`
	Time time.Time       `json:"-"`
}

// errQMPClosed is returned for commands whose connection closed before they
// got an answer, which is the expected outcome of "quit".
var errQMPClosed = errors.New("qmp: connection closed")

// qmp is a client for QEMU's machine protocol on a unix socket. Commands are
// serialized; a reader goroutine routes replies to the waiting command and
// records events.
type qmp struct {
	conn net.Conn
	cmd  sync.Mutex // one command in flight at a time

	mu      sync.Mutex
	replies chan qmpReply // replies, matched to commands by ID
	nextID  uint64        // guarded by cmd
	events  []Event
	closed  bool
	done    chan struct{} // closed when the reader stops
	onEvent func(Event)
}

type qmpReply struct {
	ID     uint64          `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// dialQMP connects and negotiates capabilities. QEMU creates the socket a
// little after it starts, so it retries until the deadline or until exited
// closes (QEMU failed; the caller reports its stderr).
func dialQMP(path string, deadline time.Time, exited <-chan struct{}, onEvent func(Event)) (*qmp, error) {
	var conn net.Conn
	for {
		var err error
		conn, err = net.DialTimeout("unix", path, time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("qmp: connect %s: %w", path, err)
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("qmp: QEMU exited before its QMP socket accepted a connection")
		case <-time.After(20 * time.Millisecond):
		}
	}
	q := &qmp{conn: conn, replies: make(chan qmpReply, 8), done: make(chan struct{}), onEvent: onEvent}

	// The greeting comes first, before the reader starts, so that a QEMU
	// that is not speaking QMP is detected here.
	conn.SetReadDeadline(deadline)
	br := bufio.NewReader(conn)
	line, err := br.ReadBytes('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: read greeting: %w", err)
	}
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	if err := json.Unmarshal(line, &greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: unexpected greeting %q", line)
	}
	conn.SetReadDeadline(time.Time{})
	go q.read(br)

	if _, err := q.execute("qmp_capabilities", nil, time.Until(deadline)); err != nil {
		q.close()
		return nil, fmt.Errorf("qmp: capabilities handshake: %w", err)
	}
	return q, nil
}

func (q *qmp) read(br *bufio.Reader) {
	defer close(q.done)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return
		}
		var r qmpReply
		if err := json.Unmarshal(line, &r); err != nil {
			continue // not ours to fix; the command waiting will time out
		}
		if r.Event != "" {
			ev := Event{Name: r.Event, Data: r.Data, Time: time.Now()}
			if r.Timestamp != nil {
				ev.Time = time.Unix(r.Timestamp.Seconds, r.Timestamp.Microseconds*1000)
			}
			q.mu.Lock()
			q.events = append(q.events, ev)
			q.mu.Unlock()
			if q.onEvent != nil {
				q.onEvent(ev)
			}
			continue
		}
		select {
		case q.replies <- r:
		default: // replies nobody waits for (their commands timed out)
		}
	}
}

// execute sends one command and waits for its reply.
func (q *qmp) execute(command string, args any, timeout time.Duration) (json.RawMessage, error) {
	q.cmd.Lock()
	defer q.cmd.Unlock()
	q.nextID++
	id := q.nextID
	msg := map[string]any{"execute": command, "id": id}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("qmp: %s: encode arguments: %w", command, err)
	}
	q.conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		select {
		case <-q.done:
			return nil, fmt.Errorf("qmp: %s: %w", command, errQMPClosed)
		default:
		}
		return nil, fmt.Errorf("qmp: %s: send: %w", command, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case r := <-q.replies:
			if r.ID != id {
				continue // a late reply to an earlier command that timed out
			}
			if r.Error != nil {
				return nil, fmt.Errorf("qmp: %s: %s: %s", command, r.Error.Class, r.Error.Desc)
			}
			return r.Return, nil
		case <-q.done:
			return nil, fmt.Errorf("qmp: %s: %w", command, errQMPClosed)
		case <-timer.C:
			return nil, fmt.Errorf("qmp: %s: no reply within %v", command, timeout)
		}
	}
}

// eventsSoFar returns the events received so far.
func (q *qmp) eventsSoFar() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Event(nil), q.events...)
}

func (q *qmp) close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	err := q.conn.Close()
	<-q.done
	return err
}
