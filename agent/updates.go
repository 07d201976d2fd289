package main

import (
	"errors"
	"fmt"
	"os"

	"keel.dev/keel/agent/blockdev"
	"keel.dev/keel/agent/install"
	"keel.dev/keel/agent/pid1"
	"keel.dev/keel/image/kpkg"
)

// trustedKeysPath is where the initramfs carries the vendor's public keys
// (`make initramfs` puts build/keys/vendor.pub there).
const trustedKeysPath = "/etc/keel/trusted.pub"

// startInstaller registers POST /api/v1/install and the jobs endpoints. A
// base image without trusted keys cannot check signatures, so it installs
// nothing, and says so.
func (a *agent) startInstaller() error {
	if a.api == nil {
		return errors.New("the API is not running")
	}
	pem, err := os.ReadFile(trustedKeysPath)
	if err != nil {
		return fmt.Errorf("no trusted vendor keys in this base image (%s): package installs are disabled", trustedKeysPath)
	}
	keys, err := kpkg.ParsePublicKeys(pem)
	if err != nil {
		return fmt.Errorf("trusted vendor keys %s: %w", trustedKeysPath, err)
	}
	in := &install.Installer{
		Trusted:  keys,
		Hardware: readTrim("/sys/class/dmi/id/product_name"),
		Installed: func() map[kpkg.Kind]kpkg.Version {
			v, err := kpkg.ParseVersion(a.version())
			if err != nil {
				return map[kpkg.Kind]kpkg.Version{}
			}
			return map[kpkg.Kind]kpkg.Version{kpkg.KindBase: v}
		},
		Slots:    a.esp,
		Running:  a.boot0.Slot,
		OpenSlot: install.BlockDevices(blockdev.Default()),
		Reboot:   func() error { return a.requestShutdown(pid1.Reboot) },
		Log:      a.log,
	}
	in.Routes(a.api)
	return nil
}
