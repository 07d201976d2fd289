package kpkg

import (
	"archive/tar"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"

	"keel.dev/keel/image/tarstream"
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

	payload *tarstream.Member
}

// format is what a package's read errors say.
var format = tarstream.Format{Name: "package", Truncated: ErrTruncated, Damaged: ErrDamaged}

// Open reads a package's manifest and signature from r and verifies the
// signature with the trusted key it names before it returns; on any error
// the Package is nil, so no payload byte is ever handed out for a package
// that is not signed by a trusted key. Memory stays bounded (by
// MaxManifestSize, and archive/tar's 1 MiB limit on extended headers)
// whatever the payload's size. Open reads r up to the first payload byte;
// the payload follows through Payload.
func Open(r io.Reader, trusted []ed25519.PublicKey) (*Package, error) {
	src := tarstream.NewSource(r)
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
	size := m.Payload.Size
	return &Package{
		Manifest: *m, KeyID: keyID, ManifestJSON: mj, Signature: sig,
		payload: &tarstream.Member{TR: tr, Src: src, Format: format, Size: size, Want: m.Payload.SHA256,
			Where: func(n int64) string { return fmt.Sprintf("payload byte %d of %d", n, size) },
			Short: func(n int64) error { return fmt.Errorf("%w: payload has %d of %d bytes", ErrTruncated, n, size) },
			Mismatch: func(got string) error {
				return fmt.Errorf("%w: its SHA-256 is %s, the manifest says %s", ErrPayload, got, m.Payload.SHA256)
			},
			// Nothing after the marker is read: r may go on with other
			// data (a bundle's next package).
			AtEnd: func() error {
				return format.End(src, size, "after the payload, where the end-of-archive marker belongs",
					"data follows the payload where the end-of-archive marker belongs")
			},
		},
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
	switch err := p.payload.Err(); {
	case err == io.EOF:
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("payload is not verified: %d of %d bytes were read", p.payload.Count(), p.payload.Size)
}

// nextEntry reads the header of the entry that must come next.
func nextEntry(tr *tar.Reader, src *tarstream.Source, name string) (*tar.Header, error) {
	h, err := format.Next(tr, src, "before "+name)
	if err != nil {
		return nil, err
	}
	if h.Name != name {
		return nil, fmt.Errorf("%w: entry %q is where %s belongs", ErrDamaged, h.Name, name)
	}
	return h, nil
}

// readSmallEntry reads an entry that is held in memory, refusing it before
// reading when it is larger than limit.
func readSmallEntry(tr *tar.Reader, src *tarstream.Source, name string, limit int64) ([]byte, error) {
	h, err := nextEntry(tr, src, name)
	if err != nil {
		return nil, err
	}
	if h.Size > limit {
		return nil, fmt.Errorf("%w: %s has %d bytes, more than the %d allowed", ErrDamaged, name, h.Size, limit)
	}
	b := make([]byte, h.Size)
	if n, err := io.ReadFull(tr, b); err != nil {
		if src.Err == nil && (err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)) {
			return nil, fmt.Errorf("%w: %s has %d of %d bytes", ErrTruncated, name, n, h.Size)
		}
		return nil, format.ReadError(src, "in "+name, err)
	}
	return b, nil
}
