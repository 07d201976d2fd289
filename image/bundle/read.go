package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
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

// Reader reads a bundle as it streams, one package at a time, holding at
// most bundle.json in memory.
type Reader struct {
	Meta Meta

	src *source
	tr  *tar.Reader
	i   int         // the next package's index in Meta.Packages
	cur *fileReader // the package handed out last
	err error       // sticky: io.EOF after a good end, or the failure
}

// Open reads and checks bundle.json from the start of r. The packages
// follow through Next.
func Open(r io.Reader) (*Reader, error) {
	src := &source{r: r}
	tr := tar.NewReader(src)
	h, err := next(tr, src, "at the start, where bundle.json belongs")
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
		return nil, readError(src, "in bundle.json", err)
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
	h, err := next(r.tr, r.src, "before "+e.File)
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
	r.cur = &fileReader{r: r, e: e, h: sha256.New()}
	return e, r.cur, nil
}

// end checks that the last package's padding and the end-of-archive
// marker follow it. It reads them from the source itself, as archive/tar
// takes an early end in their place for a clean end. Nothing after the
// marker is read. It returns io.EOF for a good end.
func (r *Reader) end() error {
	last := r.Meta.Packages[len(r.Meta.Packages)-1]
	pad := (blockSize - last.Size%blockSize) % blockSize
	tail := make([]byte, pad+2*blockSize)
	if _, err := io.ReadFull(r.src, tail); err != nil {
		return readError(r.src, "after the last package, where the end-of-archive marker belongs", err)
	}
	if !bytes.Equal(tail, make([]byte, len(tail))) {
		return fmt.Errorf("%w: data follows the last package bundle.json lists, where the end-of-archive marker belongs", ErrDamaged)
	}
	return io.EOF
}

// fileReader streams one package and checks it at its end.
type fileReader struct {
	r   *Reader
	e   Entry
	h   hash.Hash
	n   int64
	err error // sticky: io.EOF after a verified end, or the failure
}

func (f *fileReader) Read(b []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n, err := f.r.tr.Read(b)
	f.h.Write(b[:n])
	f.n += int64(n)
	switch {
	case f.n == f.e.Size:
		// Finish with the last bytes, so a caller that stops at the size
		// still sees a mismatch.
		if got := hex.EncodeToString(f.h.Sum(nil)); got != f.e.SHA256 {
			f.err = fmt.Errorf("%w: %s has SHA-256 %s, and bundle.json says %s; copy the bundle again", ErrDamaged, f.e.File, got, f.e.SHA256)
		} else {
			f.err = io.EOF
		}
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		f.err = readError(f.r.src, fmt.Sprintf("in %s, at byte %d of %d", f.e.File, f.n, f.e.Size), io.ErrUnexpectedEOF)
	case err != nil:
		f.err = readError(f.r.src, fmt.Sprintf("in %s, at byte %d of %d", f.e.File, f.n, f.e.Size), err)
	}
	return n, f.err
}

// source counts bytes and keeps the first error of the underlying reader,
// so a failing network is not reported as a damaged bundle.
type source struct {
	r   io.Reader
	n   int64
	err error
}

func (s *source) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	s.n += int64(n)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

func readError(src *source, where string, err error) error {
	switch {
	case src.err != nil:
		return fmt.Errorf("reading the bundle at byte %d (%s): %w", src.n, where, src.err)
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: it ends at byte %d, %s; copy it again", ErrTruncated, src.n, where)
	}
	return fmt.Errorf("%w near byte %d (%s): %v", ErrDamaged, src.n, where, err)
}

// next reads the header of the member that must come next: a plain
// regular file.
func next(tr *tar.Reader, src *source, where string) (*tar.Header, error) {
	h, err := tr.Next()
	if err != nil {
		return nil, readError(src, where, err)
	}
	switch {
	case h.Typeflag != tar.TypeReg:
		return nil, fmt.Errorf("%w: %q is not a regular file (type %q)", ErrDamaged, h.Name, h.Typeflag)
	case len(h.PAXRecords) > 0:
		return nil, fmt.Errorf("%w: %q has extended (PAX) headers, which bundles never carry", ErrDamaged, h.Name)
	}
	return h, nil
}
