package main

import (
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage/initramfs"
)

// zstdCPIO is an initramfs.WriteOpener that writes a zstd-compressed newc
// cpio archive, the format the Debian kernel unpacks (CONFIG_RD_ZSTD=y).
// mkuimage itself only writes uncompressed archives.
type zstdCPIO struct {
	path string
	// raw counts the uncompressed bytes, for the size report.
	raw int64
}

var _ initramfs.WriteOpener = (*zstdCPIO)(nil)

// OpenWriter implements initramfs.WriteOpener.
func (z *zstdCPIO) OpenWriter() (initramfs.Writer, error) {
	f, err := os.OpenFile(z.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create initramfs: %w", err)
	}
	// One frame with an 8 MiB window: the kernel's streaming unzstd
	// allocates the window at boot, so keep it modest.
	enc, err := zstd.NewWriter(f,
		zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithWindowSize(8<<20))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("zstd: %w", err)
	}
	cw := &countingWriter{w: enc, n: &z.raw}
	return &zstdCPIOWriter{RecordWriter: cpio.Newc.Writer(cw), enc: enc, f: f}, nil
}

type zstdCPIOWriter struct {
	cpio.RecordWriter
	enc *zstd.Encoder
	f   *os.File
}

// Finish writes the cpio trailer, ends the zstd frame and closes the file.
func (w *zstdCPIOWriter) Finish() error {
	err := cpio.WriteTrailer(w)
	if cerr := w.enc.Close(); err == nil {
		err = cerr
	}
	if serr := w.f.Sync(); err == nil {
		err = serr
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("finish initramfs: %w", err)
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n *int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	*c.n += int64(n)
	return n, err
}
