// Package bundle is keel's offline bundle: the packages one appliance
// needs, in the order it installs them, in one file an operator carries
// to it and uploads in one request. The update server writes bundles
// (Write); the appliance reads them as they stream in (Open, Next). The
// package has no side effects.
//
// # File format
//
// A bundle (conventionally keel-SERIAL-TIME.kbundle) is a POSIX ustar
// archive of regular files:
//
//	bundle.json          the bundle's metadata (JSON, at most MaxMetaSize)
//	NAME-KIND-VERSION.kpkg  each package, whole, in install order
//
// followed by the end-of-archive marker. bundle.json names the appliance's
// serial, when the bundle was made, and for each package its kind, name,
// version, file name, size and SHA-256, in the order the files follow. The
// bundle itself is not signed: each package inside keeps its own
// signature, which the appliance checks as it installs it; the sizes and
// hashes in bundle.json catch a damaged copy early. A package (.kpkg)
// starts with a member named manifest.json, a bundle with bundle.json,
// which is how IsBundle tells them apart.
package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"keel.dev/keel/image/kpkg"
)

// FormatVersion is the bundle format Write produces and Open accepts.
const FormatVersion = 1

// MaxMetaSize bounds bundle.json, which a reader holds in memory.
const MaxMetaSize = 1 << 20

// MetaName is the name of the bundle's first member.
const MetaName = "bundle.json"

// Meta is the content of bundle.json.
type Meta struct {
	Format   int       `json:"format"` // Write fills it in when 0
	Serial   string    `json:"serial"`
	Created  time.Time `json:"created"`
	Packages []Entry   `json:"packages"` // in install order
}

// Entry is one package of a bundle.
type Entry struct {
	Kind    kpkg.Kind    `json:"kind"`
	Name    string       `json:"name"`
	Version kpkg.Version `json:"version"`
	File    string       `json:"file"` // the member's name: a plain file name ending in .kpkg
	Size    int64        `json:"size"`
	SHA256  string       `json:"sha256"` // lower-case hex, of the whole .kpkg
}

// String names the entry as operators read it: "app demo 1.1.0".
func (e Entry) String() string { return fmt.Sprintf("%s %s %s", e.Kind, e.Name, e.Version) }

func (m *Meta) validate() error {
	if m.Format != FormatVersion {
		return fmt.Errorf("format %d is not %d", m.Format, FormatVersion)
	}
	if m.Serial == "" {
		return fmt.Errorf("it names no appliance serial")
	}
	if len(m.Packages) == 0 {
		return fmt.Errorf("it holds no packages")
	}
	seen := map[string]bool{MetaName: true}
	for _, e := range m.Packages {
		if e.Kind != kpkg.KindBase && e.Kind != kpkg.KindApp {
			return fmt.Errorf("%s: kind %q is neither base nor app", e.File, e.Kind)
		}
		if e.File == "" || path.Base(e.File) != e.File || e.File == "." || e.File == ".." || strings.ContainsAny(e.File, "\\\x00") || !strings.HasSuffix(e.File, ".kpkg") {
			return fmt.Errorf("file name %q is not a plain name ending in .kpkg", e.File)
		}
		if seen[e.File] {
			return fmt.Errorf("%s is listed twice", e.File)
		}
		seen[e.File] = true
		if e.Size <= 0 {
			return fmt.Errorf("%s: size %d is not positive", e.File, e.Size)
		}
		if _, err := hex.DecodeString(e.SHA256); err != nil || len(e.SHA256) != 64 || strings.ToLower(e.SHA256) != e.SHA256 {
			return fmt.Errorf("%s: sha256 %q is not 64 lower-case hex digits", e.File, e.SHA256)
		}
	}
	return nil
}

func (m *Meta) marshal() ([]byte, error) {
	if m.Format == 0 {
		m.Format = FormatVersion
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	e.SetIndent("", "  ")
	if err := e.Encode(m); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if b.Len() > MaxMetaSize {
		return nil, fmt.Errorf("bundle: bundle.json has %d bytes, more than the %d a reader accepts", b.Len(), MaxMetaSize)
	}
	return b.Bytes(), nil
}

// Size is the number of bytes Write writes for meta, so a server can send
// a Content-Length before the first byte.
func Size(meta Meta) (int64, error) {
	mj, err := meta.marshal()
	if err != nil {
		return 0, err
	}
	n := blocks(int64(len(mj)))
	for _, e := range meta.Packages {
		n += blocks(e.Size)
	}
	return n + 2*blockSize, nil
}

// blocks is the space a member takes: its header and its padded content.
func blocks(size int64) int64 { return blockSize + (size+blockSize-1)/blockSize*blockSize }

const blockSize = 512

// Write writes a bundle: meta, then files[i] as meta.Packages[i]. Each
// file is copied as it streams and checked against the size and SHA-256
// meta gives it; a file that does not match is an error, and what was
// written so far is not a valid bundle (a reader says it is truncated or
// damaged).
func Write(w io.Writer, meta Meta, files []io.Reader) error {
	mj, err := meta.marshal()
	if err != nil {
		return err
	}
	if len(files) != len(meta.Packages) {
		return fmt.Errorf("bundle: %d files for %d packages", len(files), len(meta.Packages))
	}
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(header(MetaName, int64(len(mj)))); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	if _, err := tw.Write(mj); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	for i, e := range meta.Packages {
		if err := tw.WriteHeader(header(e.File, e.Size)); err != nil {
			return fmt.Errorf("bundle: %s: %w", e.File, err)
		}
		h := sha256.New()
		n, err := io.Copy(tw, io.TeeReader(io.LimitReader(files[i], e.Size), h))
		if err != nil {
			return fmt.Errorf("bundle: copying %s: %w", e.File, err)
		}
		if n != e.Size {
			return fmt.Errorf("bundle: %s has %d bytes, not the %d the bundle lists: the release changed; make the bundle again", e.File, n, e.Size)
		}
		if extra, _ := files[i].Read(make([]byte, 1)); extra > 0 {
			return fmt.Errorf("bundle: %s is longer than the %d bytes the bundle lists: the release changed; make the bundle again", e.File, e.Size)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != e.SHA256 {
			return fmt.Errorf("bundle: %s has SHA-256 %s, not the %s the bundle lists: the release changed; make the bundle again", e.File, got, e.SHA256)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return nil
}

// header makes a member's header with constant metadata.
func header(name string, size int64) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644,
		ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR,
	}
}

// IsBundle says whether a stream that starts with these bytes (its first
// 512, a tar header) is a bundle rather than a package: its first member
// is bundle.json.
func IsBundle(first512 []byte) bool {
	if len(first512) < blockSize {
		return false
	}
	h, err := tar.NewReader(bytes.NewReader(first512[:blockSize])).Next()
	return err == nil && h.Name == MetaName && h.Typeflag == tar.TypeReg
}
