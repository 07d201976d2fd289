package main

import (
	"path"

	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage"

	"keel.dev/keel/initramfs/kmods"
)

// kernelReleaseFile names the kernel release the initramfs was built for,
// so the agent can tell a kernel/initramfs mismatch from a missing module.
const kernelReleaseFile = "etc/keel/kernel-release"

// baseRecords are the files that are not Go binaries: the directory
// skeleton, the device nodes the kernel needs before anything mounts
// devtmpfs, and the kernel modules with their index files.
func baseRecords(release string, modules []kmods.File) []cpio.Record {
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.Directory("dev", 0o755),
		cpio.Directory("etc", 0o755),
		cpio.Directory("etc/keel", 0o755),
		cpio.Directory("lib", 0o755),
		cpio.Directory("mnt", 0o755),
		cpio.Directory("proc", 0o555),
		cpio.Directory("root", 0o700),
		cpio.Directory("run", 0o755),
		cpio.Directory("sbin", 0o755),
		cpio.Directory("sys", 0o555),
		cpio.Directory("tmp", 0o1777),
		cpio.Directory("var", 0o755),
		cpio.Directory("var/log", 0o755),
		// The kernel opens /dev/console for init's stdin/stdout/stderr
		// before userspace can mount devtmpfs.
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		cpio.StaticFile(kernelReleaseFile, release+"\n", 0o644),
		// The hardware self-test's command is the agent under another
		// name (it runs the same library).
		cpio.Symlink("bin/hwtest", "agent"),
		// The kernel's module-request helper is too, but PID 1 makes
		// the link /sbin/modprobe itself (pid1.LinkModprobe): the
		// kernel's own initcalls would start it for nothing.
	}
	// UTC zone data, as u-root ships it; the box keeps its clock in UTC.
	if r, ok := uimage.DefaultRamfs().Get("etc/localtime"); ok {
		recs = append(recs, r)
	}
	modDir := path.Join("lib/modules", release)
	for _, f := range modules {
		recs = append(recs, cpio.StaticRecord(f.Data, cpio.Info{
			Name: path.Join(modDir, f.Name),
			Mode: cpio.S_IFREG | 0o644,
		}))
	}
	return recs
}
