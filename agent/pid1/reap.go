package pid1

import (
	"bytes"
	"os"
	"os/signal"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// zombieGrace is how long a zombie child may wait for its owner. The agent
// waits for the processes it starts (the application) with exec.Cmd.Wait,
// which collects them the moment they exit; a zombie still there after
// this long is an orphan nobody waits for.
const zombieGrace = time.Second

// ReapOrphans collects exited children adopted by PID 1 so they do not stay
// zombies, without taking the exit status of a child the agent waits for
// itself: a blanket wait4(-1) would race exec.Cmd.Wait and leave the
// supervisor with "no child processes" instead of the exit status.
func ReapOrphans() {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, unix.SIGCHLD)
	go reapLoop(ch)
}

// reapLoop scans for zombies at every SIGCHLD on ch and, while it knows of
// a zombie, again when the oldest one's grace period ends; it returns when
// ch is closed.
func reapLoop(ch <-chan os.Signal) {
	seen := map[int]time.Time{}
	timer := time.NewTimer(zombieGrace)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
		}
		now := time.Now()
		reapOld(seen, now)
		timer.Stop()
		if len(seen) > 0 {
			next := now.Add(zombieGrace)
			for _, first := range seen {
				if t := first.Add(zombieGrace); t.Before(next) {
					next = t
				}
			}
			timer.Reset(next.Sub(now))
		}
	}
}

// reapOld collects PID 1's zombie children that were zombies already at an
// earlier scan at least zombieGrace ago. It reads /proc only when some
// child has exited and is still waitable.
func reapOld(seen map[int]time.Time, now time.Time) {
	// WNOWAIT leaves the child waitable, so exec.Cmd.Wait still gets its
	// exit status. ECHILD (no children) or no exited child: no zombies.
	// Another error scans, as if some child had exited.
	var si unix.Siginfo
	err := unix.Waitid(unix.P_ALL, 0, &si, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	if err == unix.ECHILD || err == nil && si.Signo == 0 {
		clear(seen)
		return
	}
	zombies := zombieChildren()
	for pid := range seen {
		if _, ok := zombies[pid]; !ok {
			delete(seen, pid) // its owner collected it
		}
	}
	for pid := range zombies {
		first, ok := seen[pid]
		if !ok {
			seen[pid] = now
			continue
		}
		if now.Sub(first) >= zombieGrace {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			delete(seen, pid)
		}
	}
}

// zombieChildren lists the zombie processes whose parent is this process.
func zombieChildren() map[int]bool {
	out := map[int]bool{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 2 || string(f[0]) != "Z" {
			continue
		}
		if ppid, err := strconv.Atoi(string(f[1])); err == nil && ppid == self {
			out[pid] = true
		}
	}
	return out
}
