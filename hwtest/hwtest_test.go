package hwtest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeBox is a sysfs, procfs and /dev of a small VM in a folder: one
// virtio disk of 8 MiB with a partition, a virtio NIC with link, a
// watchdog, a temperature sensor, no RTC.
func fakeBox(t *testing.T, tempMilli string) Options {
	t.Helper()
	root := t.TempDir()
	w := func(rel, content string) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(rel, target string) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.MkdirAll(filepath.Join(root, target), 0o755)
		if err := os.Symlink(filepath.Join(root, target), p); err != nil {
			t.Fatal(err)
		}
	}
	w("proc/cpuinfo", "processor\t: 0\nmodel name\t: Test CPU\n\nprocessor\t: 1\nmodel name\t: Test CPU\n")
	w("proc/meminfo", "MemTotal:        1000000 kB\nMemFree:          800000 kB\nMemAvailable:     900000 kB\n")
	link("sys/block/vda", "sys/devices/pci0000:00/virtio2/block/vda")
	w("sys/devices/pci0000:00/virtio2/block/vda/size", "16384\n")
	w("sys/devices/pci0000:00/virtio2/block/vda/vda1/start", "2048\n")
	w("sys/devices/pci0000:00/virtio2/block/vda/vda1/size", "8192\n")
	disk := bytes.Repeat([]byte{0x5a}, 8<<20)
	w("dev/vda", string(disk))
	link("sys/class/net/eth0/device/driver", "sys/bus/virtio/drivers/virtio_net")
	w("sys/class/net/eth0/address", "52:54:00:12:34:56\n")
	w("sys/class/net/eth0/carrier", "1\n")
	w("sys/class/watchdog/watchdog0/identity", "i6300ESB timer\n")
	w("sys/class/hwmon/hwmon0/name", "k10temp\n")
	w("sys/class/hwmon/hwmon0/temp1_input", tempMilli+"\n")
	w("sys/class/hwmon/hwmon0/temp1_crit", "95000\n")
	os.MkdirAll(filepath.Join(root, "scratch"), 0o755)
	return Options{
		Profile: Profile{Name: "test", CPUs: 2, MemoryMiB: 1000, Disks: []Disk{{Bus: "virtio", MinGiB: 0}},
			NICs: []NIC{{Driver: "virtio_net", Link: true}}, Watchdog: true},
		Sys: filepath.Join(root, "sys"), Proc: filepath.Join(root, "proc"), Dev: filepath.Join(root, "dev"),
		ScratchDir: filepath.Join(root, "scratch"),
	}
}

func byName(r Report) map[string]Check {
	m := map[string]Check{}
	for _, c := range r.Checks {
		m[c.Name] = c
	}
	return m
}

func TestHealthyBoxPassesOrSkipsWithReasons(t *testing.T) {
	o := fakeBox(t, "45000")
	r := Run(context.Background(), o)
	c := byName(r)
	if !r.Passed {
		var b bytes.Buffer
		r.Table(&b)
		t.Fatalf("a healthy box failed:\n%s", b.String())
	}
	for name, want := range map[string]Status{"cpu": Pass, "memory": Pass, "disks": Pass, "nics": Pass, "rtc": Skip, "watchdog": Pass, "sensors": Pass} {
		if c[name].Status != want {
			t.Errorf("%s: %s (%s), want %s", name, c[name].Status, c[name].Sentence, want)
		}
		if c[name].Sentence == "" {
			t.Errorf("%s has no sentence", name)
		}
	}
	if !strings.Contains(strings.Join(c["disks"].Details, " "), "write-read: 8 MiB written to the data partition read back the same") {
		t.Errorf("disks: %+v", c["disks"].Details)
	}
	if es, _ := os.ReadDir(o.ScratchDir); len(es) != 0 {
		t.Errorf("the scratch file stayed: %v", es)
	}
	var b bytes.Buffer
	r.Table(&b)
	for _, l := range strings.Split(b.String(), "\n") {
		if len(l) > 80 {
			t.Errorf("a table line is wider than 80 columns: %q", l)
		}
	}
	if js, err := json.Marshal(r); err != nil || !strings.Contains(string(js), `"status":"skip"`) {
		t.Errorf("json: %s %v", js, err)
	}
}

