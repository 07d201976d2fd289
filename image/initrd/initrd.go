// Package initrd reads and writes keel's initramfs archive: a newc cpio
// compressed with LZ4 in the legacy frame format, the one the kernel's
// unlz4 reads (CONFIG_RD_LZ4=y). The initramfs builder writes it; the image
// builder reads it back to lay a base slot out (the tools the kernel need
// not unpack go into the slot's squashfs).
package initrd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/pierrec/lz4/v4"
	"github.com/u-root/mkuimage/cpio"
)

// legacyMagic opens an LZ4 legacy frame.
const legacyMagic = 0x184C2102

// IsLZ4 tells whether an archive starting with head is in LZ4's legacy
// frame (and so possibly one of ours) rather than a plain cpio or another
// compression.
func IsLZ4(head []byte) bool {
	return len(head) >= 4 && binary.LittleEndian.Uint32(head) == legacyMagic
}

// Writer writes records into an archive. Close writes the cpio trailer and
// ends the LZ4 frame; it does not close the underlying writer.
type Writer struct {
	cpio.RecordWriter
	enc *lz4.Writer
	raw int64
}

// NewWriter starts an archive on w.
func NewWriter(w io.Writer) (*Writer, error) {
	// The legacy format has 8 MiB blocks and no checksums; the base
	// package's signature covers the file.
	enc := lz4.NewWriter(w)
	if err := enc.Apply(lz4.LegacyOption(true)); err != nil {
		return nil, fmt.Errorf("lz4: %w", err)
	}
	aw := &Writer{enc: enc}
	aw.RecordWriter = cpio.Newc.Writer(countingWriter{w: enc, n: &aw.raw})
	return aw, nil
}

// Close ends the archive.
func (w *Writer) Close() error {
	if err := cpio.WriteTrailer(w.RecordWriter); err != nil {
		return err
	}
	return w.enc.Close()
}

// Raw is how many uncompressed bytes were written: what the kernel unpacks.
func (w *Writer) Raw() int64 { return w.raw }

// ReadRecords reads a whole archive into memory and returns its records
// (the trailer left out), which read from that copy.
func ReadRecords(r io.Reader) ([]cpio.Record, error) {
	raw, err := io.ReadAll(lz4.NewReader(r))
	if err != nil {
		return nil, fmt.Errorf("initramfs: lz4: %w", err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		return nil, fmt.Errorf("initramfs: cpio: %w", err)
	}
	return recs, nil
}

type countingWriter struct {
	w io.Writer
	n *int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	*c.n += int64(n)
	return n, err
}
