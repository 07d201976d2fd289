package bootstate

import (
	"bytes"
	"testing"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	s := Initial("1.0.0", "1.1.0")
	s.Default, s.B.Good, s.B.Tries, s.Gen = "b", false, 3, 42
	block, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(block) != BlockSize || !bytes.HasPrefix(block, []byte("# GRUB Environment Block\n")) {
		t.Fatalf("not a GRUB environment block: %q", block[:40])
	}
	got, err := Decode(block)
	if err != nil || *got != s {
		t.Fatalf("decode: %+v %v, want %+v", got, err, s)
	}
}

func TestPickFallsBackToBackup(t *testing.T) {
	good := Initial("1.0.0", "")
	gb, _ := good.Encode()
	torn := append([]byte(nil), gb...)
	// A write cut short: the second half still holds the old padding, but
	// the first half lost the end of the variables, including the marker.
	copy(torn[100:], bytes.Repeat([]byte{'#'}, 400))
	s, which, err := Pick(torn, gb)
	if err != nil || which != "backup" || *s != good {
		t.Fatalf("pick: %+v %s %v", s, which, err)
	}
	if _, _, err := Pick(torn, []byte("junk")); err == nil {
		t.Fatal("two bad copies were accepted")
	}
}

func TestDecide(t *testing.T) {
	cases := []struct {
		name  string
		state func(*State)
		want  Decision
		tries int
	}{
		{"committed default", func(s *State) {}, Decision{Slot: "a"}, 0},
		{"trial takes a try", func(s *State) { s.Default, s.B.Good, s.B.Tries = "b", false, 3 }, Decision{Slot: "b", Trial: true}, 2},
		{"no tries left falls back", func(s *State) { s.Default, s.B.Good, s.B.Tries = "b", false, 0 }, Decision{Slot: "a"}, 0},
		{"bad slot skipped", func(s *State) { s.Default, s.B.Bootable = "b", false }, Decision{Slot: "a"}, 0},
		{"nothing bootable", func(s *State) { s.A.Bootable, s.B.Bootable = false, false }, Decision{Slot: "a", Recovery: true}, 0},
	}
	for _, c := range cases {
		s := Initial("1.0.0", "1.1.0")
		c.state(&s)
		d, after := Decide(s)
		if d != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, d, c.want)
		}
		if d.Trial && after.Slot(d.Slot).Tries != c.tries {
			t.Errorf("%s: %d tries left, want %d", c.name, after.Slot(d.Slot).Tries, c.tries)
		}
	}
}

func TestValidateRejectsWhatGRUBCannotHold(t *testing.T) {
	s := Initial("1.0.0 evil", "")
	if _, err := s.Encode(); err == nil {
		t.Error("a version with a space was accepted")
	}
	s = Initial("1.0.0", "")
	s.A.Tries = MaxTries + 1
	if _, err := s.Encode(); err == nil {
		t.Error("tries beyond what grub.cfg can count were accepted")
	}
}
