package coldplug

import (
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"pci:v00001AF4d*sv*sd*bc*sc*i*", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", true},
		{"pci:v00001AF4d*sv*sd*bc*sc*i*", "pci:v00008086d00001000sv00001AF4sd00000001bc02sc00i00", false},
		{"pci:v00008086d0000100Esv*sd*bc*sc*i*", "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", true},
		{"virtio:d00000001v*", "virtio:d00000001v00001AF4", true},
		{"virtio:d00000001v*", "virtio:d00000002v00001AF4", false},
		{"acpi*:PNP0C0C:*", "acpi:PNP0C0C:", true},
		{"acpi*:PNP0C0C:*", "acpi:LNXPWRBN:", false},
		{"cpu:type:x86,ven*fam*mod*:feature:*0094*", "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0094,00E5", true},
		{"cpu:type:x86,ven*fam*mod*:feature:*0094*", "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0095", false},
		{"scsi:t-0x0[07]*", "scsi:t-0x07", true},
		{"scsi:t-0x0[07]*", "scsi:t-0x05", false},
		{"scsi:t-0x0[!07]", "scsi:t-0x05", true},
		{"scsi:t-0x0[^07]", "scsi:t-0x00", false},
		{"usb:v*p*d*dc*dsc*dp*ic03isc*ip*in*", "usb:v0627p0001d0000dc00dsc00dp00ic03isc00ip00in00", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"of:N*T*Cfoo/bar", "of:NxTyCfoo/bar", true}, // '/' is an ordinary byte
		{"a[b", "a[b", true},                         // unterminated '[' is literal
		{"[]]x", "]x", true},                         // ']' first in a set is literal
		{"[a-c]", "d", false},
		{"*", "", true},
		{"", "", true},
		{"", "x", false},
		{"x*", "x", true},
		{"**a", "bba", true},
	}
	for _, tt := range tests {
		if got := match(tt.pattern, tt.name); got != tt.want {
			t.Errorf("match(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

// TestMatchAgreesWithPathMatch cross-checks the matcher with path.Match on
// strings where both define the same language (no '/', no '\\').
func TestMatchAgreesWithPathMatch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const pat = "ab*?[]^-c:" // Go spells negation only "[^"
	const str = "abc:-"
	gen := func(alphabet string, max int) string {
		b := make([]byte, r.IntN(max+1))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 50000 {
		p, s := gen(pat, 7), gen(str, 7)
		want, err := path.Match(p, s)
		if err != nil {
			continue // malformed for path.Match; fnmatch reads it literally
		}
		if got := match(p, s); got != want {
			t.Fatalf("match(%q, %q) = %v, path.Match says %v", p, s, got, want)
		}
	}
}

// On the machine running the tests, listing devices by bus and class finds
// every modalias a walk of all of /sys/devices finds.
func TestScanFindsWhatAWalkOfSysfsFinds(t *testing.T) {
	if _, err := os.Stat("/sys/devices"); err != nil {
		t.Skip("no sysfs here")
	}
	got, err := scanDevices("/sys")
	if err != nil {
		t.Fatal(err)
	}
	have := make(map[string]bool)
	for _, d := range got {
		have[d.alias] = true
		// Its path is where uevents say the device is.
		b, err := os.ReadFile(filepath.Join("/sys", d.path, "modalias"))
		if err != nil || strings.TrimSpace(string(b)) != d.alias {
			t.Errorf("device %s: its modalias %q is not %s (%v)", d.path, b, d.alias, err)
		}
	}
	filepath.WalkDir("/sys/devices", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "modalias" || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if a := strings.TrimSpace(string(b)); err == nil && a != "" && !have[a] {
			t.Errorf("%s: %s not found by bus and class", p, a)
		}
		return nil
	})
}
