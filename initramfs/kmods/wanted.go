package kmods

// Wanted returns the modules keel ships in its initramfs; Closure adds their
// dependencies. Devices are bound by coldplug through modules.alias; the
// modules without a modalias (file systems, evdev, crc32c) are loaded by name.
func Wanted() []string {
	return []string{
		// Virtual machines: virtio (QEMU/KVM, most clouds), plus the
		// disk and NIC models other hypervisors default to.
		"virtio", "virtio_ring", "virtio_pci", "virtio_pci_modern_dev",
		"virtio_pci_legacy_dev", "virtio_blk", "virtio_scsi", "virtio_net",
		"net_failover", "failover", "virtio_console", "virtio_rng",
		"vmxnet3", "vmw_pvscsi",

		// NICs of physical appliances and emulated ones.
		"e1000", "e1000e", "igb", "igc", "ixgbe", "r8169",

		// Disks: SATA (ahci, and ata_piix for QEMU's i440fx IDE), NVMe.
		"ahci", "libahci", "ata_piix", "libata", "sd_mod", "scsi_mod",
		"nvme", "nvme_core",

		// File systems of the disk layout: ext4 data, squashfs slots,
		// FAT ESP (vfat needs a codepage and a charset).
		"ext4", "jbd2", "mbcache", "crc16", "crc32c_generic", "crc32c_intel",
		"libcrc32c", "squashfs", "vfat", "fat", "nls_cp437", "nls_ascii",
		"nls_iso8859_1", "nls_utf8", "efivarfs",

		// Verified, read-only slots.
		"dm_mod", "dm_verity", "loop",

		// Watchdog for trial boots, ACPI power button for shutdown.
		"i6300esb", "button", "evdev",
	}
}
