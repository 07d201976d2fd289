package main

// urootCommands are the u-root tools shipped for recovery and support: the
// agent (or an operator through it) runs them to look at disks, the network
// and the kernel. There is deliberately no shell among them: nothing in the
// initramfs offers an unauthenticated prompt, and the agent starts none.
// Each import path is also listed in tools.go so go.sum covers it.
func urootCommands() []string {
	const core = "github.com/u-root/u-root/cmds/core/"
	names := []string{
		// Files and disks.
		"cat", "ls", "cp", "rm", "mkdir", "dd", "sync", "df", "mount",
		"umount", "blkid", "hexdump", "grep", "tail",
		// Kernel and processes.
		"dmesg", "lsmod", "ps", "kill", "free", "uname",
		// Network.
		"ip", "ping", "wget",
	}
	cmds := make([]string, len(names))
	for i, n := range names {
		cmds[i] = core + n
	}
	return cmds
}
