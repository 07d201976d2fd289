package dataformat

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/diskfs/go-diskfs/backend"
)

// ReservedPercent of the data file system's blocks only root may use:
// the application (its own user) cannot fill the disk past them, so the
// agent's own saves (configuration, boot records, backups) still fit.
const ReservedPercent = 5

// Offsets in the ext4 superblock, which starts 1024 bytes into the file
// system.
const (
	sbOffset      = 1024
	sbSize        = 1024
	offBlocksLo   = 0x04
	offRBlocksLo  = 0x08
	offMagic      = 0x38
	offROCompat   = 0x64
	offBlocksHi   = 0x150
	offRBlocksHi  = 0x154
	offChecksum   = 0x3FC
	roCompatCsum  = 0x400 // metadata_csum
	ext4SuperMagc = 0xEF53
)

// Reserve sets the file system's reserved block count to percent of its
// blocks. go-diskfs computes the count in integer percent and so always
// writes 0; this rewrites the primary superblock (and its checksum) once
// nothing else will write it.
func Reserve(b backend.Storage, start int64, percent int) error {
	sb, err := readSuper(b, start)
	if err != nil {
		return err
	}
	return writeReserve(b, start, sb, percent)
}

// EnsureReserve sets the reserve as Reserve does on a file system that
// has none (made by a build from before Reserve), and leaves any other
// count as it is. It says whether it wrote.
func EnsureReserve(b backend.Storage, start int64, percent int) (bool, error) {
	sb, err := readSuper(b, start)
	if err != nil {
		return false, err
	}
	if binary.LittleEndian.Uint32(sb[offRBlocksLo:]) != 0 || binary.LittleEndian.Uint32(sb[offRBlocksHi:]) != 0 {
		return false, nil
	}
	return true, writeReserve(b, start, sb, percent)
}

func readSuper(b backend.Storage, start int64) ([]byte, error) {
	sb := make([]byte, sbSize)
	if _, err := b.ReadAt(sb, start+sbOffset); err != nil {
		return nil, fmt.Errorf("data file system: read the superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(sb[offMagic:]) != ext4SuperMagc {
		return nil, fmt.Errorf("data file system: no ext4 superblock at %d", start+sbOffset)
	}
	return sb, nil
}

func writeReserve(b backend.Storage, start int64, sb []byte, percent int) error {
	blocks := uint64(binary.LittleEndian.Uint32(sb[offBlocksLo:])) | uint64(binary.LittleEndian.Uint32(sb[offBlocksHi:]))<<32
	r := blocks * uint64(percent) / 100
	binary.LittleEndian.PutUint32(sb[offRBlocksLo:], uint32(r))
	binary.LittleEndian.PutUint32(sb[offRBlocksHi:], uint32(r>>32))
	if binary.LittleEndian.Uint32(sb[offROCompat:])&roCompatCsum != 0 {
		sum := crc32.Update(0xFFFFFFFF, crc32.MakeTable(crc32.Castagnoli), sb[:offChecksum])
		binary.LittleEndian.PutUint32(sb[offChecksum:], sum)
	}
	w, err := b.Writable()
	if err != nil {
		return fmt.Errorf("data file system: %w", err)
	}
	if _, err := w.WriteAt(sb, start+sbOffset); err != nil {
		return fmt.Errorf("data file system: write the superblock: %w", err)
	}
	return nil
}
