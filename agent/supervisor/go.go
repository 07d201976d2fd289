package supervisor

import (
	"fmt"
	"log/slog"
	"runtime/debug"
)

// Go runs fn in a goroutine of its own that cannot take PID 1 down: a panic
// is logged with its stack under name and the goroutine ends. Background
// work that is not a long-lived service (a reboot after an install, a
// resumed bundle, a power action) starts here, since a panic in any
// goroutine ends the process and, for PID 1, panics the kernel.
func Go(log *slog.Logger, name string, fn func()) {
	go func() {
		defer Recover(log, name)
		fn()
	}()
}

// Recover, deferred at the top of a goroutine, logs a panic and stops it
// there.
func Recover(log *slog.Logger, name string) {
	if r := recover(); r != nil {
		log.Error("background task panicked; the agent goes on", "task", name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	}
}
