package blockdev

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// BootDisk returns the disk whose GPT holds a partition with the unique
// GUID espGUID: GRUB passes the GUID of the ESP it was loaded from
// (keel.esp), which tells the boot disk from any other disk with the same
// layout.
func (f Finder) BootDisk(espGUID string) (string, error) {
	ents, err := os.ReadDir(f.SysClassBlock)
	if err != nil {
		return "", fmt.Errorf("find the boot disk: %w", err)
	}
	want := strings.ToLower(espGUID)
	var disks []string
	for _, e := range ents {
		vars, err := readUevent(filepath.Join(f.SysClassBlock, e.Name(), "uevent"))
		if err != nil || vars["DEVTYPE"] != "disk" {
			continue
		}
		dev := filepath.Join(f.Dev, vars["DEVNAME"])
		guids, err := partitionGUIDs(dev)
		if err != nil {
			continue // not a GPT disk, or unreadable
		}
		for _, g := range guids {
			if g == want {
				disks = append(disks, dev)
			}
		}
	}
	switch len(disks) {
	case 0:
		return "", fmt.Errorf("no disk has the partition %s that GRUB booted from", espGUID)
	case 1:
		return disks[0], nil
	}
	return "", fmt.Errorf("%w: disks %s all have a partition %s (a cloned disk?); detach the copies", ErrDuplicate, strings.Join(disks, ", "), espGUID)
}

// WaitBootDisk polls BootDisk until the disk shows up or timeout passes.
func (f Finder) WaitBootDisk(espGUID string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		d, err := f.BootDisk(espGUID)
		if err == nil || time.Now().After(deadline) {
			return d, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// partitionGUIDs reads the unique GUIDs of a disk's GPT partitions, in
// the textual form GRUB's probe --part-uuid prints (lower case).
func partitionGUIDs(dev string) ([]string, error) {
	fh, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	for _, sector := range []int64{512, 4096} {
		hdr := make([]byte, 92)
		if _, err := fh.ReadAt(hdr, sector); err != nil {
			continue
		}
		if !bytes.Equal(hdr[:8], []byte("EFI PART")) {
			continue
		}
		lba := int64(binary.LittleEndian.Uint64(hdr[72:]))
		n := binary.LittleEndian.Uint32(hdr[80:])
		size := binary.LittleEndian.Uint32(hdr[84:])
		if n > 256 || size < 128 || size > 1024 {
			return nil, fmt.Errorf("%s: implausible GPT header", dev)
		}
		buf := make([]byte, int(n)*int(size))
		if _, err := fh.ReadAt(buf, lba*sector); err != nil {
			return nil, err
		}
		var out []string
		for i := 0; i < int(n); i++ {
			e := buf[i*int(size):]
			if [16]byte(e[:16]) == [16]byte{} {
				continue // unused entry: no type GUID
			}
			out = append(out, guidString(e[16:32]))
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: no GPT", dev)
}

// guidString formats a GPT GUID: the first three fields little-endian.
func guidString(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]), binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
}
