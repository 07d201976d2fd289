// Package dataformat is the format of the data partition's file system,
// shared by the image builder, which creates it, and the agent, which
// recreates it on an empty partition or a factory reset.
package dataformat

import (
	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
)

// Label is the ext4 volume name.
const Label = "keel-data"

// Create makes the data file system on b at [start, start+size).
// resize_inode is off: go-diskfs writes one e2fsck finds invalid, and the
// data partition is never resized online.
func Create(b backend.Storage, start, size int64) (*ext4.FileSystem, error) {
	return CreateLabeled(b, start, size, Label)
}

// CreateLabeled makes the same file system with another volume name (the
// applications' data volumes use it).
func CreateLabeled(b backend.Storage, start, size int64, label string) (*ext4.FileSystem, error) {
	return ext4.Create(b, size, start, 512, &ext4.Params{
		VolumeName:      label,
		SectorsPerBlock: blockSize / 512,
		InodeCount:      inodeCount(size),
		Features:        []ext4.FeatureOpt{ext4.WithFeatureReservedGDTBlocksForExpansion(false)},
	})
}

// MountOptions are the data options every mount of these file systems
// takes. noinit_itable: go-diskfs writes the inode tables zeroed, so the
// kernel's lazy init would only write them again (gigabytes in the
// background on a large disk), and on a file system made before inodeCount
// below it finds the half-block tables and makes the file system
// read-only.
const MountOptions = "errors=remount-ro,noinit_itable"

// inodeSize is go-diskfs's, and inodeRatio its default bytes per inode.
const (
	inodeSize  = 256
	inodeRatio = 8192
)

// blockSize is 4 KiB at every size. Small file systems (an application's
// data volume) used to get 1 KiB blocks, as go-diskfs picks below 512 MiB:
// eight times the block groups, each with an inode bitmap go-diskfs pads a
// bit at a time, which made a 208 MiB volume 0.8 s of an emulated first
// boot. Small files waste more of a 4 KiB block; applications keep
// databases and logs, not many tiny files.
const blockSize = 4096

// inodeCount gives every block group an inode table of whole blocks.
// go-diskfs rounds the inodes per group up to a multiple of 8 only; with
// 4 KiB blocks (16 inodes a block) a size that is not a power of two then
// gets tables that end in the middle of a block, which the kernel's
// ext4lazyinit takes for corruption: "Something is wrong with group 0", and
// the file system goes read-only.
func inodeCount(size int64) uint32 {
	const perGroup = blockSize * 8 // blocks per group: one block of bitmap
	groups := (size/blockSize + perGroup - 1) / perGroup
	per := (size/inodeRatio + groups - 1) / groups
	const multiple = blockSize / inodeSize
	per = (per + multiple - 1) / multiple * multiple
	return uint32(per * groups)
}
