package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Programs Start runs, from Debian's qemu-system-x86 and qemu-utils.
const (
	qemuSystem = "qemu-system-x86_64"
	qemuImg    = "qemu-img"
)

// findTools returns the paths of QEMU and qemu-img, or an error telling the
// user how to install them.
func findTools() (system, img string, err error) {
	system, err = exec.LookPath(qemuSystem)
	if err != nil {
		return "", "", fmt.Errorf("qemu: %s not found in PATH: run `make deps` (Debian package qemu-system-x86)", qemuSystem)
	}
	img, err = exec.LookPath(qemuImg)
	if err != nil {
		return "", "", fmt.Errorf("qemu: %s not found in PATH: run `make deps` (Debian package qemu-utils)", qemuImg)
	}
	return system, img, nil
}

// checkFirmware reports missing OVMF files with the way to install them.
func checkFirmware(files ...string) error {
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("qemu: UEFI firmware %s missing: run `make deps` (Debian package ovmf): %w", f, err)
		}
	}
	return nil
}

// imageFormat asks qemu-img what an image is; only raw and qcow2 are
// expected, since those are what image/ builds. --force-share lets it look
// at an image another QEMU has open.
func imageFormat(ctx context.Context, img, path string) (string, error) {
	out, err := runTool(ctx, img, "info", "--force-share", "--output=json", path)
	if err != nil {
		return "", err
	}
	var info struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("qemu: parse `qemu-img info` of %s: %w", path, err)
	}
	if info.Format != "raw" && info.Format != "qcow2" {
		return "", fmt.Errorf("qemu: image %s is %q; want raw or qcow2", path, info.Format)
	}
	return info.Format, nil
}

// createOverlay makes a qcow2 overlay whose backing file is the image, so
// the VM writes only to the overlay. sizeMiB > 0 sets its virtual size.
func createOverlay(ctx context.Context, img, image, overlay string, sizeMiB int) error {
	abs, err := filepath.Abs(image)
	if err != nil {
		return fmt.Errorf("qemu: image path: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return fmt.Errorf("qemu: image: %w", err)
	}
	format, err := imageFormat(ctx, img, abs)
	if err != nil {
		return err
	}
	args := []string{"create", "-q", "-f", "qcow2", "-F", format, "-b", abs, overlay}
	if sizeMiB > 0 {
		args = append(args, strconv.Itoa(sizeMiB)+"M")
	}
	if _, err := runTool(ctx, img, args...); err != nil {
		return err
	}
	return nil
}

// runTool runs a short-lived tool and returns its stdout; the error carries
// its stderr.
func runTool(ctx context.Context, prog string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("qemu: %s %s: %w: %s", filepath.Base(prog), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// copyFile copies src to a new file dst (the firmware's variable store, which
// each VM must have its own writable copy of).
func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("qemu: %w", cerr)
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("qemu: copy %s to %s: %w", src, dst, err)
	}
	return nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process can take it before QEMU binds it; Start retries then.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("qemu: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// maxSocketPath is below the 108 bytes of sun_path, leaving room for the
// terminating NUL.
const maxSocketPath = 100

// socketDir returns where the QMP socket can go: workDir unless its path is
// too long for a unix socket (long test names make long t.TempDir paths), in
// which case a short temporary directory the caller must remove.
func socketDir(workDir string) (dir string, temporary bool, err error) {
	if len(filepath.Join(workDir, "qmp.sock")) <= maxSocketPath {
		return workDir, false, nil
	}
	dir, err = os.MkdirTemp("", "keel-qmp-")
	if err != nil {
		return "", false, fmt.Errorf("qemu: directory for the QMP socket: %w", err)
	}
	return dir, true, nil
}
