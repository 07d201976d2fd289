package bundle

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"keel.dev/keel/image/tarstream"
)

// Errors a Reader wraps, so a caller can tell a damaged copy from a
// failing source. Their messages read as the start of a sentence.
var (
	// ErrTruncated: the stream ended early.
	ErrTruncated = errors.New("bundle is truncated")
	// ErrDamaged: the stream is not a well-formed bundle, or a package in
	// it does not match bundle.json.
	ErrDamaged = errors.New("bundle is damaged")
)

// format is what a bundle's read errors say.
var format = tarstream.Format{Name: "bundle", Truncated: ErrTruncated, Damaged: ErrDamaged, Hint: "; copy it again"}

// Reader reads a bundle as it streams, one package at a time, holding at
// most bundle.json in memory.
type Reader struct {
	Meta Meta

	src *tarstream.Source
	tr  *tar.Reader
	i   int               // the next package's index in Meta.Packages
	cur *tarstream.Member // the package handed out last
	err error             // sticky: io.EOF after a good end, or the failure
}

// Open reads and checks bundle.json from the start of r. The packages
// follow through Next.
func Open(r io.Reader) (*Reader, error) {
	src := tarstream.NewSource(r)
	tr := tar.NewReader(src)
	h, err := format.Next(tr, src, "at the start, where bundle.json belongs")
	if err != nil {
		return nil, err
	}
	if h.Name != MetaName {
		return nil, fmt.Errorf("%w: it starts with %q, not %s (is it a package? upload a package on its own, not as a bundle)", ErrDamaged, h.Name, MetaName)
	}
	if h.Size > MaxMetaSize {
		return nil, fmt.Errorf("%w: bundle.json has %d bytes, more than the %d allowed", ErrDamaged, h.Size, MaxMetaSize)
	}
	mj := make([]byte, h.Size)
	if _, err := io.ReadFull(tr, mj); err != nil {
		return nil, format.ReadError(src, "in bundle.json", err)
	}
	var probe struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(mj, &probe); err != nil {
		return nil, fmt.Errorf("%w: bundle.json is not JSON: %v", ErrDamaged, err)
	}
	if probe.Format > FormatVersion {
		return nil, fmt.Errorf("bundle format %d is newer than this reader understands (%d): update the base first", probe.Format, FormatVersion)
	}
	d := json.NewDecoder(bytes.NewReader(mj))
	d.DisallowUnknownFields()
	var m Meta
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: bundle.json: %v", ErrDamaged, err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%w: bundle.json: %v", ErrDamaged, err)
	}
	return &Reader{Meta: m, src: src, tr: tr}, nil
}

// Next returns the next package in install order and its bytes as a
// stream. The stream hashes what it hands out and returns io.EOF only
// after the package's size and SHA-256 matched bundle.json; a mismatch is
// an error returned with the last bytes. Next reads what the caller left
// of the previous package and returns its error if it did not match, so a
// caller that stops reading at the package's end still hears of it from
// the next call. After the last package, Next checks that the archive ends
// there and returns io.EOF.
func (r *Reader) Next() (Entry, io.Reader, error) {
	if r.err != nil {
		return Entry{}, nil, r.err
	}
	if r.cur != nil {
		if _, err := io.Copy(io.Discard, r.cur); err != nil {
			r.err = err
			return Entry{}, nil, err
		}
		r.cur = nil
	}
	if r.i == len(r.Meta.Packages) {
		r.err = r.end()
		return Entry{}, nil, r.err
	}
	e := r.Meta.Packages[r.i]
	h, err := format.Next(r.tr, r.src, "before "+e.File)
	if err == nil && h.Name != e.File {
		err = fmt.Errorf("%w: %q is where bundle.json says %s comes", ErrDamaged, h.Name, e.File)
	}
	if err == nil && h.Size != e.Size {
		err = fmt.Errorf("%w: %s has %d bytes in the archive, and bundle.json says %d", ErrDamaged, e.File, h.Size, e.Size)
	}
	if err != nil {
		r.err = err
		return Entry{}, nil, err
	}
	r.i++
	r.cur = &tarstream.Member{TR: r.tr, Src: r.src, Format: format, Size: e.Size, Want: e.SHA256,
		Where: func(n int64) string { return fmt.Sprintf("in %s, at byte %d of %d", e.File, n, e.Size) },
		Mismatch: func(got string) error {
			return fmt.Errorf("%w: %s has SHA-256 %s, and bundle.json says %s; copy the bundle again", ErrDamaged, e.File, got, e.SHA256)
		},
	}
	return e, r.cur, nil
}

// end checks that the last package's padding and the end-of-archive
// marker follow it; io.EOF for a good end.
func (r *Reader) end() error {
	last := r.Meta.Packages[len(r.Meta.Packages)-1]
	return format.End(r.src, last.Size, "after the last package, where the end-of-archive marker belongs",
		"data follows the last package bundle.json lists, where the end-of-archive marker belongs")
}
