package qemu

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var testFiles = runFiles{
	Overlay:  "/w/disk.qcow2",
	OVMFCode: OVMFCode,
	OVMFVars: "/w/OVMF_VARS.fd",
	QMP:      "/w/qmp.sock",
}

func mustArgs(t *testing.T, c Config) []string {
	t.Helper()
	c, err := c.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return buildArgs(c, testFiles, 8443)
}

// hasSeq reports whether want appears in args as consecutive elements.
func hasSeq(args []string, want ...string) bool {
	for i := 0; i+len(want) <= len(args); i++ {
		if slices.Equal(args[i:i+len(want)], want) {
			return true
		}
	}
	return false
}

func TestArgsDefaults(t *testing.T) {
	a := mustArgs(t, Config{Image: "x.img"})
	for _, want := range [][]string{
		{"-machine", "q35"},
		{"-m", "1024"},
		{"-smp", "1"},
		{"-display", "none"},
		{"-accel", "tcg"},
		{"-serial", "stdio"},
		{"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + OVMFCode},
		{"-drive", "if=pflash,format=raw,unit=1,file=/w/OVMF_VARS.fd"},
		{"-drive", "file=/w/disk.qcow2,format=qcow2,if=virtio,id=d0"},
		{"-netdev", "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:8443-:443"},
		{"-device", "virtio-net-pci,netdev=n0"},
		{"-smbios", "type=1,serial=KEEL-VM-0001"},
		{"-chardev", "socket,id=qmp0,path=/w/qmp.sock,server=on,wait=off"},
		{"-mon", "chardev=qmp0,mode=control"},
	} {
		if !hasSeq(a, want...) {
			t.Errorf("missing %q in %q", want, a)
		}
	}
	for _, unwanted := range []string{"kvm", "-no-reboot", "i6300esb", "-rtc", "-kernel", "host", "mon:stdio"} {
		for _, arg := range a {
			if strings.Contains(arg, unwanted) && !strings.Contains(arg, "hostfwd") {
				t.Errorf("unexpected %q in %q", unwanted, a)
			}
		}
	}
}

func TestArgsKVMOnlyWhenAsked(t *testing.T) {
	if a := mustArgs(t, Config{Image: "x"}); hasSeq(a, "-accel", "kvm") || !hasSeq(a, "-accel", "tcg") {
		t.Errorf("KVM without asking: %q", a)
	}
	if a := mustArgs(t, Config{Image: "x"}); !hasSeq(a, "-cpu", DefaultCPUModel) {
		t.Errorf("TCG without the default CPU model: %q", a)
	}
	if a := mustArgs(t, Config{Image: "x", CPUModel: "max,aes=off"}); !hasSeq(a, "-cpu", "max,aes=off") {
		t.Errorf("TCG without the CPU model asked for: %q", a)
	}
	a := mustArgs(t, Config{Image: "x", KVM: true, CPUModel: "max"})
	if !hasSeq(a, "-accel", "kvm") || !hasSeq(a, "-cpu", "host") || hasSeq(a, "-accel", "tcg") || hasSeq(a, "-cpu", "max") {
		t.Errorf("KVM asked for: %q", a)
	}
	for env, want := range map[string]bool{"": false, "0": false, "yes": false, "1": true} {
		got := KVMFromEnv(func(k string) string {
			if k == "KEEL_KVM" {
				return env
			}
			return ""
		})
		if got != want {
			t.Errorf("KEEL_KVM=%q: KVM %v, want %v", env, got, want)
		}
	}
}

func TestArgsDiskBuses(t *testing.T) {
	cases := map[string][][]string{
		"virtio": {{"-drive", "file=/w/disk.qcow2,format=qcow2,if=virtio,id=d0"}},
		"ahci": {
			{"-device", "ahci,id=ahci"},
			{"-drive", "file=/w/disk.qcow2,format=qcow2,if=none,id=d0"},
			{"-device", "ide-hd,drive=d0,bus=ahci.0"},
		},
		"nvme": {
			{"-drive", "file=/w/disk.qcow2,format=qcow2,if=none,id=d0"},
			{"-device", "nvme,serial=keel-nvme0,drive=d0"},
		},
	}
	for bus, wants := range cases {
		a := mustArgs(t, Config{Image: "x", DiskBus: bus})
		for _, want := range wants {
			if !hasSeq(a, want...) {
				t.Errorf("bus %s: missing %q in %q", bus, want, a)
			}
		}
	}
	if got := DiskBuses(); !slices.Equal(got, []string{"ahci", "nvme", "virtio"}) {
		t.Errorf("DiskBuses() = %q", got)
	}
}

func TestArgsNICs(t *testing.T) {
	for nic, dev := range map[string]string{"virtio": "virtio-net-pci", "e1000": "e1000"} {
		a := mustArgs(t, Config{Image: "x", NIC: nic, MAC: "52:54:00:aa:bb:cc"})
		if !hasSeq(a, "-device", dev+",netdev=n0,mac=52:54:00:aa:bb:cc") {
			t.Errorf("NIC %s: %q", nic, a)
		}
	}
}

func TestValidationListsValidValues(t *testing.T) {
	cases := []struct {
		cfg  Config
		want []string
	}{
		{Config{Image: "x", DiskBus: "scsi"}, []string{`"scsi"`, "ahci, nvme, virtio"}},
		{Config{Image: "x", NIC: "rtl8139"}, []string{`"rtl8139"`, "e1000, virtio"}},
		{Config{}, []string{"Image or Kernel"}},
		{Config{Image: "x", MemoryMiB: 16}, []string{"too small"}},
		{Config{Image: "x", CPUs: -1}, []string{"CPUs"}},
		{Config{Image: "x", HTTPSPort: 70000}, []string{"port"}},
		{Config{Image: "x", MAC: "01:00:5e:00:00:01"}, []string{"multicast"}},
		{Config{Image: "x", MAC: "nonsense"}, []string{"MAC"}},
		{Config{Kernel: "k", DiskSizeMiB: 10}, []string{"needs an Image"}},
		{Config{Image: "x", Append: "quiet"}, []string{"need a Kernel"}},
		{Config{Image: "x", HostFwd: []string{"tcp::8080-:80"}}, []string{"loopback"}},
		{Config{Image: "x", HostFwd: []string{"tcp:0.0.0.0:8080-:80"}}, []string{"loopback"}},
		{Config{Image: "x", HostFwd: []string{"tcp:127.0.0.1:8080"}}, []string{"want"}},
		{Config{Image: "x", HostFwd: []string{"sctp:127.0.0.1:8080-:80"}}, []string{"protocol"}},
		{Config{Image: "x", GuestFwd: []string{"nonsense"}}, []string{"guestfwd"}},
	}
	for _, tc := range cases {
		_, err := tc.cfg.withDefaults()
		if err == nil {
			t.Errorf("%+v: no error", tc.cfg)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q lacks %q", tc.cfg, err, w)
			}
		}
	}
}

