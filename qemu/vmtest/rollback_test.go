package vmtest

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/qemu"
	"keel.dev/keel/qemu/tinyinitrd"
)

// A new base that cannot come up healthy ends with the box back on the old
// one, saying which version failed and how: a kernel panic and a hang use
// up GRUB's tries (the hang through the hardware watchdog), a failed health
// check is marked bad at once.
func TestRollbackOfBrokenBase(t *testing.T) {
	e := Require(t)
	keyFile := VendorKey(t)
	cases := []struct {
		fault    string
		watchdog bool
		says     string
	}{
		{"panic", false, "did not come up healthy"},
		{"health", false, "failed its health check"},
		{"hang", true, "did not come up healthy"},
	}
	for _, c := range cases {
		t.Run(c.fault, func(t *testing.T) {
			t.Parallel()
			pkg := e.basePackageWith(t, keyFile, "1.1.0", e.faultInitramfs(t, keyFile, c.fault))
			img := e.BuildImage(t, t.TempDir(), "1.0.0", "")
			vm := Boot(t, qemu.Config{Image: img, Watchdog: c.watchdog})
			WaitReady(t, vm)
			if code, body := upload(t, vm, "", mustRead(t, pkg)); code != http.StatusAccepted {
				t.Fatalf("install: %d %s", code, body)
			}
			if _, err := vm.Expect(`keel: ready: version 1\.0\.0`, 10*time.Minute); err != nil {
				t.Fatal(err)
			}
			st := GetStatus(t, vm, TestPassword)
			if st.Base.Version != "1.0.0" || st.Base.Slot != "a" || !st.Boot.Committed {
				t.Errorf("after the rollback: %+v", st)
			}
			for _, want := range []string{"1.1.0", c.says, "back on 1.0.0"} {
				if !strings.Contains(st.Boot.LastResult, want) {
					t.Errorf("last_result %q does not say %q", st.Boot.LastResult, want)
				}
			}
			if !strings.Contains(vm.Output(), c.says) {
				t.Errorf("the console does not say %q", c.says)
			}
			PowerOff(t, vm)
		})
	}
}

// faultInitramfs builds the initramfs of a broken base: one whose init
// exits (a kernel panic), or this tree's with an agent built to fail its
// health check or hang before it (build tag keel_fault).
func (e Env) faultInitramfs(t *testing.T, keyFile, fault string) string {
	t.Helper()
	root := filepath.Dir(filepath.Dir(e.Initramfs)) // build/initramfs.cpio.lz4
	dir := t.TempDir()
	out := filepath.Join(dir, "initramfs.cpio.lz4")
	if fault == "panic" {
		bin := filepath.Join(dir, "init")
		if err := tinyinitrd.Build(root, "./qemu/vmtest/testdata/exitinit", bin); err != nil {
			t.Fatal(err)
		}
		if err := tinyinitrd.Write(out, bin); err != nil {
			t.Fatal(err)
		}
		return out
	}
	agent := filepath.Join(dir, "agent")
	build := exec.Command("go", "build", "-trimpath", "-tags", "keel_fault", "-ldflags", "-X main.faultMode="+fault, "-o", agent, "./agent")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOAMD64=v1")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the %s agent: %v: %s", fault, err, b)
	}
	pub := filepath.Join(filepath.Dir(keyFile), "vendor.pub")
	mk := exec.Command("go", "run", "./initramfs", "-kernel", e.KernelDir, "-agent", agent,
		"-files", pub+":etc/keel/trusted.pub", "-cache", filepath.Join(root, "build", "cache"), "-o", out)
	mk.Dir = root
	if b, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("build the %s initramfs: %v: %s", fault, err, b)
	}
	return out
}
