package pid1

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLinkModprobeLeadsToTheProgram(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "bin", "agent")
	at := filepath.Join(dir, "sbin", "modprobe")
	for range 2 { // a second call (a link already there) is no error
		if err := linkModprobe(exe, at); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := os.Readlink(at); err != nil || got != exe {
		t.Fatalf("%s -> %q (%v), want %s", at, got, err, exe)
	}
}
