// Command floorinit is the benchmark floor's /init: the smallest Go PID 1,
// which reports the kernel uptime at which it ran and its resident memory,
// then powers off at once.
package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	os.Mkdir("/proc", 0o555)
	unix.Mount("proc", "/proc", "proc", 0, "")
	up, _ := os.ReadFile("/proc/uptime")
	st, _ := os.ReadFile("/proc/self/status")
	rss := ""
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rss = strings.TrimSpace(v)
		}
	}
	fmt.Printf("FLOOR uptime=%s rss=%q\n", strings.Fields(string(up))[0], rss)
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