func TestArgsForwards(t *testing.T) {
	a := mustArgs(t, Config{
		Image:    "x",
		HostFwd:  []string{"tcp:127.0.0.1:8780-:80", "udp:127.0.0.1:5353-:53"},
		GuestFwd: []string{"tcp:10.0.2.100:80-cmd:nc 127.0.0.1 8780,x"},
	})
	want := "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:8443-:443,hostfwd=tcp:127.0.0.1:8780-:80," +
		"hostfwd=udp:127.0.0.1:5353-:53,guestfwd=tcp:10.0.2.100:80-cmd:nc 127.0.0.1 8780,,x"
	if !hasSeq(a, "-netdev", want) {
		t.Errorf("netdev: %q", a)
	}
}

func TestArgsOptions(t *testing.T) {
	a := mustArgs(t, Config{
		Kernel: "/k/vmlinuz", Initrd: "/k/initrd", Append: "console=ttyS0 panic=-1",
		BIOS: true, NoReboot: true, Watchdog: true, RTCBase: "2020-01-01T00:00:00",
		Serial: "ABC,123", MemoryMiB: 2048, CPUs: 2, ExtraArgs: []string{"-s"},
	})
	for _, want := range [][]string{
		{"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd", "-append", "console=ttyS0 panic=-1"},
		{"-device", "i6300esb", "-action", "watchdog=reset"},
		{"-rtc", "base=2020-01-01T00:00:00"},
		{"-smbios", "type=1,serial=ABC,,123"},
		{"-no-reboot"},
		{"-m", "2048"},
		{"-smp", "2"},
	} {
		if !hasSeq(a, want...) {
			t.Errorf("missing %q in %q", want, a)
		}
	}
	if a[len(a)-1] != "-s" {
		t.Errorf("ExtraArgs not last: %q", a)
	}
	for _, arg := range a {
		if strings.Contains(arg, "pflash") {
			t.Errorf("BIOS boot with pflash: %q", a)
		}
	}
	// Only a kernel: no disk at all.
	c, _ := Config{Kernel: "/k"}.withDefaults()
	for _, arg := range buildArgs(c, runFiles{QMP: "/q"}, 1) {
		if strings.Contains(arg, "qcow2") {
			t.Errorf("disk without an image: %q", arg)
		}
	}
}

