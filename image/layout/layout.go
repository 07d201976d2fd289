// Package layout is the disk layout both sides agree on: the GPT partitions of
// a keel disk, their names, fixed numbers and default sizes. It has no side
// effects; image/ writes disks with it and agent/ finds partitions by name.
package layout

import "fmt"

// Partition names as written into the GPT. The agent finds partitions by
// these names, never by number.
const (
	ESP   = "esp"
	BIOS  = "bios"
	BaseA = "base-a"
	BaseB = "base-b"
	AppA  = "app-a"
	AppB  = "app-b"
	Data  = "data"
)

// MiB is one mebibyte.
const MiB = 1 << 20

// SectorSize is the logical sector size of images written by the builder.
const SectorSize = 512

// Align is the alignment of every partition's start (1 MiB, which suits 4K
// and SSD erase blocks as well as 512-byte sectors).
const Align = MiB

// Part describes one partition of the layout.
type Part struct {
	Name   string
	Number int   // 1-based GPT index; GRUB addresses partitions by it
	Size   int64 // bytes; 0 means "the rest of the disk" (only the last)
}

// Sizes holds the parameters of the layout an image builder may change.
type Sizes struct {
	ESP  int64
	Base int64
	App  int64
	Data int64 // minimum size of the data partition
}

// DefaultSizes are the VM defaults of DESIGN.md.
var DefaultSizes = Sizes{ESP: 64 * MiB, Base: 256 * MiB, App: 512 * MiB, Data: 64 * MiB}

// Parts returns the partitions in disk order for the given sizes. The data
// partition's Size is its minimum; it takes the rest of the disk.
func Parts(s Sizes) []Part {
	return []Part{
		{Name: ESP, Number: 1, Size: s.ESP},
		{Name: BIOS, Number: 2, Size: 1 * MiB},
		{Name: BaseA, Number: 3, Size: s.Base},
		{Name: BaseB, Number: 4, Size: s.Base},
		{Name: AppA, Number: 5, Size: s.App},
		{Name: AppB, Number: 6, Size: s.App},
		{Name: Data, Number: 7, Size: s.Data},
	}
}

// firstUsable is where the first partition starts: 1 MiB leaves room for the
// protective MBR and the primary GPT.
const firstUsable = Align

// gptTail is what the backup GPT needs at the end of the disk (header plus
// 128 entries of 128 bytes), rounded up to the alignment.
const gptTail = Align

// MinDiskSize is the smallest disk that holds the layout with these sizes.
func MinDiskSize(s Sizes) int64 {
	total := int64(firstUsable)
	for _, p := range Parts(s) {
		total += alignUp(p.Size)
	}
	return total + gptTail
}

// Extent is where a partition lies on a disk of a given size.
type Extent struct {
	Part
	Start int64 // byte offset
	End   int64 // byte offset one past the last byte
}

// Extents places the partitions on a disk of diskSize bytes. The data
// partition takes what is left. A disk too small says the minimum.
func Extents(s Sizes, diskSize int64) ([]Extent, error) {
	if min := MinDiskSize(s); diskSize < min {
		return nil, fmt.Errorf("disk size %d MiB is too small for the layout: it needs at least %d MiB", diskSize/MiB, (min+MiB-1)/MiB)
	}
	var out []Extent
	off := int64(firstUsable)
	parts := Parts(s)
	for i, p := range parts {
		size := alignUp(p.Size)
		if i == len(parts)-1 {
			size = (diskSize - gptTail - off) / Align * Align
		}
		out = append(out, Extent{Part: p, Start: off, End: off + size})
		off += size
	}
	return out, nil
}

// Find returns the extent named name.
func Find(exts []Extent, name string) (Extent, bool) {
	for _, e := range exts {
		if e.Name == name {
			return e, true
		}
	}
	return Extent{}, false
}

// Label names one of the two slots of a kind (base or app). It is a type,
// not a string, so a slot is never confused with another word; the only
// values are SlotA and SlotB (and the zero Label, "no slot").
type Label string

// The two slots of each kind.
const (
	SlotA Label = "a"
	SlotB Label = "b"
)

// Labels are both slots, a first.
var Labels = [2]Label{SlotA, SlotB}

// Other returns the other slot; the zero Label's other is SlotA, so a box
// with nothing installed writes slot a first.
func (l Label) Other() Label {
	if l == SlotA {
		return SlotB
	}
	return SlotA
}

// Valid reports whether l is SlotA or SlotB.
func (l Label) Valid() bool { return l == SlotA || l == SlotB }

func (l Label) String() string { return string(l) }

// ParseLabel reads "a" or "b".
func ParseLabel(s string) (Label, error) {
	if l := Label(s); l.Valid() {
		return l, nil
	}
	return "", fmt.Errorf("slot %q is neither a nor b", s)
}

// BasePart returns the partition name of a base slot.
func BasePart(l Label) string { return "base-" + string(l) }

// AppPart returns the partition name of an application slot.
func AppPart(l Label) string { return "app-" + string(l) }

func alignUp(n int64) int64 { return (n + Align - 1) / Align * Align }
