package initrd

import (
	"bytes"
	"io"
	"testing"

	"github.com/u-root/mkuimage/cpio"
)

// What the builder writes reads back record for record, and starts as the
// kernel's unlz4 expects.
func TestRoundTrip(t *testing.T) {
	var b bytes.Buffer
	w, err := NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	in := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.StaticFile("bin/agent", "PID 1", 0o755),
		cpio.Symlink("init", "bin/agent"),
		cpio.CharDev("dev/console", 0o600, 5, 1),
	}
	if err := cpio.WriteRecords(w, in); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !IsLZ4(b.Bytes()) {
		t.Fatalf("the archive starts with % x, not LZ4's legacy magic", b.Bytes()[:4])
	}
	if w.Raw() < 4*110 {
		t.Errorf("Raw() = %d, less than four cpio headers", w.Raw())
	}
	out, err := ReadRecords(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("read %d records, wrote %d", len(out), len(in))
	}
	for i, r := range out {
		data, _ := io.ReadAll(io.NewSectionReader(r, 0, int64(r.FileSize)))
		want, _ := io.ReadAll(io.NewSectionReader(in[i], 0, int64(in[i].FileSize)))
		if r.Name != in[i].Name || r.Mode != in[i].Mode || !bytes.Equal(data, want) {
			t.Errorf("record %d: %s %o %q, want %s %o %q", i, r.Name, r.Mode, data, in[i].Name, in[i].Mode, want)
		}
	}
	if IsLZ4([]byte("070701")) {
		t.Error("a plain cpio taken for LZ4")
	}
	if _, err := ReadRecords(bytes.NewReader([]byte("not an archive"))); err == nil {
		t.Error("ReadRecords of garbage: no error")
	}
}
