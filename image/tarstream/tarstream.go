// Package tarstream reads the plain ustar archives that packages (kpkg)
// and bundles (bundle) are, as they stream: a counting source that keeps
// the first error of the reader under it (so a failing network is not
// reported as a damaged file), the check of each member's header, a
// member reader that hashes what it hands out and checks size and SHA-256
// with the last bytes, and the check of the end-of-archive marker. Each
// format passes in its own errors and words.
package tarstream

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// BlockSize is the tar block: members and their padding come in blocks.
const BlockSize = 512

// Source counts the bytes read and keeps the first error of r other than
// io.EOF.
type Source struct {
	r   io.Reader
	N   int64
	Err error
}

// NewSource wraps r.
func NewSource(r io.Reader) *Source { return &Source{r: r} }

func (s *Source) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	s.N += int64(n)
	if err != nil && err != io.EOF && s.Err == nil {
		s.Err = err
	}
	return n, err
}

// Format is what a format's errors say.
type Format struct {
	Name      string // "package", "bundle": "reading the package at byte N"
	Truncated error  // wrapped for an early end
	Damaged   error  // wrapped for anything archive/tar found
	Hint      string // after a truncation, e.g. "; copy it again"
}

// ReadError says what went wrong reading at where: an error of the
// underlying reader as it is, an early end as truncation, and anything
// archive/tar found as damage.
func (f Format) ReadError(src *Source, where string, err error) error {
	switch {
	case src.Err != nil:
		return fmt.Errorf("reading the %s at byte %d (%s): %w", f.Name, src.N, where, src.Err)
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: it ends at byte %d, %s%s", f.Truncated, src.N, where, f.Hint)
	}
	return fmt.Errorf("%w near byte %d (%s): %v", f.Damaged, src.N, where, err)
}

// Next reads the header of the member that must come next: a plain
// regular file without extended headers (which could make a sparse member
// whose holes are never read from the stream).
func (f Format) Next(tr *tar.Reader, src *Source, where string) (*tar.Header, error) {
	h, err := tr.Next()
	if err != nil {
		return nil, f.ReadError(src, where, err)
	}
	switch {
	case h.Typeflag != tar.TypeReg:
		return nil, fmt.Errorf("%w: %s is not a regular file (type %q)", f.Damaged, h.Name, h.Typeflag)
	case len(h.PAXRecords) > 0:
		return nil, fmt.Errorf("%w: %s has extended (PAX) headers, which %ss never carry", f.Damaged, h.Name, f.Name)
	}
	return h, nil
}

// End checks that the padding of the last member, of lastSize bytes, and
// the end-of-archive marker follow. It reads them from src itself, as
// archive/tar takes an early end in their place for a clean end; nothing
// after the marker is read. It returns io.EOF for a good end.
func (f Format) End(src *Source, lastSize int64, where, trailing string) error {
	pad := (BlockSize - lastSize%BlockSize) % BlockSize
	tail := make([]byte, pad+2*BlockSize)
	if _, err := io.ReadFull(src, tail); err != nil {
		return f.ReadError(src, where, err)
	}
	if !bytes.Equal(tail, make([]byte, len(tail))) {
		return fmt.Errorf("%w: %s", f.Damaged, trailing)
	}
	return io.EOF
}

// Member streams one member of Size bytes and checks it at its end: it
// hashes what it hands out and, with the last bytes, returns io.EOF when
// the SHA-256 is Want (and AtEnd, when set, returns io.EOF), or the error
// Mismatch makes of the hash it got. An early end or a failing source is
// an error where Where(n) says at which byte. Errors are sticky.
//
// The hashing runs beside the reading: a copy of each MiB handed out is
// hashed in a goroutine while the caller receives (decrypts) and writes
// the next, so a box with two CPUs installs at the pace of the slower of
// the two rather than of their sum. One chunk is hashed at a time and
// every hashing goroutine ends by itself, so an abandoned Member leaks
// nothing.
type Member struct {
	TR       *tar.Reader
	Src      *Source
	Format   Format
	Size     int64
	Want     string
	Where    func(n int64) string
	Short    func(n int64) error // an early end of a healthy source; nil: ReadError's truncation
	Mismatch func(got string) error
	AtEnd    func() error // after a verified hash, e.g. the end-of-archive check

	h       hash.Hash
	fill    []byte        // handed out, not yet hashed
	spare   []byte        // the chunk the last hashing goroutine had
	hashing chan struct{} // closed when that goroutine is done; nil before the first
	n       int64
	err     error
}

// HashChunk is how much a Member hands to its hashing goroutine at a time.
const HashChunk = 1 << 20

// Read hands out the member's bytes.
func (m *Member) Read(b []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	if m.h == nil {
		m.h = sha256.New()
		m.fill = make([]byte, 0, min(HashChunk, max(m.Size, 1)))
	}
	n, err := m.TR.Read(b)
	m.hash(b[:n])
	m.n += int64(n)
	switch {
	case m.n == m.Size:
		// Finish with the last bytes rather than on the next call, so a
		// caller that stops at the size still sees a mismatch.
		m.wait()
		m.h.Write(m.fill)
		m.fill = m.fill[:0]
		if got := hex.EncodeToString(m.h.Sum(nil)); got != m.Want {
			m.err = m.Mismatch(got)
		} else if m.AtEnd != nil {
			m.err = m.AtEnd()
		} else {
			m.err = io.EOF
		}
	case (err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)) && m.Src.Err == nil && m.Short != nil:
		m.err = m.Short(m.n)
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		m.err = m.Format.ReadError(m.Src, m.Where(m.n), io.ErrUnexpectedEOF)
	case err != nil:
		m.err = m.Format.ReadError(m.Src, m.Where(m.n), err)
	}
	return n, m.err
}

// hash copies p into the chunk being filled and hands each full chunk to a
// goroutine, once the one before it is done with m.h.
func (m *Member) hash(p []byte) {
	for len(p) > 0 {
		k := copy(m.fill[len(m.fill):cap(m.fill)], p)
		m.fill = m.fill[:len(m.fill)+k]
		p = p[k:]
		if len(m.fill) < cap(m.fill) {
			return
		}
		m.wait()
		chunk, done := m.fill, make(chan struct{})
		if m.spare == nil {
			m.spare = make([]byte, 0, cap(chunk))
		}
		m.fill, m.spare, m.hashing = m.spare[:0], chunk, done
		h := m.h
		go func() {
			h.Write(chunk)
			close(done)
		}()
	}
}

// wait returns once no goroutine is hashing.
func (m *Member) wait() {
	if m.hashing != nil {
		<-m.hashing
	}
}

// Err is the member's end: io.EOF after a verified end, the failure, or
// nil while it is being read.
func (m *Member) Err() error { return m.err }

// Count is how many bytes were handed out.
func (m *Member) Count() int64 { return m.n }
