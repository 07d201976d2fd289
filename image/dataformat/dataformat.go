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
		VolumeName: label,
		Features:   []ext4.FeatureOpt{ext4.WithFeatureReservedGDTBlocksForExpansion(false)},
	})
}
