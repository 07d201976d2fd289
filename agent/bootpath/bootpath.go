// Package bootpath finds the controller the firmware booted from: the
// device path of the UEFI boot option BootCurrent names, resolved to the
// PCI device in sysfs. The boot loads that controller's storage driver
// first and the other storage controllers' after the commit (a box that
// boots from NVMe or virtio need not wait for AHCI to reset six SATA
// links, nor spend the CPU on it, before it answers).
package bootpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf16"
)

// globalVars is the GUID of the UEFI specification's own variables
// (EFI_GLOBAL_VARIABLE), as efivarfs names files.
const globalVars = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// ErrUnknown means the firmware's boot option does not lead to a PCI
// device this package can find: no UEFI, no BootCurrent, a path that
// starts at the partition (HD(…)) or at a device that is not on PCI.
var ErrUnknown = errors.New("boot controller unknown")

// Node is one PCI hop of a device path: the device and function on the
// bus the hop before leads to.
type Node struct{ Device, Function uint8 }

// Path is the PCI part of a boot option's device path.
type Path struct {
	RootUID uint32 // the ACPI UID of the PCI root bridge, PciRoot(UID)
	PCI     []Node // from the root bridge down to the controller
	Text    string // the device path in the UEFI shell's notation, for logs
	Option  string // the boot option: its number and description, for logs
}

// Read reads BootCurrent and its Boot#### option from efivars (a mounted
// efivarfs) and returns the option's PCI path.
func Read(efivars string) (Path, error) {
	cur, err := readVar(efivars, "BootCurrent")
	if err != nil {
		return Path{}, err
	}
	if len(cur) != 2 {
		return Path{}, fmt.Errorf("BootCurrent holds %d bytes: %w", len(cur), ErrUnknown)
	}
	name := fmt.Sprintf("Boot%04X", binary.LittleEndian.Uint16(cur))
	opt, err := readVar(efivars, name)
	if err != nil {
		return Path{}, err
	}
	desc, dp, err := loadOption(opt)
	if err != nil {
		return Path{}, fmt.Errorf("%s: %w", name, err)
	}
	p, err := parse(dp)
	if err != nil {
		return Path{}, fmt.Errorf("%s (%s): %w", name, desc, err)
	}
	p.Option = name + " " + desc
	return p, nil
}

// readVar returns a variable's data: efivarfs puts its four attribute
// bytes first.
func readVar(efivars, name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(efivars, name+"-"+globalVars))
	if err != nil {
		return nil, fmt.Errorf("read EFI variable %s: %w: %w", name, err, ErrUnknown)
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("EFI variable %s is short: %w", name, ErrUnknown)
	}
	return b[4:], nil
}

// loadOption returns the description and the device path of an
// EFI_LOAD_OPTION: attributes (4 bytes), the path's length (2), a
// NUL-terminated UCS-2 description, the path.
func loadOption(opt []byte) (string, []byte, error) {
	if len(opt) < 6 {
		return "", nil, fmt.Errorf("load option of %d bytes: %w", len(opt), ErrUnknown)
	}
	n := int(binary.LittleEndian.Uint16(opt[4:6]))
	i := 6
	for ; i+1 < len(opt); i += 2 {
		if opt[i] == 0 && opt[i+1] == 0 {
			break
		}
	}
	desc := ucs2(opt[6:i])
	i += 2
	if i+n > len(opt) {
		return "", nil, fmt.Errorf("load option's device path overruns it: %w", ErrUnknown)
	}
	return desc, opt[i : i+n], nil
}

// Device path node types and subtypes (UEFI specification, chapter 10).
const (
	typeHardware  = 0x01
	typeACPI      = 0x02
	typeMessaging = 0x03
	typeMedia     = 0x04
	typeEnd       = 0x7f
	subPCI        = 0x01
	subACPI       = 0x01
	// EISA ids of the PCI and PCI Express root bridges, PNP0A03 and
	// PNP0A08, as the ACPI node stores them.
	pnp0A03 = 0x0a0341d0
	pnp0A08 = 0x0a0841d0
)

