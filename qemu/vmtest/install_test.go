package vmtest

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/manifest"
	"keel.dev/keel/qemu"
)

// Installing a newer signed base moves the box to the other slot, which it
// commits after its health checks; one more install brings it back to the
// first slot. Bad packages are refused before anything is written. Slot b
// starts bootable (1.0.0 too), so that the install has to mark it otherwise.
func TestInstallBaseAcrossSlots(t *testing.T) {
	e := Require(t)
	keyFile := VendorKey(t)
	img := e.BuildImage(t, t.TempDir(), "1.0.0", "1.0.0")
	vm := Boot(t, qemu.Config{Image: img})
	WaitReady(t, vm)

	pkg110 := e.basePackage(t, keyFile, "1.1.0")
	damaged, _ := os.ReadFile(pkg110)
	damaged[600] ^= 0x01 // inside manifest.json
	if code, body := upload(t, vm, "", damaged); code != http.StatusBadRequest || !strings.Contains(string(body), "error") {
		t.Errorf("a flipped manifest bit: %d %s", code, body)
	}
	if st := bootStateNow(t, vm); !st.B.Bootable || st.Default != "a" {
		t.Fatalf("before the damaged payload slot b is bootable %v, default %s; want bootable, default a", st.B.Bootable, st.Default)
	}
	// A flipped payload bit is caught while the payload streams, after
	// the slot was marked unbootable: it stays so.
	damaged = mustRead(t, pkg110)
	damaged[len(damaged)-1024-512-4096] ^= 0x10 // in the payload, before the tar's padding and end
	if code, body := upload(t, vm, "", damaged); code != http.StatusBadRequest || !strings.Contains(string(body), "SHA-256") {
		t.Errorf("a flipped payload bit: %d %s", code, body)
	}
	if st := bootStateNow(t, vm); st.B.Bootable || st.Default != "a" {
		t.Errorf("after a damaged payload slot b is bootable %v, default %s; want unbootable, default a", st.B.Bootable, st.Default)
	}
	if code, body := upload(t, vm, "", mustRead(t, e.basePackage(t, otherKey(t), "1.1.0"))); code != http.StatusForbidden || !strings.Contains(string(body), "unknown key") {
		t.Errorf("a package signed by an unknown key: %d %s", code, body)
	}
	same := e.basePackage(t, keyFile, "1.0.0")
	if code, body := upload(t, vm, "", mustRead(t, same)); code != http.StatusConflict || !strings.Contains(string(body), "already installed") {
		t.Errorf("the same version without allow_downgrade: %d %s", code, body)
	}

	for _, step := range []struct{ version, slot string }{{"1.1.0", "b"}, {"1.2.0", "a"}} {
		pkg := pkg110
		if step.version != "1.1.0" {
			pkg = e.basePackage(t, keyFile, step.version)
		}
		code, body := upload(t, vm, "", mustRead(t, pkg))
		if code != http.StatusAccepted {
			t.Fatalf("install %s: %d %s", step.version, code, body)
		}
		if _, err := vm.Expect(`keel: reboot`, ShutdownTimeout); err != nil {
			t.Fatal(err)
		}
		WaitReady(t, vm)
		st := GetStatus(t, vm, TestPassword)
		if st.Base.Version != step.version || st.Base.Slot != step.slot || !st.Boot.Committed || !st.Boot.Trial {
			t.Fatalf("after installing %s: %+v", step.version, st)
		}
		if !strings.Contains(st.Boot.LastResult, "committed") {
			t.Errorf("last_result %q does not say the trial was committed", st.Boot.LastResult)
		}
	}
	PowerOff(t, vm)
}

// basePackage builds a signed base package of this tree's kernel and
// initramfs with the given version.
func (e Env) basePackage(t *testing.T, keyFile, version string) string {
	t.Helper()
	return e.basePackageWith(t, keyFile, version, e.Initramfs)
}

// basePackageWith builds a signed base package of this tree's kernel and
// the given initramfs.
func (e Env) basePackageWith(t *testing.T, keyFile, version, initramfs string) string {
	t.Helper()
	dir := t.TempDir()
	rel, _ := os.ReadFile(filepath.Join(e.KernelDir, "version"))
	sq := filepath.Join(dir, "base.squashfs")
	m := manifest.Base{Kind: "base", Name: "keel", Version: version, BuildTime: time.Now().UTC(), Kernel: strings.TrimSpace(string(rel))}
	if err := diskimage.BaseSquashfs(sq, filepath.Join(e.KernelDir, "vmlinuz"), initramfs, m); err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := kpkg.ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := os.Open(sq)
	if err != nil {
		t.Fatal(err)
	}
	defer payload.Close()
	out := filepath.Join(dir, fmt.Sprintf("keel-base-%s.kpkg", version))
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	man := kpkg.Manifest{Kind: kpkg.KindBase, Name: "keel", Version: kpkg.MustParseVersion(version)}
	if err := kpkg.Write(f, man, payload, key); err != nil {
		t.Fatal(err)
	}
	return out
}

// otherKey writes a vendor key the box does not trust.
func otherKey(t *testing.T) string {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(nil)
	b, err := kpkg.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other.key")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// bootStateNow reads the boot state from a running VM's disk; the agent
// synced it before it answered.
func bootStateNow(t *testing.T, vm *qemu.VM) *bootstate.State {
	t.Helper()
	raw := RawDisk(t, vm)
	defer os.Remove(raw)
	st, _, err := diskimage.ReadBootState(raw)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func upload(t *testing.T, vm *qemu.VM, query string, pkg []byte) (int, []byte) {
	t.Helper()
	code, body, err := request(vm.HTTPSPort(), "POST", "/api/v1/install"+query, TestPassword, bytes.NewReader(pkg), 5*time.Minute)
	if err != nil {
		t.Fatalf("POST /api/v1/install%s: %v", query, err)
	}
	return code, body
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