func TestArgsInteractive(t *testing.T) {
	a := mustArgs(t, Config{Image: "x", Interactive: true})
	if !hasSeq(a, "-chardev", "stdio,id=con0,mux=on,signal=off", "-serial", "chardev:con0", "-mon", "chardev=con0,mode=readline") {
		t.Errorf("interactive console: %q", a)
	}
	if hasSeq(a, "-serial", "stdio") {
		t.Errorf("two serial stdio: %q", a)
	}
}

func TestArgsEscapeCommas(t *testing.T) {
	f := testFiles
	f.Overlay = "/a,b/disk.qcow2"
	f.QMP = "/a,b/qmp.sock"
	c, _ := Config{Image: "x"}.withDefaults()
	a := buildArgs(c, f, 1)
	if !hasSeq(a, "-drive", "file=/a,,b/disk.qcow2,format=qcow2,if=virtio,id=d0") ||
		!hasSeq(a, "-chardev", "socket,id=qmp0,path=/a,,b/qmp.sock,server=on,wait=off") {
		t.Errorf("commas not escaped: %q", a)
	}
}

func TestStartMissingTools(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Start(context.Background(), Config{Image: "x", WorkDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "make deps") || !strings.Contains(err.Error(), "qemu-system-x86_64") {
		t.Fatalf("Start without QEMU: %v", err)
	}
}

func TestMissingFirmware(t *testing.T) {
	err := checkFirmware(filepath.Join(t.TempDir(), "OVMF_CODE_4M.fd"))
	if err == nil || !strings.Contains(err.Error(), "make deps") || !strings.Contains(err.Error(), "ovmf") {
		t.Fatalf("missing firmware: %v", err)
	}
}

func TestSocketDirShort(t *testing.T) {
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	dir, temporary, err := socketDir(long)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if !temporary || len(filepath.Join(dir, "qmp.sock")) > maxSocketPath {
		t.Errorf("socket dir %s for %s", dir, long)
	}
	if dir, temporary, _ := socketDir("/tmp/x"); dir != "/tmp/x" || temporary {
		t.Errorf("short dir moved to %s", dir)
	}
}

// A disk with read errors goes through blkdebug, above the qcow2 format
// so that its rules name guest sectors.
func TestArgsReadErrors(t *testing.T) {
	c, err := Config{Image: "x", ReadErrors: []int64{2056}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	a := buildArgs(c, runFiles{Overlay: "/w/disk.qcow2", Blkdebug: "/w/blkdebug.conf", QMP: "/w/qmp"}, 8443)
	want := "driver=blkdebug,config=/w/blkdebug.conf,image.driver=qcow2,image.file.driver=file,image.file.filename=/w/disk.qcow2,if=virtio,id=d0"
	if !hasSeq(a, "-drive", want) {
		t.Errorf("drive: %q", a)
	}
}
