package failover

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
)

// HeartbeatPort is the UDP port the pair's heartbeats use, on the
// addresses each box reaches the other by.
const HeartbeatPort = 7460

// heartbeatMagic starts every heartbeat: the format and its version.
var heartbeatMagic = [4]byte{'K', 'H', 'B', '1'}

// heartbeat is one message of the pair's heartbeat, sent by each box to
// the other every interval. It proves the sender alive only together with
// its echo: the sequence number of a heartbeat of the receiver's that the
// sender last saw. A heartbeat that echoes something the receiver sent
// within the detection time cannot be an old one replayed.
type heartbeat struct {
	Role   Role
	Auto   bool   // the sender takes over automatically
	Epoch  uint64 // raised at every takeover
	Boot   uint64 // random per run of the sender's heartbeat loop
	Seq    uint64
	EchoB  uint64 // the receiver's Boot, as last seen by the sender; 0: none yet
	EchoS  uint64 // and its Seq
	Serial string // the sender's
}

const (
	hbHeaderLen = 4 + 1 + 1 + 8*5 + 1
	hbMACLen    = sha256.Size
	// hbMaxLen bounds a heartbeat: a serial has at most 64 bytes.
	hbMaxLen = hbHeaderLen + 64 + hbMACLen
)

var roleCodes = map[Role]byte{RoleNone: 0, RolePrimary: 1, RoleBackup: 2}

var errHeartbeat = errors.New("not a heartbeat of this pair")

// marshal encodes h and appends its HMAC-SHA256 under key. to is the
// receiver's serial: it is in the MAC (not in the message) so a heartbeat
// cannot be reflected back to its sender.
func (h heartbeat) marshal(key []byte, to string) []byte {
	serial := h.Serial
	if len(serial) > 64 {
		serial = serial[:64]
	}
	b := make([]byte, 0, hbHeaderLen+len(serial)+hbMACLen)
	b = append(b, heartbeatMagic[:]...)
	b = append(b, roleCodes[h.Role])
	var flags byte
	if h.Auto {
		flags |= 1
	}
	b = append(b, flags)
	for _, v := range []uint64{h.Epoch, h.Boot, h.Seq, h.EchoB, h.EchoS} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	b = append(b, byte(len(serial)))
	b = append(b, serial...)
	return append(b, heartbeatMAC(key, to, b)...)
}

func heartbeatMAC(key []byte, to string, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("keel failover heartbeat v1\x00"))
	m.Write([]byte(to))
	m.Write([]byte{0})
	m.Write(msg)
	return m.Sum(nil)
}

// parseHeartbeat checks b's MAC for a heartbeat sent to serial to and
// decodes it; anything else (another pair's, a forgery, garbage) is
// errHeartbeat.
func parseHeartbeat(b []byte, key []byte, to string) (heartbeat, error) {
	var h heartbeat
	if len(b) < hbHeaderLen+hbMACLen || len(b) > hbMaxLen || [4]byte(b[:4]) != heartbeatMagic {
		return h, errHeartbeat
	}
	n := int(b[hbHeaderLen-1])
	if len(b) != hbHeaderLen+n+hbMACLen {
		return h, errHeartbeat
	}
	msg, mac := b[:hbHeaderLen+n], b[hbHeaderLen+n:]
	if !hmac.Equal(mac, heartbeatMAC(key, to, msg)) {
		return h, errHeartbeat
	}
	role := Role("?")
	for r, c := range roleCodes {
		if c == b[4] {
			role = r
		}
	}
	if role == "?" || b[5]&^1 != 0 {
		return h, errHeartbeat
	}
	h.Role, h.Auto = role, b[5]&1 != 0
	v := func(i int) uint64 { return binary.BigEndian.Uint64(b[6+8*i:]) }
	h.Epoch, h.Boot, h.Seq, h.EchoB, h.EchoS = v(0), v(1), v(2), v(3), v(4)
	h.Serial = string(b[hbHeaderLen : hbHeaderLen+n])
	return h, nil
}
