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
	go func() {
		seen := map[int]time.Time{}
		tick := time.NewTicker(zombieGrace)
		defer tick.Stop()
		for {
			select {
			case <-ch:
			case <-tick.C:
			}
			reapOld(seen, time.Now())
		}
	}()
}

// reapOld collects PID 1's zombie children that were zombies already at an
// earlier scan at least zombieGrace ago.
func reapOld(seen map[int]time.Time, now time.Time) {
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
