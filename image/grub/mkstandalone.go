package grub

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ModuleDir is where Debian's grub-efi-amd64-bin installs its modules.
const ModuleDir = "/usr/lib/grub/x86_64-efi"

// modules are the GRUB modules the standalone binary carries: GPT, the ESP's
// FAT and the slots' squashfs, the serial and EFI consoles, the linux loader,
// the environment block and what grub.cfg's script uses.
var modules = []string{
	"part_gpt", "fat", "squash4", "serial", "terminal", "efi_gop", "efi_uga",
	"linux", "normal", "configfile", "echo", "test", "loadenv", "regexp", "sleep", "probe",
}

// BuildEFI writes the standalone GRUB EFI binary to out with grub-mkstandalone.
func BuildEFI(ctx context.Context, out string) error {
	if _, err := os.Stat(filepath.Join(ModuleDir, "linux.mod")); err != nil {
		return fmt.Errorf("GRUB EFI modules not found in %s: run `make deps` (Debian package grub-efi-amd64-bin)", ModuleDir)
	}
	tool, err := exec.LookPath("grub-mkstandalone")
	if err != nil {
		return fmt.Errorf("grub-mkstandalone not found: run `make deps` (Debian package grub-common)")
	}
	cfg, err := Embedded()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "keel-grub")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfgPath := filepath.Join(tmp, "grub.cfg")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		return err
	}
	mods := ""
	for i, m := range modules {
		if i > 0 {
			mods += " "
		}
		mods += m
	}
	cmd := exec.CommandContext(ctx, tool, "-O", "x86_64-efi", "-d", ModuleDir,
		"--modules="+mods, "--install-modules="+mods, "--locales=", "--themes=", "--fonts=",
		"-o", out, "boot/grub/grub.cfg="+cfgPath)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("grub-mkstandalone: %v: %s", err, b)
	}
	return nil
}
