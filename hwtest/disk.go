package hwtest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// disk is a block device found in sysfs.
type disk struct {
	name  string // vda, sda, nvme0n1
	bus   string // virtio, ata, nvme, scsi, usb
	model string
	size  int64
	parts []span // partitions, in bytes
}

type span struct{ start, size int64 }

// Reads are in chunks of readChunk; a chunk that fails is read again a
// sector at a time to name the sectors.
const (
	readChunk    = 64 << 10
	sector       = 512
	quickSamples = 256
	scratchSize  = 8 << 20
)

func findDisks(o Options) []disk {
	es, _ := os.ReadDir(o.sys("block"))
	var out []disk
	for _, e := range es {
		n := e.Name()
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "zram") ||
			strings.HasPrefix(n, "dm-") || strings.HasPrefix(n, "sr") || strings.HasPrefix(n, "md") {
			continue
		}
		d := disk{name: n, size: readInt(o.sys("block/"+n+"/size")) * sector}
		link, _ := os.Readlink(o.sys("block/" + n))
		switch {
		case strings.HasPrefix(n, "nvme"):
			d.bus = "nvme"
		case strings.Contains(link, "/virtio"):
			d.bus = "virtio"
		case strings.Contains(link, "/usb"):
			d.bus = "usb"
		case strings.Contains(link, "/ata"):
			d.bus = "ata"
		default:
			d.bus = "scsi"
		}
		d.model = readTrim(o.sys("block/" + n + "/device/model"))
		if d.model == "" {
			d.model = d.bus + " disk"
		}
		parts, _ := os.ReadDir(o.sys("block/" + n))
		for _, p := range parts {
			if !strings.HasPrefix(p.Name(), n) {
				continue
			}
			base := "block/" + n + "/" + p.Name()
			d.parts = append(d.parts, span{readInt(o.sys(base+"/start")) * sector, readInt(o.sys(base+"/size")) * sector})
		}
		sort.Slice(d.parts, func(i, j int) bool { return d.parts[i].start < d.parts[j].start })
		out = append(out, d)
	}
	return out
}

func checkDisks(ctx context.Context, o Options) Check {
	disks := findDisks(o)
	if len(disks) == 0 {
		return fail("no disk was found")
	}
	var details []string
	failed := []string{}
	// Presence: each disk of the profile matched to a distinct one here.
	used := map[int]bool{}
	for _, want := range o.Profile.Disks {
		found := false
		for i, d := range disks {
			if !used[i] && d.bus == want.Bus && d.size >= int64(want.MinGiB)<<30 {
				used[i], found = true, true
				break
			}
		}
		if !found {
			failed = append(failed, fmt.Sprintf("the profile's %s disk of at least %d GiB is missing", want.Bus, want.MinGiB))
		}
	}
	for _, d := range disks {
		if ctx.Err() != nil {
			return skip("stopped")
		}
		health, ok := diskHealth(o, d)
		if !ok {
			failed = append(failed, d.name+": "+health)
		}
		read, bad, err := readSample(ctx, o, d)
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s cannot be read (%v)", d.name, err))
		}
		if len(bad) > 0 {
			failed = append(failed, fmt.Sprintf("%s: read errors at sectors %s", d.name, sectorList(bad)))
		}
		details = append(details, fmt.Sprintf("%s (%s, %s, %.1f GiB): %s; %s", d.name, d.bus, d.model, float64(d.size)/(1<<30), health, read))
	}
	scratch := scratchTest(o)
	details = append(details, scratch.Sentence)
	if scratch.Status == Fail {
		failed = append(failed, scratch.Sentence)
	}
	if len(failed) > 0 {
		c := fail("%s", strings.Join(failed, "; "))
		c.Details = details
		return c
	}
	c := pass("%d disk(s) present, read back without errors", len(disks))
	c.Details = details
	return c
}

