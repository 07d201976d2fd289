package bootpath

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf16"
)

func node(typ, sub byte, data ...byte) []byte {
	b := []byte{typ, sub, 0, 0}
	binary.LittleEndian.PutUint16(b[2:], uint16(4+len(data)))
	return append(b, data...)
}

func pciRoot(uid uint32) []byte {
	d := make([]byte, 8)
	binary.LittleEndian.PutUint32(d, pnp0A03)
	binary.LittleEndian.PutUint32(d[4:], uid)
	return node(typeACPI, subACPI, d...)
}

func pci(dev, fn byte) []byte { return node(typeHardware, subPCI, fn, dev) }

var end = node(typeEnd, 0xff)

// loadOption builds an EFI_LOAD_OPTION as firmware stores it.
func makeOption(desc string, path ...[]byte) []byte {
	var dp []byte
	for _, n := range path {
		dp = append(dp, n...)
	}
	b := []byte{1, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint16(b[4:], uint16(len(dp)))
	for _, c := range utf16.Encode([]rune(desc + "\x00")) {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return append(b, dp...)
}

// efivars writes BootCurrent and the option it names as efivarfs shows
// them (four attribute bytes first).
func efivars(t *testing.T, current uint16, opt []byte) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name+"-"+globalVars), append([]byte{7, 0, 0, 0}, data...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("BootCurrent", binary.LittleEndian.AppendUint16(nil, current))
	write("Boot0001", makeOption("other", pciRoot(0), pci(0x1f, 2), end))
	if opt != nil {
		write("Boot0003", opt)
	}
	return dir
}

// sysfs makes the PCI part of a sysfs tree: two root bridges, UIDs 0 and
// 1, a bridge on the first with an NVMe controller behind it.
func sysfs(t *testing.T) string {
	t.Helper()
	sys := t.TempDir()
	for _, d := range []string{
		"devices/pci0000:00/0000:00:03.0/virtio1",
		"devices/pci0000:00/0000:00:1f.2",
		"devices/pci0000:00/0000:00:1c.0/0000:01:00.0/nvme/nvme0",
		"devices/pci0000:00/firmware_node",
		"devices/pci0000:80/0000:80:03.0",
		"devices/pci0000:80/firmware_node",
	} {
		if err := os.MkdirAll(filepath.Join(sys, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(sys, "devices/pci0000:00/firmware_node/uid"), []byte("0\n"), 0o444)
	os.WriteFile(filepath.Join(sys, "devices/pci0000:80/firmware_node/uid"), []byte("1\n"), 0o444)
	return sys
}

func TestBootControllerIsFound(t *testing.T) {
	sata := node(typeMessaging, 0x12, 0, 0, 0xff, 0xff, 0, 0)
	hd := node(typeMedia, 0x01, make([]byte, 38)...)
	for _, c := range []struct {
		name string
		desc string
		opt  []byte
		want string
	}{
		{"virtio disk (OVMF's own option)", "UEFI Misc Device", makeOption("UEFI Misc Device", pciRoot(0), pci(3, 0), end), "/devices/pci0000:00/0000:00:03.0"},
		{"SATA disk with a partition and a file", "keel", makeOption("keel", pciRoot(0), pci(0x1f, 2), sata, hd, end), "/devices/pci0000:00/0000:00:1f.2"},
		{"NVMe behind a bridge", "nvme", makeOption("nvme", pciRoot(0), pci(0x1c, 0), pci(0, 0), node(typeMessaging, 0x17, make([]byte, 12)...), end), "/devices/pci0000:00/0000:00:1c.0/0000:01:00.0"},
		{"second root bridge", "far", makeOption("far", pciRoot(1), pci(3, 0), end), "/devices/pci0000:80/0000:80:03.0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Read(efivars(t, 3, c.opt))
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Resolve(sysfs(t))
			if err != nil {
				t.Fatalf("%s: %v", p.Text, err)
			}
			if got != c.want {
				t.Errorf("%s resolves to %s, want %s", p.Text, got, c.want)
			}
			if want := "Boot0003 " + c.desc; p.Option != want {
				t.Errorf("option %q, want %q", p.Option, want)
			}
		})
	}
}

func TestBootControllerUnknown(t *testing.T) {
	hd := node(typeMedia, 0x01, make([]byte, 38)...)
	file := node(typeMedia, 0x04, 'x', 0, 0, 0)
	for _, c := range []struct {
		name    string
		current uint16
		opt     []byte
		sys     bool // resolves in sysfs, not in Read
	}{
		{"no such option", 9, nil, false},
		{"short-form path from the partition", 3, makeOption("hd", hd, file, end), false},
		{"no PCI node after the root", 3, makeOption("root only", pciRoot(0), end), false},
		{"truncated node", 3, makeOption("broken", pciRoot(0), []byte{1, 1, 40, 0}), false},
		{"device absent in sysfs", 3, makeOption("gone", pciRoot(0), pci(9, 0), end), true},
		{"root bridge absent in sysfs", 3, makeOption("gone", pciRoot(5), pci(3, 0), end), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Read(efivars(t, c.current, c.opt))
			if !c.sys {
				if !errors.Is(err, ErrUnknown) {
					t.Fatalf("Read = %+v, %v; want ErrUnknown", p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, err := p.Resolve(sysfs(t)); !errors.Is(err, ErrUnknown) {
				t.Errorf("Resolve = %q, %v; want ErrUnknown", got, err)
			}
		})
	}
	if _, err := Read(t.TempDir()); !errors.Is(err, ErrUnknown) {
		t.Errorf("Read without efivars = %v, want ErrUnknown", err)
	}
}
