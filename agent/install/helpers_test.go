package install

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"keel.dev/keel/agent/slots"
	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/layout"
)

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

var (
	vendorKey = testKey(1)
	otherKey  = testKey(2)
)

const (
	slotSize = 8 << 20
	model    = "keel-vm"
)

// env is a box in temp files: an ESP folder with the boot state and one
// regular file per base slot. Slot a runs 1.1.0; slot b holds 1.0.0; both
// are committed.
type env struct {
	t       *testing.T
	in      *Installer
	esp     string
	slot    map[layout.Label]string // slot -> file
	reboots atomic.Int32
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, esp: filepath.Join(dir, "esp"), slot: map[layout.Label]string{}}
	if err := os.MkdirAll(filepath.Join(e.esp, "EFI/keel"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.setState(bootstate.Initial("1.1.0", "1.0.0"))
	for _, s := range layout.Labels {
		e.slot[s] = filepath.Join(dir, "base-"+string(s))
		// Old content that must survive every refusal.
		if err := os.WriteFile(e.slot[s], bytes.Repeat([]byte{0xEE, byte(s[0])}, slotSize/2), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.in = &Installer{
		Trusted:  []ed25519.PublicKey{vendorKey.Public().(ed25519.PublicKey)},
		Hardware: model,
		Installed: func() map[kpkg.Kind]kpkg.Version {
			return map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.1.0")}
		},
		Slots:   slots.NewStore(e.esp),
		Running: "a",
		OpenSlot: func(slot layout.Label) (Device, int64, error) {
			f, err := os.OpenFile(e.slot[slot], os.O_RDWR, 0)
			if err != nil {
				return nil, 0, err
			}
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return nil, 0, err
			}
			return f, fi.Size(), nil
		},
		Reboot: func() error { e.reboots.Add(1); return nil },
	}
	return e
}

func (e *env) setState(st bootstate.State) {
	e.t.Helper()
	block, err := st.Encode()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range []string{bootstate.PrimaryPath, bootstate.BackupPath} {
		if err := os.WriteFile(filepath.Join(e.esp, p), block, 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) state() *bootstate.State {
	e.t.Helper()
	st, _, err := slots.NewStore(e.esp).Read()
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// snapshot is everything an install may write: both slots and both copies
// of the boot state.
type snapshot map[string][32]byte

func (e *env) snapshot() snapshot {
	e.t.Helper()
	s := snapshot{}
	for _, p := range []string{e.slot["a"], e.slot["b"], filepath.Join(e.esp, bootstate.PrimaryPath), filepath.Join(e.esp, bootstate.BackupPath)} {
		b, err := os.ReadFile(p)
		if err != nil {
			e.t.Fatal(err)
		}
		s[p] = sha256.Sum256(b)
	}
	return s
}

func (e *env) assertUnchanged(before snapshot) {
	e.t.Helper()
	for p, sum := range e.snapshot() {
		if sum != before[p] {
			e.t.Errorf("%s was written", filepath.Base(p))
		}
	}
}

func (e *env) slotPrefix(slot layout.Label, n int) []byte {
	e.t.Helper()
	b, err := os.ReadFile(e.slot[slot])
	if err != nil {
		e.t.Fatal(err)
	}
	return b[:n]
}

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i>>8) ^ seed
	}
	return b
}

func manifest(version string) kpkg.Manifest {
	return kpkg.Manifest{Kind: kpkg.KindBase, Name: "keel", Version: kpkg.MustParseVersion(version), Hardware: []string{model, "kx-100"}}
}

func build(t testing.TB, m kpkg.Manifest, data []byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := kpkg.Write(&out, m, bytes.NewReader(data), key); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

type entry struct {
	name string
	data []byte
}

func entries(t testing.TB, pkg []byte) []entry {
	t.Helper()
	var out []entry
	tr := tar.NewReader(bytes.NewReader(pkg))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{h.Name, b})
	}
}

// retar writes entries as kpkg does, to assemble packages it refuses to.
func retar(t testing.TB, es []entry) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, e := range es {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Size: int64(len(e.data)), Mode: 0o644, ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