// readSample reads the first and last MiB of the disk and of every
// partition, and random chunks (every chunk in the full run), and
// returns what it read and the sectors that failed.
func readSample(ctx context.Context, o Options, d disk) (string, []int64, error) {
	f, err := os.OpenFile(o.dev(d.name), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return "not read", nil, err
	}
	defer f.Close()
	var offs []int64
	if o.Mode == Full {
		for off := int64(0); off+readChunk <= d.size; off += readChunk {
			offs = append(offs, off)
		}
	} else {
		ends := append([]span{{0, d.size}}, d.parts...)
		for _, s := range ends {
			for off := s.start; off < s.start+min(s.size, 1<<20); off += readChunk {
				offs = append(offs, off)
			}
			for off := max(s.start, s.start+s.size-(1<<20)) &^ (readChunk - 1); off+readChunk <= s.start+s.size; off += readChunk {
				offs = append(offs, off)
			}
		}
		if chunks := d.size / readChunk; chunks > 0 {
			for range quickSamples {
				offs = append(offs, rand.Int64N(chunks)*readChunk)
			}
		}
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	offs = slices.Compact(offs)
	buf := aligned(readChunk)
	var bad []int64
	var n int64
	for _, off := range offs {
		if ctx.Err() != nil {
			break
		}
		if off+readChunk > d.size {
			continue
		}
		if _, err := f.ReadAt(buf, off); err != nil {
			bad = append(bad, badSectors(f, off)...)
			continue
		}
		n += readChunk
	}
	return fmt.Sprintf("%d MiB read in %d places", n>>20, len(offs)), bad, nil
}

// badSectors reads a failed chunk one sector at a time.
func badSectors(f *os.File, off int64) []int64 {
	var bad []int64
	buf := aligned(sector)
	for s := off; s < off+readChunk; s += sector {
		if _, err := f.ReadAt(buf, s); err != nil {
			bad = append(bad, s/sector)
		}
	}
	if len(bad) == 0 { // the chunk failed and no sector alone did
		bad = append(bad, off/sector)
	}
	return bad
}

// sectorList writes sectors as ranges: "2048-2055, 4096".
func sectorList(s []int64) string {
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var parts []string
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", s[i], s[j]))
		} else {
			parts = append(parts, strconv.FormatInt(s[i], 10))
		}
		i = j + 1
		if len(parts) == 8 && i < len(s) {
			parts = append(parts, fmt.Sprintf("and %d more", len(s)-i))
			break
		}
	}
	return strings.Join(parts, ", ")
}

// scratchTest writes a pattern into a scratch file on the data
// partition, bypassing the page cache, reads it back and removes it.
func scratchTest(o Options) Check {
	if o.ScratchDir == "" {
		return skip("write-read: skipped, no data partition is mounted to hold a scratch file")
	}
	p := filepath.Join(o.ScratchDir, ".hwtest-scratch")
	defer os.Remove(p)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC|unix.O_DIRECT, 0o600)
	if err != nil {
		return fail("write-read: the scratch file cannot be made: %v", err)
	}
	defer f.Close()
	want := aligned(scratchSize)
	r := rand.NewChaCha8([32]byte{'k', 'e', 'e', 'l'})
	r.Read(want)
	if _, err := f.WriteAt(want, 0); err != nil {
		return fail("write-read: writing %d MiB on the data partition failed: %v", scratchSize>>20, err)
	}
	if err := f.Sync(); err != nil {
		return fail("write-read: flushing the scratch file failed: %v", err)
	}
	got := aligned(scratchSize)
	if _, err := f.ReadAt(got, 0); err != nil {
		return fail("write-read: reading the scratch file back failed: %v", err)
	}
	if !bytes.Equal(got, want) {
		return fail("write-read: %d MiB written to the data partition read back different", scratchSize>>20)
	}
	return pass("write-read: %d MiB written to the data partition read back the same", scratchSize>>20)
}

// aligned is a buffer at a page boundary, as O_DIRECT needs.
func aligned(n int) []byte {
	b := make([]byte, n+4096)
	off := int(4096 - uintptr(unsafe.Pointer(&b[0]))%4096)
	if off == 4096 {
		off = 0
	}
	return b[off : off+n]
}

// diskHealth is the disk's own verdict where it has one.
func diskHealth(o Options, d disk) (string, bool) {
	switch d.bus {
	case "nvme":
		return nvmeHealth(o, d)
	case "ata", "scsi", "usb":
		return ataHealth(o, d)
	}
	return "no health report (" + d.bus + " disks have none)", true
}

