// Package manifest describes what a slot holds. Every base slot's squashfs
// carries a manifest.json the agent reads to know what it runs.
package manifest

import (
	"encoding/json"
	"fmt"
	"time"
)

// BaseFile is the manifest's name inside a base slot's squashfs.
const BaseFile = "manifest.json"

// Files in a base slot besides the manifest; GRUB loads them by these names.
const (
	KernelFile    = "vmlinuz"
	InitramfsFile = "initramfs"
)

// ToolsDir is the initramfs's folder of u-root tools: the busybox bb and
// a link to it per command. The kernel need not unpack bb at every boot
// (7 MB, about 0.3 s of an emulated boot): the image builder moves the
// folder's programs into the same folder of the base slot's squashfs and
// leaves them empty in the initramfs, and the agent mounts each of the
// slot's programs on its empty file once the slot is mounted. An initramfs
// booted directly (tests, benchmarks) keeps them.
const ToolsDir = "bbin"

// Base is the manifest of a base slot.
type Base struct {
	Kind      string    `json:"kind"` // always "base"
	Name      string    `json:"name"`
	Version   string    `json:"version"`
	BuildTime time.Time `json:"build_time"`
	Kernel    string    `json:"kernel"` // kernel release, e.g. 6.1.0-56-amd64
}

// ParseBase reads a base manifest and checks it names a base.
func ParseBase(b []byte) (*Base, error) {
	var m Base
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("base manifest: %w", err)
	}
	if m.Kind != "base" || m.Version == "" {
		return nil, fmt.Errorf("base manifest: kind %q version %q: not a base slot manifest", m.Kind, m.Version)
	}
	return &m, nil
}
