package kpkg

import (
	"archive/tar"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Names of the archive's entries, in the order they must come.
const (
	manifestEntry  = "manifest.json"
	signatureEntry = "manifest.sig"
	payloadEntry   = "payload"
)

// Package is a package whose manifest signature has been verified and
// whose payload is ready to stream.
type Package struct {
	Manifest     Manifest
	KeyID        string // the trusted key that signed the manifest
	ManifestJSON []byte // manifest.json exactly as signed
	Signature    []byte // manifest.sig; with ManifestJSON, VerifyManifest checks it again later

	payload *payloadReader
}

// Open reads a package's manifest and signature from r and verifies the
// signature with the trusted key it names before it returns; on any error
// the Package is nil, so no payload byte is ever handed out for a package
// that is not signed by a trusted key. Memory stays bounded (by
// MaxManifestSize, and archive/tar's 1 MiB limit on extended headers)
// whatever the payload's size. Open reads r up to the first payload byte;
// the payload follows through Payload.
func Open(r io.Reader, trusted []ed25519.PublicKey) (*Package, error) {
	src := &source{r: r}
	tr := tar.NewReader(src)

	mj, err := readSmallEntry(tr, src, manifestEntry, MaxManifestSize)
	if err != nil {
		return nil, err
	}
	sig, err := readSmallEntry(tr, src, signatureEntry, maxSignatureSize)
	if err != nil {
		return nil, err
	}
	m, keyID, err := VerifyManifest(mj, sig, trusted)
	if err != nil {
		return nil, err
	}
	h, err := nextEntry(tr, src, payloadEntry)
	if err != nil {
		return nil, err
	}
	if h.Size != m.Payload.Size {
		return nil, fmt.Errorf("%w: the payload entry has %d bytes but the manifest says %d", ErrDamaged, h.Size, m.Payload.Size)
	}
	return &Package{
		Manifest: *m, KeyID: keyID, ManifestJSON: mj, Signature: sig,
		payload: &payloadReader{tr: tr, src: src, h: sha256.New(), size: m.Payload.Size, want: m.Payload.SHA256},
	}, nil
}

// Payload returns the payload as a stream that hashes what it hands out.
// It returns io.EOF only after all Manifest.Payload.Size bytes came and
// their SHA-256 matched the manifest and the archive ended cleanly; a
// mismatch, a short or overlong payload or trailing data is an error
// instead, returned with the payload's last bytes. Read it to the end (with
// io.Copy, not io.CopyN, which drops an error that comes with the last
// bytes, as does io.ReadFull of exactly the size) and treat the
// destination as unverified until then; Verified says afterwards.
func (p *Package) Payload() io.Reader { return p.payload }

// Verified returns nil once the payload was read to its end and matched the
// manifest; otherwise the error that stopped it, or one saying it was not
// read to its end.
func (p *Package) Verified() error {
	switch err := p.payload.err; {
	case err == io.EOF:
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("payload is not verified: %d of %d bytes were read", p.payload.n, p.payload.size)
}

// source counts bytes for error messages and keeps the first error of the
// underlying reader, so that a failing network is not reported as a
// damaged package.
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

// readError says what went wrong reading the archive at what: an error of
// the underlying reader as it is, an early end as truncation, and anything
// archive/tar found as damage.
func readError(src *source, what string, err error) error {
	switch {
	case src.err != nil:
		return fmt.Errorf("reading the package at byte %d (%s): %w", src.n, what, src.err)
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: it ends at byte %d, %s", ErrTruncated, src.n, what)
	}
	return fmt.Errorf("%w near byte %d (%s): %v", ErrDamaged, src.n, what, err)
}

// nextEntry reads the header of the entry that must come next.
func nextEntry(tr *tar.Reader, src *source, name string) (*tar.Header, error) {
	h, err := tr.Next()
	if err != nil {
		return nil, readError(src, "before "+name, err)
	}
	switch {
	case h.Name != name:
		return nil, fmt.Errorf("%w: entry %q is where %s belongs", ErrDamaged, h.Name, name)
	case h.Typeflag != tar.TypeReg:
		return nil, fmt.Errorf("%w: %s is not a regular file (type %q)", ErrDamaged, name, h.Typeflag)
	case len(h.PAXRecords) > 0:
		// Extended headers could make a sparse payload whose holes are
		// never read from the stream; keel packages are plain ustar.
		return nil, fmt.Errorf("%w: %s has extended (PAX) headers, which packages never carry", ErrDamaged, name)
	}
	return h, nil
}

// readSmallEntry reads an entry that is held in memory, refusing it before
// reading when it is larger than limit.
func readSmallEntry(tr *tar.Reader, src *source, name string, limit int64) ([]byte, error) {
	h, err := nextEntry(tr, src, name)
	if err != nil {
		return nil, err
	}
	if h.Size > limit {
		return nil, fmt.Errorf("%w: %s has %d bytes, more than the %d allowed", ErrDamaged, name, h.Size, limit)
	}
	b := make([]byte, h.Size)
	if n, err := io.ReadFull(tr, b); err != nil {
		if src.err == nil && (err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)) {
			return nil, fmt.Errorf("%w: %s has %d of %d bytes", ErrTruncated, name, n, h.Size)
		}
		return nil, readError(src, "in "+name, err)
	}
	return b, nil
}

// payloadReader streams the payload entry and checks it at its end.
type payloadReader struct {
	tr   *tar.Reader
	src  *source
	h    hash.Hash
	n    int64
	size int64
	want string
	err  error // sticky: io.EOF after a verified end, or the failure
}

func (p *payloadReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.tr.Read(b)
	p.h.Write(b[:n])
	p.n += int64(n)
	switch {
	case p.n == p.size:
		// Finish with the last bytes rather than on the next call, so a
		// caller that stops at the size still sees a mismatch.
		p.err = p.finish()
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		if p.src.err != nil {
			p.err = readError(p.src, "in the payload", err)
		} else {
			p.err = fmt.Errorf("%w: payload has %d of %d bytes", ErrTruncated, p.n, p.size)
		}
	case err != nil:
		p.err = readError(p.src, fmt.Sprintf("payload byte %d of %d", p.n, p.size), err)
	}
	if p.err != nil {
		return n, p.err
	}
	return n, nil
}

// finish checks the hash and that the payload's padding and the
// end-of-archive marker follow. It reads them from the source itself
// because archive/tar takes an early end in their place for a clean end.
// Nothing after the marker is read: r may go on with other data.
func (p *payloadReader) finish() error {
	if got := hex.EncodeToString(p.h.Sum(nil)); got != p.want {
		return fmt.Errorf("%w: its SHA-256 is %s, the manifest says %s", ErrPayload, got, p.want)
	}
	pad := (blockSize - p.size%blockSize) % blockSize
	tail := make([]byte, pad+2*blockSize)
	if _, err := io.ReadFull(p.src, tail); err != nil {
		return readError(p.src, "after the payload, where the end-of-archive marker belongs", err)
	}
	for _, c := range tail {
		if c != 0 {
			return fmt.Errorf("%w: data follows the payload where the end-of-archive marker belongs", ErrDamaged)
		}
	}
	return io.EOF
}

// blockSize is the tar block: entries and their padding come in blocks.
const blockSize = 512
