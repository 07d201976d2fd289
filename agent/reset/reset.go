// Package reset owns the factory reset: the request kept on the ESP (so a
// power cut in the middle finishes the reset at the next boot, and never
// lets the box boot with its old configuration), the wipe of the data
// partition, and the report that stays on the ESP for whoever receives
// the hardware.
//
// The reset runs at boot, before the data partition is mounted: nothing
// holds it open, and the same code serves the first try and the resumed
// one. The named states are Requested (the API asked, the box restarts)
// and Wiping (the wipe began); the journal goes once the report is
// written.
package reset

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/atomicfile"
)

// Mode is how thoroughly the data partition is wiped.
type Mode string

// The modes.
const (
	// Quick makes a new data file system: the old one's blocks stay on
	// the disk, unreachable.
	Quick Mode = "quick"
	// Secure is NIST SP 800-88 Clear: the device's secure discard where
	// it has one, else zeros written by the device, else an overwrite
	// pass with zeros, then random blocks read back to verify.
	Secure Mode = "secure"
)

// Then is what follows the reset.
type Then string

// What follows.
const (
	Reboot   Then = "reboot"   // boot on as a new appliance
	PowerOff Then = "poweroff" // for the hardware's return
)

// The journal's states.
const (
	StateRequested = "requested"
	StateWiping    = "wiping"
)

// Request is a factory reset asked for.
type Request struct {
	Mode      Mode      `json:"mode"`
	Then      Then      `json:"then"`
	State     string    `json:"state"`
	Requested time.Time `json:"requested"`
	By        string    `json:"by"`
}

// Report is what a reset did, kept on the ESP.
type Report struct {
	Mode     Mode      `json:"mode"`
	Method   string    `json:"method"` // "new file system", "secure discard", "device write zeroes", "overwrite with zeros"
	Level    string    `json:"level"`  // "Clear" (NIST SP 800-88) for secure, "" for quick
	Bytes    int64     `json:"bytes"`
	Verified int       `json:"blocks_verified"` // random 4 KiB blocks read back as zeros
	Started  time.Time `json:"started"`
	Took     float64   `json:"took_s"`
	Resumed  bool      `json:"resumed"` // a power cut interrupted the first try
	Then     Then      `json:"then"`
	// Removed are the ESP's copies of the box's secrets that were
	// overwritten and removed (the users' mirror, the recovery identity).
	Removed []string `json:"removed"`
}

// Text is the report as the console shows it.
func (r Report) Text() string {
	s := fmt.Sprintf("factory reset (%s) finished %s: %s", r.Mode, r.Started.Add(time.Duration(r.Took*float64(time.Second))).UTC().Format(time.RFC3339), r.Method)
	if r.Level != "" {
		s += fmt.Sprintf(", NIST SP 800-88 %s, %d bytes, %d random blocks read back as zeros", r.Level, r.Bytes, r.Verified)
	}
	if r.Resumed {
		s += ", finished after a power cut"
	}
	return s + fmt.Sprintf(", in %.1f s", r.Took)
}

// Files on the ESP.
const (
	JournalFile = "reset.json"
	ReportFile  = "reset-report.json"
)

// Store keeps the journal and the report in a folder of the ESP.
type Store struct {
	Dir string
	// ZeroFree fills the free space of Dir's file system with zeros
	// (a secure reset); nil is the real one. Tests on the host's disk
	// must not fill it.
	ZeroFree func(dir string) error
}

// Ask records a request; the caller restarts the box.
func (s Store) Ask(r Request) error {
	switch r.Mode {
	case Quick, Secure:
	default:
		return fmt.Errorf("mode: use quick or secure")
	}
	switch r.Then {
	case Reboot, PowerOff:
	case "":
		r.Then = Reboot
	default:
		return fmt.Errorf("then: use reboot or poweroff")
	}
	r.State = StateRequested
	return s.save(r)
}

