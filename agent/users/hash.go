package users

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// params are argon2id's cost settings. The defaults are modest because the
// appliance may run under QEMU TCG, 10–20x slower than native, and a login
// must still answer in well under a second there; repeated requests are
// served from the verification cache, not by hashing again.
type params struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
}

var defaultParams = params{memory: 16 * 1024, time: 1, threads: 1}

// generatedParams hash a password the appliance generated: 80 random bits
// cannot be guessed offline however fast one guess is, so stretching them
// would only cost the first boot 0.7 s of an emulated CPU for nothing. A
// password a person chose always gets defaultParams.
var generatedParams = params{memory: 8, time: 1, threads: 1}

// Limits on what a stored hash may ask for, so a damaged or hostile users
// file cannot make every login allocate gigabytes or spin for minutes.
const (
	maxMemory  = 256 * 1024
	maxTime    = 16
	maxThreads = 16
	saltLen    = 16
	keyLen     = 32
)

// kdf is argon2id; a Store holds it as a field so tests can count hashings.
type kdf func(password, salt []byte, p params, keyLen uint32) []byte

func argon2id(password, salt []byte, p params, n uint32) []byte {
	return argon2.IDKey(password, salt, p.time, p.memory, p.threads, n)
}

// hash is a parsed "$argon2id$v=19$m=...,t=...,p=...$salt$key" string.
type hash struct {
	p    params
	salt []byte
	key  []byte
}

var b64 = base64.RawStdEncoding

func newHash(f kdf, password string, p params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	h := hash{p: p, salt: salt, key: f([]byte(password), salt, p, keyLen)}
	return h.String(), nil
}

// HashPassword hashes a password as the appliance stores it, for an image
// builder that preseeds the first admin password (Store.InitializeHashed)
// without leaving the password itself in the image. It checks the
// password against the rules every password meets.
func HashPassword(password string) (string, error) {
	if err := ValidatePassword(password); err != nil {
		return "", err
	}
	return newHash(argon2id, password, defaultParams)
}

func (h hash) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, h.p.memory, h.p.time, h.p.threads, b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

func parseHash(s string) (hash, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" {
		return hash{}, fmt.Errorf("password hash is not in $argon2id$v=..$m=..,t=..,p=..$salt$hash form")
	}
	if parts[1] != "argon2id" {
		return hash{}, fmt.Errorf("password hash algorithm %q is not supported (want argon2id)", parts[1])
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return hash{}, fmt.Errorf("argon2 version %q is not supported (want v=%d)", parts[2], argon2.Version)
	}
	var h hash
	var m, t, p uint64
	if n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || n != 3 ||
		parts[3] != fmt.Sprintf("m=%d,t=%d,p=%d", m, t, p) {
		return hash{}, fmt.Errorf("argon2 parameters %q are malformed", parts[3])
	}
	if m < 8*p || m > maxMemory || t < 1 || t > maxTime || p < 1 || p > maxThreads {
		return hash{}, fmt.Errorf("argon2 parameters %q are out of range", parts[3])
	}
	h.p = params{memory: uint32(m), time: uint32(t), threads: uint8(p)}
	var err error
	if h.salt, err = b64.DecodeString(parts[4]); err != nil || len(h.salt) < 8 {
		return hash{}, fmt.Errorf("password salt is malformed")
	}
	if h.key, err = b64.DecodeString(parts[5]); err != nil || len(h.key) < 16 || len(h.key) > 64 {
		return hash{}, fmt.Errorf("password hash value is malformed")
	}
	return h, nil
}

func (h hash) matches(f kdf, password string) bool {
	got := f([]byte(password), h.salt, h.p, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(got, h.key) == 1
}
