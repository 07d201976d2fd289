package kpkg

import (
	"archive/tar"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"time"
)

// Write writes a package: m signed with key, then the payload, which is
// read twice: once to measure and hash it for the manifest (Write sets
// m.Payload, and m.Format when it is 0), and once, from where it was, to
// copy it. A payload that changes between the two is an error, and so is
// a manifest that Open would refuse. Output is a pure function of the
// inputs (ed25519 signatures are deterministic), so rebuilding a package
// from the same payload gives the same bytes.
func Write(w io.Writer, m Manifest, payload io.ReadSeeker, key ed25519.PrivateKey) error {
	start, err := payload.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("package: payload: %w", err)
	}
	h := sha256.New()
	size, err := io.Copy(h, payload)
	if err != nil {
		return fmt.Errorf("package: hashing the payload: %w", err)
	}
	m.Payload = Payload{Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}
	if m.Format == 0 {
		m.Format = FormatVersion
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("package: manifest: %w", err)
	}
	mj, err := m.marshal()
	if err != nil {
		return fmt.Errorf("package: manifest: %w", err)
	}
	if len(mj) > MaxManifestSize {
		return fmt.Errorf("package: manifest: %d bytes, more than the %d a reader accepts (shorten the release notes)", len(mj), MaxManifestSize)
	}
	sig, err := sign(mj, key)
	if err != nil {
		return fmt.Errorf("package: %w", err)
	}
	if _, err := payload.Seek(start, io.SeekStart); err != nil {
		return fmt.Errorf("package: payload: %w", err)
	}

	tw := tar.NewWriter(w)
	for _, e := range []struct {
		name string
		data []byte
	}{{manifestEntry, mj}, {signatureEntry, sig}} {
		if err := tw.WriteHeader(header(e.name, int64(len(e.data)))); err != nil {
			return fmt.Errorf("package: %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return fmt.Errorf("package: %s: %w", e.name, err)
		}
	}
	if err := tw.WriteHeader(header(payloadEntry, size)); err != nil {
		return fmt.Errorf("package: payload: %w", err)
	}
	h.Reset()
	n, err := io.Copy(tw, io.TeeReader(io.LimitReader(payload, size), h))
	if err != nil {
		return fmt.Errorf("package: copying the payload: %w", err)
	}
	if n != size || hex.EncodeToString(h.Sum(nil)) != m.Payload.SHA256 {
		return fmt.Errorf("package: the payload changed while it was being packaged")
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("package: %w", err)
	}
	return nil
}

// header makes an entry's header with constant metadata, for reproducible
// packages; ustar caps the payload at 8 GiB, far above a slot.
func header(name string, size int64) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644,
		ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR,
	}
}