func (s Store) save(r Request) error {
	b, _ := json.Marshal(r)
	return atomicfile.Write(filepath.Join(s.Dir, JournalFile), b, 0o600)
}

// Pending is the request waiting, if any.
func (s Store) Pending() (*Request, error) {
	b, err := os.ReadFile(filepath.Join(s.Dir, JournalFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Request
	if err := json.Unmarshal(b, &r); err != nil {
		// A damaged request is still a request: the safe reading is the
		// thorough one.
		return &Request{Mode: Secure, Then: PowerOff, State: StateWiping}, nil
	}
	return &r, nil
}

// LastReport is the report of the last reset, if any.
func (s Store) LastReport() (*Report, error) {
	b, err := os.ReadFile(filepath.Join(s.Dir, ReportFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Report
	return &r, json.Unmarshal(b, &r)
}

// Device is the data partition.
type Device struct {
	Path string
	Size int64
}

// Run carries out a pending request on dev: wipe, remove the secrets'
// copies (overwritten first, so the FAT's free clusters keep nothing),
// write the report, clear the journal. progress is told 0..1 from time to
// time.
func (s Store) Run(r *Request, dev Device, secrets []string, progress func(float64)) (Report, error) {
	rep := Report{Mode: r.Mode, Started: time.Now(), Resumed: r.State == StateWiping, Then: r.Then, Bytes: dev.Size, Removed: []string{}}
	r.State = StateWiping
	if err := s.save(*r); err != nil {
		return rep, err
	}
	start := time.Now()
	var err error
	switch r.Mode {
	case Secure:
		rep.Level = "Clear"
		rep.Method, rep.Verified, err = clear(dev, progress)
	default:
		rep.Method = "new file system"
		err = zeroHead(dev)
	}
	if err != nil {
		return rep, fmt.Errorf("wipe the data partition: %w", err)
	}
	for _, p := range secrets {
		if scrub(p) {
			rep.Removed = append(rep.Removed, p)
		}
	}
	if r.Mode == Secure {
		// Earlier versions of those files (every change wrote a new one)
		// are in the ESP's free clusters: zero them too.
		zf := s.ZeroFree
		if zf == nil {
			zf = zeroFree
		}
		if err := zf(s.Dir); err != nil {
			return rep, fmt.Errorf("clear the ESP's free space: %w", err)
		}
	}
	rep.Took = time.Since(start).Seconds()
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := atomicfile.Write(filepath.Join(s.Dir, ReportFile), append(b, '\n'), 0o644); err != nil {
		return rep, err
	}
	if err := os.Remove(filepath.Join(s.Dir, JournalFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return rep, err
	}
	return rep, atomicfile.SyncDir(s.Dir)
}

// zeroHead zeroes the first and last MiB (the file system's superblock
// and its backup at the start; GPT keeps nothing in a partition): the
// next mount finds an empty partition and makes a new file system.
func zeroHead(dev Device) error {
	f, err := os.OpenFile(dev.Path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	z := make([]byte, 1<<20)
	if _, err := f.WriteAt(z[:min(int64(len(z)), dev.Size)], 0); err != nil {
		return err
	}
	if dev.Size > 2<<20 {
		if _, err := f.WriteAt(z, dev.Size-int64(len(z))); err != nil {
			return err
		}
	}
	return f.Sync()
}

// verifyBlocks is how many random 4 KiB blocks the secure reset reads
// back.
const verifyBlocks = 256

// clear wipes the whole partition, by the first of these the device
// does: its secure discard (when discarded blocks then read back as
// zeros); zeros written by the device itself (BLKZEROOUT: NVMe Write
// Zeroes, SCSI WRITE SAME, virtio-blk WRITE_ZEROES; the kernel asks the
// device not to merely unmap, and writes zero pages itself where the
// device cannot); an overwrite pass with zeros from here. Either way
// random blocks are read back to verify.
//
// The disk's own sanitize commands (NVMe Format or Sanitize, ATA
// SECURITY ERASE UNIT) are not used: they erase the whole device, and the
// data partition shares it with the boot slots the box boots from next.
func clear(dev Device, progress func(float64)) (string, int, error) {
	f, err := os.OpenFile(dev.Path, os.O_RDWR, 0)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	rng := [2]uint64{0, uint64(dev.Size)}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKSECDISCARD, uintptr(unsafe.Pointer(&rng))); e == 0 {
		if n, err := verify(f, dev.Size); err == nil {
			return "secure discard", n, nil
		}
		// Discarded blocks that do not read as zeros: overwrite them too.
	}
	method := "device write zeroes"
	if err := zeroOut(f, dev.Size, progress); err != nil {
		method = "overwrite with zeros"
		if err := overwrite(f, dev.Size, progress); err != nil {
			return method, 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return method, 0, err
	}
	// Read back from the device, not the page cache.
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	n, err := verify(f, dev.Size)
	return method, n, err
}

// clearChunk is how much is cleared between progress reports.
const clearChunk = 256 << 20

// zeroOut has the device write zeros over the partition, a chunk at a
// time; it fails at once on what is not a block device.
func zeroOut(f *os.File, size int64, progress func(float64)) error {
	for off := int64(0); off < size; off += clearChunk {
		rng := [2]uint64{uint64(off), uint64(min(clearChunk, size-off))}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&rng))); e != 0 {
			return fmt.Errorf("zero out at %d: %w", off, e)
		}
		if progress != nil {
			progress(float64(off+int64(rng[1])) / float64(size))
		}
	}
	return nil
}

// overwrite writes zeros over the partition from here.
func overwrite(f *os.File, size int64, progress func(float64)) error {
	buf := make([]byte, 4<<20)
	var off int64
	for off < size {
		n := min(int64(len(buf)), size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return fmt.Errorf("overwrite at %d: %w", off, err)
		}
		off += n
		if off%clearChunk == 0 {
			f.Sync()
			if progress != nil {
				progress(float64(off) / float64(size))
			}
		}
	}
	return nil
}

func verify(f *os.File, size int64) (int, error) {
	const bs = 4096
	blocks := size / bs
	if blocks == 0 {
		return 0, nil
	}
	buf := make([]byte, bs)
	var rb [8]byte
	for i := 0; i < verifyBlocks; i++ {
		rand.Read(rb[:])
		b := int64(binary.LittleEndian.Uint64(rb[:]) % uint64(blocks))
		if i == 0 {
			b = 0
		} else if i == 1 {
			b = blocks - 1
		}
		if _, err := f.ReadAt(buf, b*bs); err != nil && err != io.EOF {
			return i, err
		}
		for _, c := range buf {
			if c != 0 {
				return i, fmt.Errorf("block %d does not read back as zeros", b)
			}
		}
	}
	return verifyBlocks, nil
}

// zeroFree fills the free space of dir's file system with zeros, then
// frees it again.
func zeroFree(dir string) error {
	p := filepath.Join(dir, ".reset-fill")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(p)
	z := make([]byte, 1<<20)
	for {
		if _, err := f.Write(z); err != nil {
			if errors.Is(err, unix.ENOSPC) {
				break
			}
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil && !errors.Is(err, unix.ENOSPC) {
		f.Close()
		return err
	}
	return f.Close()
}

// scrub overwrites a file (or every file under a folder) with zeros,
// syncs, and removes it; it reports whether there was anything.
func scrub(p string) bool {
	found := false
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		found = true
		if info, err := d.Info(); err == nil {
			if f, err := os.OpenFile(q, os.O_WRONLY, 0); err == nil {
				f.WriteAt(make([]byte, info.Size()), 0)
				f.Sync()
				f.Close()
			}
		}
		return nil
	})
	os.RemoveAll(p)
	return found
}