// nvmeHealth reads the SMART / health log page (02h) of the disk's
// controller: critical warning, temperature, spare and wear.
func nvmeHealth(o Options, d disk) (string, bool) {
	ctrl := strings.SplitN(d.name, "n", 3) // nvme0n1 → nvme, 0, 1
	if len(ctrl) < 2 {
		return "no health report: unexpected NVMe name", true
	}
	f, err := os.OpenFile(o.dev("nvme"+ctrl[1]), os.O_RDONLY, 0)
	if err != nil {
		return "no health report: " + err.Error(), true
	}
	defer f.Close()
	log := make([]byte, 512)
	cmd := nvmeAdminCmd{opcode: 0x02, nsid: 0xffffffff, addr: uint64(uintptr(unsafe.Pointer(&log[0]))), dataLen: 512, cdw10: (127 << 16) | 0x02}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nvmeIoctlAdminCmd, uintptr(unsafe.Pointer(&cmd))); e != 0 {
		return "no health report: the controller refused the health log (" + e.Error() + ")", true
	}
	warn := log[0]
	tempC := int(uint16(log[1])|uint16(log[2])<<8) - 273
	spare, used := log[3], log[5]
	s := fmt.Sprintf("NVMe health: critical warning %#02x, %d °C, %d%% spare, %d%% used", warn, tempC, spare, used)
	return s, warn == 0
}

// nvmeAdminCmd is struct nvme_admin_cmd (linux/nvme_ioctl.h).
type nvmeAdminCmd struct {
	opcode, flags                            uint8
	rsvd1                                    uint16
	nsid, cdw2, cdw3                         uint32
	metadata, addr                           uint64
	metadataLen, dataLen                     uint32
	cdw10, cdw11, cdw12, cdw13, cdw14, cdw15 uint32
	timeoutMs, result                        uint32
}

// nvmeIoctlAdminCmd is NVME_IOCTL_ADMIN_CMD, _IOWR('N', 0x41, 72 bytes).
const nvmeIoctlAdminCmd = 0xC0484E41

// ataHealth asks the disk SMART RETURN STATUS through SCSI ATA
// PASS-THROUGH (16): the answer is in the LBA registers of the sense data.
func ataHealth(o Options, d disk) (string, bool) {
	f, err := os.OpenFile(o.dev(d.name), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return "no health report: " + err.Error(), true
	}
	defer f.Close()
	cdb := [16]byte{0x85, 3 << 1, 0x20, 0, 0xda, 0, 0, 0, 0, 0, 0x4f, 0, 0xc2, 0, 0xb0, 0}
	sense := make([]byte, 32)
	h := sgIOHdr{interfaceID: 'S', dxferDirection: -1, cmdLen: 16, mxSbLen: uint8(len(sense)),
		cmdp: uintptr(unsafe.Pointer(&cdb[0])), sbp: uintptr(unsafe.Pointer(&sense[0])), timeout: 10000}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), sgIO, uintptr(unsafe.Pointer(&h))); e != 0 {
		return "no SMART: the disk does not take ATA pass-through (" + e.Error() + ")", true
	}
	// Descriptor-format sense with the ATA status return descriptor (09h).
	for i := 8; i+14 <= int(h.sbLenWr) && i+14 <= len(sense); i += int(sense[i+1]) + 2 {
		if sense[i] != 0x09 {
			if sense[i+1] == 0 {
				break
			}
			continue
		}
		mid, high := sense[i+9], sense[i+11]
		switch {
		case mid == 0x4f && high == 0xc2:
			return "SMART status good", true
		case mid == 0xf4 && high == 0x2c:
			return "SMART status: a threshold is exceeded, the disk expects to fail", false
		}
		return fmt.Sprintf("SMART status unreadable (registers %#02x %#02x)", mid, high), true
	}
	return "no SMART: the disk answered without a status", true
}

// sgIOHdr is struct sg_io_hdr (scsi/sg.h) on 64-bit Linux.
type sgIOHdr struct {
	interfaceID    int32
	dxferDirection int32
	cmdLen         uint8
	mxSbLen        uint8
	iovecCount     uint16
	dxferLen       uint32
	dxferp         uintptr
	cmdp           uintptr
	sbp            uintptr
	timeout        uint32
	flags          uint32
	packID         int32
	_              [4]byte
	usrPtr         uintptr
	status         uint8
	maskedStatus   uint8
	msgStatus      uint8
	sbLenWr        uint8
	hostStatus     uint16
	driverStatus   uint16
	resid          int32
	duration       uint32
	info           uint32
}

const sgIO = 0x2285

func readInt(p string) int64 {
	n, _ := strconv.ParseInt(readTrim(p), 10, 64)
	return n
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
