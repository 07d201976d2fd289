package console

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Errors of a line read.
var (
	// ErrInterrupt is Ctrl-C (or Ctrl-D on an empty line): back to the
	// menu, never to a shell.
	ErrInterrupt = errors.New("interrupted")
	// ErrIdle is no key for the idle timeout: the session logs out.
	ErrIdle = errors.New("idle")
)

// maxLine is the longest line read; more is dropped.
const maxLine = 256

// term reads lines from a terminal in raw mode, echoing and editing
// itself, so a dumb terminal and a test pipe behave alike.
type term struct {
	w    io.Writer
	keys <-chan byte
	idle time.Duration
}

// newTerm starts reading r; the reader goroutine ends with r.
func newTerm(r io.Reader, w io.Writer, idle time.Duration) *term {
	keys := make(chan byte, 64)
	go func() {
		defer close(keys)
		b := make([]byte, 64)
		for {
			n, err := r.Read(b)
			for _, c := range b[:n] {
				keys <- c
			}
			if err != nil {
				return
			}
		}
	}()
	return &term{w: w, keys: keys, idle: idle}
}

func (t *term) printf(format string, args ...any) {
	fmt.Fprintf(t.w, format, args...)
}

// key waits for one byte; io.EOF when the terminal is gone.
func (t *term) key() (byte, error) {
	var timeout <-chan time.Time
	if t.idle > 0 {
		tm := time.NewTimer(t.idle)
		defer tm.Stop()
		timeout = tm.C
	}
	select {
	case c, ok := <-t.keys:
		if !ok {
			return 0, io.EOF
		}
		return c, nil
	case <-timeout:
		return 0, ErrIdle
	}
}

// line reads one line after prompt; with secret the keys are not echoed.
func (t *term) line(prompt string, secret bool) (string, error) {
	t.printf("%s", prompt)
	var buf []byte
	for {
		c, err := t.key()
		if err != nil {
			t.printf("\n")
			return "", err
		}
		switch {
		case c == '\r' || c == '\n':
			t.printf("\n")
			return string(buf), nil
		case c == 0x03: // Ctrl-C
			t.printf("^C\n")
			return "", ErrInterrupt
		case c == 0x04 && len(buf) == 0: // Ctrl-D
			t.printf("\n")
			return "", ErrInterrupt
		case c == 0x7f || c == 0x08:
			if len(buf) > 0 {
				buf = buf[:len(buf)-1]
				if !secret {
					io.WriteString(t.w, "\b \b")
				}
			}
		case c == 0x15: // Ctrl-U
			if !secret {
				for range buf {
					io.WriteString(t.w, "\b \b")
				}
			}
			buf = buf[:0]
		case c == 0x1b:
			t.skipEscape()
		case c >= 0x20 && c < 0x7f && len(buf) < maxLine:
			buf = append(buf, c)
			if !secret {
				t.w.Write([]byte{c})
			}
		}
	}
}

// skipEscape drops the rest of an escape sequence (arrow keys and the
// like), which a line-based menu has no use for.
func (t *term) skipEscape() {
	c, err := t.key()
	if err != nil || c != '[' && c != 'O' {
		return
	}
	for {
		c, err := t.key()
		if err != nil || c >= 0x40 && c <= 0x7e {
			return
		}
	}
}

// makeRaw puts a terminal in raw mode: no line discipline echo or
// editing, and no signals, so Ctrl-C is a key the menu reads rather than
// a SIGINT to PID 1 (which would reboot the box).
func makeRaw(f *os.File) error {
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag |= unix.OPOST | unix.ONLCR
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}
