package backup

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

// box is a small data partition: a configuration file, an app folder
// with a file store and a history, and a symlink.
func box(t *testing.T) (root string, sections []Section) {
	t.Helper()
	root = t.TempDir()
	write := func(rel string, data []byte) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	write("keel/network.json", []byte(`{"hostname":"box-a"}`))
	write("apps/demo/counter", []byte("41"))
	write("apps/demo/files/small.txt", []byte("small"))
	write("apps/demo/files/big.bin", make([]byte, StoreMaxFile+1))
	for i := range StoreMaxFiles + 2 {
		write(filepath.Join("apps/demo/files/many", strings.Repeat("x", i+1)), []byte("f"))
	}
	write("apps/demo/history/rec-1", []byte("recording"))
	os.Symlink("counter", filepath.Join(root, "apps/demo/current"))
	return root, []Section{
		{Name: "network", Kind: Config, Path: filepath.Join(root, "keel/network.json")},
		{Name: "missing", Kind: Config, Path: filepath.Join(root, "keel/none.json")},
		{Name: "app-data", Kind: AppData, Path: filepath.Join(root, "apps/demo"), Store: "files", Skip: []string{"history"}},
		{Name: "app-history", Kind: History, Path: filepath.Join(root, "apps/demo/history")},
	}
}

func key(t *testing.T) ed25519.PrivateKey {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	return k
}