func TestMissingHardwareAndHeatFail(t *testing.T) {
	o := fakeBox(t, "97000")
	o.Profile.CPUs = 8
	o.Profile.MemoryMiB = 4096
	o.Profile.Disks = append(o.Profile.Disks, Disk{Bus: "nvme", MinGiB: 100})
	o.Profile.NICs = append(o.Profile.NICs, NIC{Driver: "igb"})
	o.Profile.RTC = true
	os.RemoveAll(filepath.Join(o.Sys, "class/watchdog"))
	os.WriteFile(filepath.Join(o.Sys, "class/net/eth0/carrier"), []byte("0\n"), 0o644)
	r := Run(context.Background(), o)
	c := byName(r)
	if r.Passed {
		t.Fatal("passed")
	}
	for name, want := range map[string]string{
		"cpu":      "2 CPUs (Test CPU) where the profile has 8",
		"memory":   "where the profile has 4096 MiB",
		"disks":    "the profile's nvme disk of at least 100 GiB is missing",
		"nics":     "eth0 has no link: check its cable; the profile's igb interface is missing",
		"rtc":      "no RTC",
		"watchdog": "no hardware watchdog where the profile has one",
		"sensors":  "too hot: k10temp temp1 at 97 °C",
	} {
		if c[name].Status != Fail || !strings.Contains(c[name].Sentence, want) {
			t.Errorf("%s: %s %q, want a failure saying %q", name, c[name].Status, c[name].Sentence, want)
		}
	}
}

func TestUnreadableDiskFails(t *testing.T) {
	o := fakeBox(t, "45000")
	os.Remove(filepath.Join(o.Dev, "vda"))
	c := byName(Run(context.Background(), o))["disks"]
	if c.Status != Fail || !strings.Contains(c.Sentence, "vda cannot be read") {
		t.Fatalf("%s %q", c.Status, c.Sentence)
	}
}

func TestSectorListIsRanges(t *testing.T) {
	if got := sectorList([]int64{4096, 2048, 2049, 2050, 7}); got != "7, 2048-2050, 4096" {
		t.Fatal(got)
	}
}

func TestShippedProfilesParse(t *testing.T) {
	ps, err := Profiles()
	if err != nil || len(ps) < 3 {
		t.Fatalf("%v %v", ps, err)
	}
	b, _ := profileFiles.ReadFile("profiles/template.json")
	if _, err := ParseProfile(b); err != nil {
		t.Fatalf("the template does not parse: %v", err)
	}
	if _, err := ParseProfile([]byte(`{"name":"x","cpu":2}`)); err == nil {
		t.Fatal("a misspelt field was taken")
	}
	if _, err := LookupProfile("nope"); err == nil || !strings.Contains(err.Error(), "qemu-virtio") {
		t.Fatalf("unknown profile: %v", err)
	}
}

func TestCanceledRunStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := Run(ctx, fakeBox(t, "45000"))
	if !r.Canceled || r.Passed || len(r.Checks) != 0 {
		t.Fatalf("%+v", r)
	}
}

func TestMatchPicksTheProfileOfThePresentHardware(t *testing.T) {
	o := fakeBox(t, "45000")
	if p := Match(o); p.Name != "qemu-virtio" {
		t.Fatalf("matched %q", p.Name)
	}
	os.RemoveAll(filepath.Join(o.Sys, "block"))
	if p := Match(o); p.Name != "generic" {
		t.Fatalf("matched %q with no disk", p.Name)
	}
}

// The RTC is read through sysfs, so a clock the agent holds open still
// tests: a ticking one passes, a stuck one fails saying so.
func TestRTCThroughSysfs(t *testing.T) {
	o := fakeBox(t, "40000")
	o.Profile.RTC = true
	epoch := filepath.Join(o.Sys, "class/rtc/rtc0/since_epoch")
	os.MkdirAll(filepath.Dir(epoch), 0o755)
	now := time.Now().Unix()
	os.WriteFile(epoch, []byte(strconv.FormatInt(now, 10)+"\n"), 0o644)
	if c := checkRTC(context.Background(), o); c.Status != Fail || !strings.Contains(c.Sentence, "does not tick") {
		t.Errorf("a stuck RTC: %+v", c)
	}
	go func() {
		time.Sleep(500 * time.Millisecond)
		os.WriteFile(epoch, []byte(strconv.FormatInt(now+1, 10)+"\n"), 0o644)
	}()
	if c := checkRTC(context.Background(), o); c.Status != Pass {
		t.Errorf("a ticking RTC: %+v", c)
	}
}
