package coldplug

import (
	"reflect"
	"strings"
	"testing"
)

// The kernel's own module requests, as it makes them.
func TestModprobeLoadsWhatTheKernelAsksFor(t *testing.T) {
	fs := newFakeSystem(t)
	opts := Options{Root: fs.root, Release: testRelease, Insert: fs.insert}
	var out strings.Builder
	if code := Modprobe([]string{"-q", "--", "fs-ext4"}, opts, &out); code != 0 {
		t.Fatalf("modprobe -q -- fs-ext4: exit %d: %s", code, out.String())
	}
	if want := []string{"crc32c_generic", "jbd2", "mbcache", "crc16", "ext4"}; !reflect.DeepEqual(fs.inserted, want) {
		t.Errorf("inserted %v, want %v", fs.inserted, want)
	}
	// A module that is not on the box: quiet with -q, as the kernel asks
	// for modules that may not exist (net-pf-*), but a failure all the same.
	out.Reset()
	if code := Modprobe([]string{"-q", "--", "net-pf-99"}, opts, &out); code != 1 || out.Len() != 0 {
		t.Errorf("modprobe -q of an unknown module: exit %d, said %q; want 1 and nothing", code, out.String())
	}
	if code := Modprobe([]string{"net-pf-99"}, opts, &out); code != 1 || !strings.Contains(out.String(), "no such module") {
		t.Errorf("modprobe of an unknown module: exit %d, said %q", code, out.String())
	}
	// A broken module is reported even with -q.
	out.Reset()
	if code := Modprobe([]string{"-q", "needs_broken"}, opts, &out); code != 1 || !strings.Contains(out.String(), "broken") {
		t.Errorf("modprobe -q of a broken module: exit %d, said %q", code, out.String())
	}
	out.Reset()
	if code := Modprobe(nil, opts, &out); code != 2 || !strings.Contains(out.String(), "usage") {
		t.Errorf("modprobe without a name: exit %d, said %q", code, out.String())
	}
}
