package main

import "testing"

// Kernel messages and agent log lines that came while the profile was
// printed are left out of it, also one the kernel wrote mid-line.
func TestProfileTextSkipsOtherOutput(t *testing.T) {
	console := "QUJD\r\nREVG[    4.363947] EXT4-fs (loop0): mounted filesystem with ordered data mode.\r\nR0hJ\r\n" +
		"time=2026-12-07T10:53:53.100Z level=INFO msg=\"application started\" app=demo\r\nSktM\r\n"
	if got, want := profileText(console), "QUJDREVGR0hJSktM"; got != want {
		t.Errorf("profileText = %q, want %q", got, want)
	}
}