func write(t *testing.T, sections []Section, k ed25519.PrivateKey, history bool) ([]byte, *Manifest) {
	t.Helper()
	var b bytes.Buffer
	m, err := Write(&b, Options{Password: "backup-pass", Sections: sections, IncludeHistory: history, Serial: "KEEL-1", Base: "1.0.0", App: &App{"demo", "1.0.0"}, Key: k, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), m
}

func TestBackupRoundTripKeepsEverythingAndTheStoreLimits(t *testing.T) {
	root, sections := box(t)
	k := key(t)
	file, m := write(t, sections, k, false)
	if bytes.Contains(file, []byte("box-a")) || bytes.Contains(file, []byte("recording")) {
		t.Fatal("the backup is not encrypted")
	}
	var big, many int
	for _, s := range m.Skipped {
		switch {
		case s.Path == "files/big.bin":
			big++
		case strings.Contains(s.Reason, "at most 50"):
			many++
		}
	}
	if big != 1 || many != 3 { // 52 in many/ and small.txt: 50 kept
		t.Fatalf("skipped %+v", m.Skipped)
	}
	for _, s := range m.Sections {
		if s.Name == "app-history" {
			t.Fatal("the history is in a backup without include_history")
		}
	}
	st, err := Stage(bytes.NewReader(file), "backup-pass", filepath.Join(t.TempDir(), "stage"), k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if !st.ThisBox || st.Manifest.Serial != "KEEL-1" {
		t.Fatalf("staged %+v", st.Manifest)
	}
	if b, _ := os.ReadFile(filepath.Join(st.SectionPath("app-data"), "counter")); string(b) != "41" {
		t.Fatalf("counter %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(st.SectionPath("app-data"), "current")); l != "counter" {
		t.Fatalf("symlink %q", l)
	}
	if fi, err := os.Stat(filepath.Join(st.SectionPath("app-data"), "counter")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(st.SectionPath("app-data"), "history")); err == nil {
		t.Fatal("history staged")
	}

	// Apply over the box, after which it reads as before; repeated, as
	// after a power cut, it changes nothing more.
	os.WriteFile(filepath.Join(root, "keel/network.json"), []byte(`{"hostname":"changed"}`), 0o600)
	os.WriteFile(filepath.Join(root, "apps/demo/counter"), []byte("99"), 0o600)
	j := &Journal{State: StateStaged, Targets: []Target{
		{Section: "network", Path: filepath.Join(root, "keel/network.json")},
		{Section: "app-data", Path: filepath.Join(root, "apps/demo"), Discard: []string{filepath.Join(root, "apps/.volumes/demo.ext4")}},
	}}
	if err := j.Save(st.Dir); err != nil {
		t.Fatal(err)
	}
	if err := j.Apply(st.Dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "keel/network.json")); string(b) != `{"hostname":"box-a"}` {
		t.Fatalf("network %s", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "apps/demo/counter")); string(b) != "41" {
		t.Fatalf("counter %s", b)
	}
	j2, err := LoadJournal(st.Dir)
	if err != nil || j2.State != StateApplied {
		t.Fatalf("journal %+v %v", j2, err)
	}
	j2.State = StateStaged
	if err := j2.Apply(st.Dir); err != nil {
		t.Fatal(err)
	}
}

func TestHalfAppliedRestoreFinishes(t *testing.T) {
	root, sections := box(t)
	k := key(t)
	file, _ := write(t, sections, k, true)
	st, err := Stage(bytes.NewReader(file), "backup-pass", filepath.Join(t.TempDir(), "stage"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.ThisBox {
		t.Fatal("another box's backup taken for this box's")
	}
	target := filepath.Join(root, "apps/demo")
	// The power went after the old folder was set aside.
	os.Rename(target, target+".before-restore")
	j := &Journal{State: StateStaged, Targets: []Target{{Section: "app-data", Path: target}}}
	if err := j.Apply(st.Dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target + ".before-restore"); err == nil {
		t.Fatal("the old folder stayed")
	}
	if b, _ := os.ReadFile(filepath.Join(target, "counter")); string(b) != "41" {
		t.Fatalf("counter %q", b)
	}
}

func TestDamagedOrForeignFilesAreRefusedWithNothingLeft(t *testing.T) {
	_, sections := box(t)
	k := key(t)
	file, _ := write(t, sections, k, false)
	flipped := bytes.Clone(file)
	flipped[len(flipped)/2] ^= 0x40
	for name, c := range map[string]struct {
		data     []byte
		password string
		want     string
	}{
		"wrong password": {file, "wrong-pass", "the password does not open this backup"},
		"truncated":      {file[:len(file)*2/3], "backup-pass", "cut short"},
		"cut at its end": {file[:len(file)-20], "backup-pass", "cut short"},
		"flipped byte":   {flipped, "backup-pass", "damaged"},
		"another kind":   {[]byte("PK\x03\x04 a zip file, say"), "backup-pass", "not a keel backup"},
		"empty password": {file, "", "give the backup's password"},
	} {
		dir := filepath.Join(t.TempDir(), "stage")
		_, err := Stage(bytes.NewReader(c.data), c.password, dir, nil)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
		if _, serr := os.Stat(dir); serr == nil {
			t.Errorf("%s: the staging folder stayed", name)
		}
	}
	if _, err := Write(&bytes.Buffer{}, Options{Password: "", Key: k}); !errors.Is(err, ErrNoPassword) {
		t.Fatalf("no password: %v", err)
	}
}

// A crafted file (with its password: the signature is only checked at
// the end) cannot write through a symlink it made, or outside its
// staging folder.
func TestCraftedEntriesCannotWriteOutside(t *testing.T) {
	outside := t.TempDir()
	for name, entries := range map[string][]tar.Header{
		"through a link": {
			{Name: "sections/app/x", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "sections/app/x/owned", Typeflag: tar.TypeReg, Size: 2, Mode: 0o644},
		},
		"dot dot":  {{Name: "sections/../../owned", Typeflag: tar.TypeReg, Size: 2, Mode: 0o644}},
		"absolute": {{Name: "/owned", Typeflag: tar.TypeReg, Size: 2, Mode: 0o644}},
	} {
		var b bytes.Buffer
		r, _ := age.NewScryptRecipient("backup-pass")
		r.SetWorkFactor(10)
		aw, _ := age.Encrypt(&b, r)
		tw := tar.NewWriter(aw)
		for _, h := range entries {
			tw.WriteHeader(&h)
			if h.Typeflag == tar.TypeReg {
				tw.Write([]byte("hi"))
			}
		}
		tw.Close()
		aw.Close()
		dir := filepath.Join(t.TempDir(), "stage")
		if _, err := Stage(&b, "backup-pass", dir, nil); !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(outside, "owned")); err == nil {
			t.Fatalf("%s: a file was written outside the staging folder", name)
		}
	}
}
