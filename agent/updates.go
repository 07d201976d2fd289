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

// startInstaller registers POST /api/v1/install and the jobs endpoints, for
// base and app packages. A base image without trusted keys cannot check
// signatures, so it installs nothing, and says so.
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
			out := map[kpkg.Kind]kpkg.Version{}
			if v, err := kpkg.ParseVersion(a.version()); err == nil {
				out[kpkg.KindBase] = v
			}
			if m := a.apps.Load(); m != nil {
				if _, v, ok := m.Installed(); ok {
					out[kpkg.KindApp] = v
				}
			}
			return out
		},
		Slots:    a.esp,
		Running:  a.boot0.Slot,
		OpenSlot: install.BlockDevices(blockdev.Default()),
		Reboot:   func() error { return a.requestShutdown(pid1.Reboot) },
		Log:      a.log,
	}
	// App packages need the application runtime (and so the data
	// partition); without it they are refused.
	if m := a.apps.Load(); m != nil {
		in.AppSlot = m.ActiveSlot
		in.OpenAppSlot = install.AppBlockDevices(blockdev.Default())
		in.SwitchApp = m.Switch
	}
	in.Routes(a.api)
	return nil
}
