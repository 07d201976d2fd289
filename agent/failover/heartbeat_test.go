package failover

import (
	"bytes"
	"testing"
)

func TestHeartbeatRoundTripAndRefusals(t *testing.T) {
	key := []byte("a-shared-key-of-the-pair-0123456789")
	h := heartbeat{Role: RolePrimary, Auto: true, Epoch: 9, Boot: 77, Seq: 1234, EchoB: 5, EchoS: 6, Serial: "KEEL-A"}
	b := h.marshal(key, "KEEL-B")
	got, err := parseHeartbeat(b, key, "KEEL-B")
	if err != nil || got != h {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, h)
	}
	if _, err := parseHeartbeat(b, []byte("another-key-another-pair-0123456789"), "KEEL-B"); err == nil {
		t.Error("a heartbeat under another key was taken")
	}
	if _, err := parseHeartbeat(b, key, "KEEL-A"); err == nil {
		t.Error("a heartbeat reflected back to its sender was taken")
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x40
		if _, err := parseHeartbeat(c, key, "KEEL-B"); err == nil {
			t.Fatalf("a heartbeat with byte %d flipped was taken", i)
		}
	}
	if _, err := parseHeartbeat(b[:len(b)-1], key, "KEEL-B"); err == nil {
		t.Error("a cut heartbeat was taken")
	}
}

func FuzzHeartbeat(f *testing.F) {
	key := []byte("fuzz-key-fuzz-key-fuzz-key")
	f.Add(heartbeat{Role: RoleBackup, Epoch: 1, Serial: "S"}.marshal(key, "T"))
	f.Add([]byte("KHB1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeartbeat(b, key, "T")
		if err != nil {
			return
		}
		// Whatever parses must encode back to the same bytes.
		if again := h.marshal(key, "T"); !bytes.Equal(again, b) {
			t.Fatalf("parsed %+v from %x, which encodes to %x", h, b, again)
		}
	})
}
