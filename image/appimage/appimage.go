// Package appimage builds application slot images: a squashfs with the
// application's files and app.json (package appspec) at its root, which is
// the payload of an app package and what the image builder writes into
// app-a. It also builds the demo application (image/demoapp) that images,
// release fixtures and tests use.
package appimage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"

	"keel.dev/keel/image/appspec"
	"keel.dev/keel/image/diskimage"
)

// DemoPackage is the demo application's Go package.
const DemoPackage = "keel.dev/keel/image/demoapp"

// BrokenDemoVersion is the demo version built to fail its health check.
const BrokenDemoVersion = "2.0.1"

// DemoCommand is where the demo binary lives in its slot.
const DemoCommand = "/bin/demo"

// DemoPort is the port the demo listens on in its slot image.
const DemoPort = 8080

// DemoSpec is the demo's app.json at version.
func DemoSpec(version string) appspec.Spec {
	return appspec.Spec{
		Name: "demo", Version: version, Command: DemoCommand,
		Env:   map[string]string{"PORT": fmt.Sprint(DemoPort)},
		Ports: []int{DemoPort},
		Health: appspec.Health{
			HTTP:    &appspec.HTTPCheck{Port: DemoPort, Path: "/healthz", ExpectStatus: 200},
			Timeout: appspec.Duration(appspec.DefaultHealthTimeout),
		},
		StopTimeout: appspec.Duration(appspec.DefaultStopTimeout),
	}
}

// Demo builds the demo at version and writes its slot image to
// outSquashfs. Version BrokenDemoVersion fails its health check.
func Demo(outSquashfs, version string) error { return DemoCached(outSquashfs, version, "") }

// DemoCached is Demo keeping the built binary in cacheDir (when not
// empty), keyed by the version and the demo's sources.
func DemoCached(outSquashfs, version, cacheDir string) error {
	bin, cleanup, err := demoBinary(version, cacheDir)
	if err != nil {
		return err
	}
	defer cleanup()
	return Build(outSquashfs, DemoSpec(version), map[string]string{DemoCommand: bin})
}

// BuildDemo compiles the demo at version into outBinary: a static amd64
// binary (CGO_ENABLED=0 GOAMD64=v1 -trimpath) with the version linked in,
// and the broken health check when version is BrokenDemoVersion. It runs
// `go build` in the current folder, which must be inside the keel module.
func BuildDemo(outBinary, version string) error {
	ldflags := "-s -w -X main.version=" + version
	if version == BrokenDemoVersion {
		ldflags += " -X main.broken=1"
	}
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", outBinary, DemoPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the demo app %s (run from the keel checkout): %v\n%s", version, err, out)
	}
	return nil
}

// demoBinary returns a built demo binary and a function that removes it
// when it is not a cached one.
func demoBinary(version, cacheDir string) (string, func(), error) {
	if cacheDir == "" {
		dir, err := os.MkdirTemp("", "keel-demo")
		if err != nil {
			return "", nil, err
		}
		bin := filepath.Join(dir, "demo")
		if err := BuildDemo(bin, version); err != nil {
			os.RemoveAll(dir)
			return "", nil, err
		}
		return bin, func() { os.RemoveAll(dir) }, nil
	}
	key, err := demoKey(version)
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(cacheDir, "demo-"+version+"-"+key)
	if _, err := os.Stat(bin); err == nil {
		return bin, func() {}, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", nil, err
	}
	tmp := bin + ".tmp"
	if err := BuildDemo(tmp, version); err != nil {
		return "", nil, err
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", nil, err
	}
	return bin, func() {}, nil
}

