package pid1

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// ReapOrphans collects exited children adopted by PID 1 so they do not stay
// zombies. The agent itself starts no child processes it waits for yet;
// when it does, they must be waited for through one owner of wait4.
func ReapOrphans() {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, unix.SIGCHLD)
	go func() {
		for range ch {
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}()
}
