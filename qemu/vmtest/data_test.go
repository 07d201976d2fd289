package vmtest

import (
	"crypto/sha256"
	"io"
	"os"
	"strings"
	"testing"

	"keel.dev/keel/image/layout"
	"keel.dev/keel/qemu"
)

// A data partition whose file system is damaged is never formatted: the box
// comes up in recovery mode, says why, and the partition is unchanged.
func TestDamagedDataIsNotFormatted(t *testing.T) {
	e := Require(t)
	img := e.BuildImage(t, t.TempDir(), "1.0.0", "")

	// First boot writes configuration, credentials and keys to data (and
	// the credentials' mirror to the ESP).
	vm := Boot(t, qemu.Config{Image: img})
	WaitReady(t, vm)
	PowerOff(t, vm)
	raw := RawDisk(t, vm)

	// Damage the ext4 group descriptors (block 1), keeping the superblock
	// magic so the agent sees an ext4 file system it cannot mount.
	data := PartitionExtent(t, raw, layout.Data)
	f, err := os.OpenFile(raw, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(i*7 + 3)
	}
	if _, err := f.WriteAt(garbage, data.Start+4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	before := hashRange(t, raw, data.Start, data.End)

	vm2 := Boot(t, qemu.Config{Image: raw})
	WaitReady(t, vm2)
	if !strings.Contains(vm2.Output(), "RECOVERY MODE") {
		t.Error("the console does not announce recovery mode")
	}
	st := GetStatus(t, vm2, TestPassword)
	if !st.Boot.Recovery || !strings.Contains(st.Boot.RecoveryReason, "left untouched") {
		t.Errorf("status does not explain the recovery: %+v", st.Boot)
	}
	PowerOff(t, vm2)
	raw2 := RawDisk(t, vm2)
	if after := hashRange(t, raw2, data.Start, data.End); after != before {
		t.Error("the damaged data partition was modified")
	}
	// Recovery mode serves the same certificate at the next boot, so a
	// pinned client still reaches it.
	vm3 := Boot(t, qemu.Config{Image: raw2})
	WaitReady(t, vm3)
	st3 := GetStatus(t, vm3, TestPassword)
	if !st3.Boot.Recovery || st3.Certificate.SHA256 == "" || st3.Certificate.SHA256 != st.Certificate.SHA256 {
		t.Errorf("recovery certificate %q, then %q at the next boot; want the same", st.Certificate.SHA256, st3.Certificate.SHA256)
	}
	PowerOff(t, vm3)
}

func hashRange(t *testing.T, path string, start, end int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, start, end-start)); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}
