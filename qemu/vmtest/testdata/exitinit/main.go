// Command exitinit is the /init of a broken base the rollback test
// installs: it exits at once, so the kernel panics ("Attempted to kill
// init") and, with panic=10, reboots.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("exitinit: exiting to make the kernel panic")
	os.Exit(1)
}