// demoKey hashes the version and the demo's Go sources, so a cached binary
// is rebuilt when either changes.
func demoKey(version string) (string, error) {
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}", DemoPackage).Output()
	if err != nil {
		return "", fmt.Errorf("find the demo app's sources (run from the keel checkout): %w", err)
	}
	dir := strings.TrimSpace(string(out))
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00", version)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(f), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Build writes an application slot image to outSquashfs: app.json from
// spec, and files, each a destination path in the image (such as
// "/bin/demo") mapped to a file on this machine. Files are owned by root;
// a file executable here is mode 0755 in the image, any other 0644. The
// spec's command (and its health command) must be among the files.
func Build(outSquashfs string, spec appspec.Spec, files map[string]string) error {
	aj, err := appspec.Marshal(spec)
	if err != nil {
		return err
	}
	type entry struct {
		name, src string
		mode      os.FileMode
	}
	var ents []entry
	total := int64(len(aj))
	for dst, src := range files {
		name := strings.TrimPrefix(path.Clean("/"+dst), "/")
		if name == "" || name == appspec.File {
			return fmt.Errorf("app image %s: %q cannot be a file of the image", outSquashfs, dst)
		}
		st, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("app image %s: %w", outSquashfs, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("app image %s: %s is not a regular file", outSquashfs, src)
		}
		mode := os.FileMode(0o644)
		if st.Mode()&0o111 != 0 {
			mode = 0o755
		}
		ents = append(ents, entry{name, src, mode})
		total += st.Size()
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
	need := []string{spec.Command}
	if c := spec.Health.Command; len(c) > 0 {
		need = append(need, c[0])
	}
	for _, n := range need {
		i := sort.Search(len(ents), func(i int) bool { return ents[i].name >= n[1:] })
		if i == len(ents) || ents[i].name != n[1:] {
			return fmt.Errorf("app image %s: %s of app.json is not among the image's files", outSquashfs, n)
		}
		if ents[i].mode&0o111 == 0 {
			return fmt.Errorf("app image %s: %s of app.json is not executable (%s)", outSquashfs, n, ents[i].src)
		}
	}

	tmp := outSquashfs + ".tmp"
	os.Remove(tmp)
	defer os.Remove(tmp)
	// The backend needs a size up front; trim cuts the file to the
	// squashfs afterwards.
	b, err := file.CreateFromPath(tmp, total+16<<20)
	if err != nil {
		return fmt.Errorf("app image %s: %w", outSquashfs, err)
	}
	defer b.Close()
	fs, err := squashfs.Create(b, 0, 0, 4096)
	if err != nil {
		return fmt.Errorf("app image %s: %w", outSquashfs, err)
	}
	// go-diskfs leaves its workspace (a copy of every file) behind once
	// finalized.
	defer os.RemoveAll(fs.Workspace())
	add := func(name string, mode os.FileMode, src io.Reader) error {
		if dir := path.Dir(name); dir != "." {
			if err := fs.Mkdir(dir); err != nil {
				return err
			}
		}
		w, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, src); err != nil {
			w.Close()
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
		return fs.Chmod(name, mode)
	}
	if err := add(appspec.File, 0o644, strings.NewReader(string(aj))); err != nil {
		return fmt.Errorf("app image %s: add %s: %w", outSquashfs, appspec.File, err)
	}
	for _, e := range ents {
		f, err := os.Open(e.src)
		if err != nil {
			return fmt.Errorf("app image %s: %w", outSquashfs, err)
		}
		err = add(e.name, e.mode, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("app image %s: add /%s: %w", outSquashfs, e.name, err)
		}
	}
	// The workspace's root is a private temp folder; the slot's root must
	// be open to the application's unprivileged user.
	if err := fs.Chmod(".", 0o755); err != nil {
		return fmt.Errorf("app image %s: %w", outSquashfs, err)
	}
	root := uint32(0)
	// gzip (zlib): every squashfs-enabled kernel reads it.
	comp := &squashfs.CompressorGzip{CompressionLevel: 6, WindowSize: 15}
	if err := fs.Finalize(squashfs.FinalizeOptions{Compression: comp, FileUID: &root, FileGID: &root}); err != nil {
		return fmt.Errorf("app image %s: finalize: %w", outSquashfs, err)
	}
	if err := b.Close(); err != nil {
		return fmt.Errorf("app image %s: %w", outSquashfs, err)
	}
	if err := trim(tmp); err != nil {
		return fmt.Errorf("app image %s: %w", outSquashfs, err)
	}
	if err := os.Rename(tmp, outSquashfs); err != nil {
		return errors.Join(fmt.Errorf("app image %s", outSquashfs), err)
	}
	return nil
}

// trim cuts the file go-diskfs sized generously down to the squashfs's
// bytes_used, padded to 4 KiB as mksquashfs does: the image is a package's
// payload, which should carry no slack.
func trim(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := diskimage.SquashfsUsed(f, 0)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if size > st.Size() {
		return fmt.Errorf("the squashfs takes %d bytes, more than the %d written", size, st.Size())
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Close()
}
