package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeygenRefusesToOverwrite(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "keys", "vendor")
	var out bytes.Buffer
	if err := keygen([]string{"-o", prefix}, &out); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(prefix + ".key")
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v, mode %v", err, st.Mode())
	}
	before, _ := os.ReadFile(prefix + ".key")
	err = keygen([]string{"-o", prefix}, &out)
	if err == nil || !strings.Contains(err.Error(), "never overwrites") {
		t.Fatalf("second keygen: %v", err)
	}
	if after, _ := os.ReadFile(prefix + ".key"); !bytes.Equal(before, after) {
		t.Fatal("the key changed")
	}
}

func TestPackageAndInspect(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	for _, p := range []string{"vendor", "other"} {
		if err := keygen([]string{"-o", filepath.Join(dir, p)}, &out); err != nil {
			t.Fatal(err)
		}
	}
	payload := filepath.Join(dir, "app.squashfs")
	os.WriteFile(payload, bytes.Repeat([]byte("squash"), 5000), 0o644)
	notes := filepath.Join(dir, "notes.txt")
	os.WriteFile(notes, []byte("New reports page.\n"), 0o644)
	pkg := filepath.Join(dir, "out", "app.kpkg")
	out.Reset()
	err := makePackage([]string{"-kind", "app", "-name", "remote-support", "-version", "12.2.0",
		"-payload", payload, "-key", filepath.Join(dir, "vendor.key"),
		"-requires", "base >= 3.3.2", "-requires", "app >= 12.1.0", "-hardware", "kx-100,kx-200",
		"-wait", "24h", "-notes", notes, "-o", pkg}, &out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind      app\n", "version   12.2.0\n", "payload   30000 bytes", "hardware  kx-100, kx-200\n",
		"requires  base >= 3.3.2, app >= 12.1.0\n", "wait      24h0m0s\n", "New reports page.", "\nvalid\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("package output lacks %q:\n%s", want, out.String())
		}
	}

	inspectOut := func(key string, files ...string) (string, error) {
		var b bytes.Buffer
		err := inspect(append([]string{"-trusted", filepath.Join(dir, key)}, files...), &b)
		return b.String(), err
	}
	if s, err := inspectOut("vendor.pub", pkg); err != nil || !strings.HasSuffix(s, "\nvalid\n") {
		t.Fatalf("inspect: %v\n%s", err, s)
	}
	s, err := inspectOut("other.pub", pkg)
	if !errors.Is(err, errInvalid) || !strings.Contains(s, "invalid: package is signed by an unknown key") ||
		!strings.Contains(s, "manifest, NOT verified:") {
		t.Fatalf("inspect with another key: %v\n%s", err, s)
	}

	data, _ := os.ReadFile(pkg)
	data[len(data)-1024-512-100] ^= 1
	bad := filepath.Join(dir, "bad.kpkg")
	os.WriteFile(bad, data, 0o644)
	s, err = inspectOut("vendor.pub", pkg, bad)
	if !errors.Is(err, errInvalid) || !strings.Contains(s, "\nvalid\n") || !strings.Contains(s, "invalid: payload does not match the manifest") {
		t.Fatalf("inspect of a good and a damaged package: %v\n%s", err, s)
	}
}

func TestPackageBaseFromBuild(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "kernel")
	os.MkdirAll(kernel, 0o755)
	os.WriteFile(filepath.Join(kernel, "vmlinuz"), bytes.Repeat([]byte{'k'}, 10000), 0o644)
	os.WriteFile(filepath.Join(kernel, "version"), []byte("6.1.0-test\n"), 0o644)
	initramfs := filepath.Join(dir, "initramfs.cpio.lz4")
	os.WriteFile(initramfs, bytes.Repeat([]byte{'i'}, 20000), 0o644)
	var out bytes.Buffer
	if err := keygen([]string{"-o", filepath.Join(dir, "vendor")}, &out); err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(dir, "packages", "keel-base-2.0.0.kpkg")
	err := makePackage([]string{"-base-from-build", "-kernel-dir", kernel, "-initramfs", initramfs,
		"-version", "2.0.0", "-key", filepath.Join(dir, "vendor.key"), "-o", pkg}, &out)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(pkg)
	if !bytes.Contains(data, []byte("hsqs")) || !bytes.Contains(data, []byte(`"kernel": "6.1.0-test"`)) {
		t.Fatal("the payload is not the base squashfs")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "packages", ".kpkg-*")); len(left) != 0 {
		t.Fatalf("scratch files left: %v", left)
	}
	if err := makePackage([]string{"-base-from-build", "-kind", "app", "-version", "2.0.0",
		"-key", filepath.Join(dir, "vendor.key"), "-o", pkg}, &out); err == nil {
		t.Fatal("an app package from the base build")
	}
}
