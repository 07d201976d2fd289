package console

import (
	"sync"

	"golang.org/x/sys/unix"
)

// Ring keeps the last bytes written to it: the agent's log for the menu,
// which the console also prints as it comes.
type Ring struct {
	mu   sync.Mutex
	max  int
	buf  []byte
	lost bool
}

// NewRing keeps the last max bytes.
func NewRing(max int) *Ring { return &Ring{max: max} }

func (r *Ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, p...)
	if over := len(r.buf) - r.max; over > 0 {
		// Drop whole lines at the front, and the start of a cut one.
		cut := over
		for cut < len(r.buf) && r.buf[cut-1] != '\n' {
			cut++
		}
		r.buf = append(r.buf[:0], r.buf[cut:]...)
		r.lost = true
	}
	return len(p), nil
}

// String is what the ring holds, oldest first.
func (r *Ring) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lost {
		return "(earlier lines are gone)\n" + string(r.buf)
	}
	return string(r.buf)
}

// KernelLog is the kernel's message buffer (dmesg).
func KernelLog() string {
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil || n <= 0 {
		return "the kernel's messages cannot be read: " + errString(err)
	}
	b := make([]byte, n)
	m, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, b)
	if err != nil {
		return "the kernel's messages cannot be read: " + errString(err)
	}
	return string(b[:m])
}

func errString(err error) string {
	if err == nil {
		return "empty"
	}
	return err.Error()
}