// parse reads the PCI part of a device path: PciRoot(UID) followed by one
// Pci(dev,fn) node per bridge and then the controller's.
func parse(dp []byte) (Path, error) {
	var p Path
	var text []string
	root := false
	for len(dp) >= 4 {
		typ, sub, n := dp[0], dp[1], int(binary.LittleEndian.Uint16(dp[2:4]))
		if n < 4 || n > len(dp) {
			return Path{}, fmt.Errorf("device path node of length %d: %w", n, ErrUnknown)
		}
		data := dp[4:n]
		dp = dp[n:]
		switch {
		case typ == typeEnd:
			dp = nil
		case !root && typ == typeACPI && sub == subACPI && len(data) >= 8:
			hid := binary.LittleEndian.Uint32(data[0:4])
			if hid != pnp0A03 && hid != pnp0A08 {
				return Path{}, fmt.Errorf("device path starts at ACPI device %#x: %w", hid, ErrUnknown)
			}
			root = true
			p.RootUID = binary.LittleEndian.Uint32(data[4:8])
			text = append(text, fmt.Sprintf("PciRoot(%#x)", p.RootUID))
		case root && typ == typeHardware && sub == subPCI && len(data) >= 2:
			p.PCI = append(p.PCI, Node{Function: data[0], Device: data[1]})
			text = append(text, fmt.Sprintf("Pci(%#x,%#x)", data[1], data[0]))
		case !root:
			return Path{}, fmt.Errorf("device path starts with a node of type %#x/%#x, not PciRoot: %w", typ, sub, ErrUnknown)
		default:
			// What follows the controller (Sata, NVMe, USB, HD,
			// File…) names what is behind it.
			text = append(text, fmt.Sprintf("%s(%#x)", nodeKind(typ), sub))
		}
	}
	p.Text = strings.Join(text, "/")
	if len(p.PCI) == 0 {
		return Path{}, fmt.Errorf("device path %s has no PCI device: %w", p.Text, ErrUnknown)
	}
	return p, nil
}

func nodeKind(typ byte) string {
	switch typ {
	case typeHardware:
		return "HW"
	case typeACPI:
		return "Acpi"
	case typeMessaging:
		return "Msg"
	case typeMedia:
		return "Media"
	}
	return "Node"
}

// Resolve returns the sysfs device path of p's last PCI device, relative
// to sys and starting with /devices (as uevents' DEVPATH do): the root
// bridge is the pciDDDD:BB whose ACPI companion has p's UID, each hop the
// child with that device and function.
func (p Path) Resolve(sys string) (string, error) {
	roots, err := filepath.Glob(filepath.Join(sys, "devices", "pci*:*"))
	if err != nil || len(roots) == 0 {
		return "", fmt.Errorf("no PCI root bridge in %s: %w", sys, ErrUnknown)
	}
	dir := ""
	for _, r := range roots {
		b, err := os.ReadFile(filepath.Join(r, "firmware_node", "uid"))
		if err != nil {
			continue
		}
		if uid, err := strconv.ParseUint(strings.TrimSpace(string(b)), 0, 32); err == nil && uint32(uid) == p.RootUID {
			dir = r
			break
		}
	}
	if dir == "" {
		if len(roots) != 1 || p.RootUID != 0 {
			return "", fmt.Errorf("no PCI root bridge with UID %d: %w", p.RootUID, ErrUnknown)
		}
		// One root bridge, whose ACPI node says nothing: it is UID 0.
		dir = roots[0]
	}
	for _, n := range p.PCI {
		suffix := fmt.Sprintf(":%02x.%x", n.Device, n.Function)
		kids, err := filepath.Glob(filepath.Join(dir, "????:??:??.?"))
		if err != nil {
			return "", err
		}
		next := ""
		for _, k := range kids {
			if strings.HasSuffix(k, suffix) {
				next = k
				break
			}
		}
		if next == "" {
			return "", fmt.Errorf("no PCI device %02x.%x under %s: %w", n.Device, n.Function, dir, ErrUnknown)
		}
		dir = next
	}
	rel, err := filepath.Rel(sys, dir)
	if err != nil {
		return "", err
	}
	return "/" + filepath.ToSlash(rel), nil
}

// ucs2 decodes a little-endian UCS-2 string (a load option's description).
func ucs2(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		u = append(u, binary.LittleEndian.Uint16(b[i:]))
	}
	return string(utf16.Decode(u))
}
