package users

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Password rules.
const (
	MinPasswordLength = 8   // characters
	MaxPasswordLength = 256 // bytes; longer input is a mistake or an attack
)

// ErrInvalidPassword wraps every reason a new password is refused; the
// wrapped message says what to change.
var ErrInvalidPassword = errors.New("invalid password")

// ValidatePassword reports why password may not be used, or nil.
func ValidatePassword(password string) error {
	if utf8.RuneCountInString(password) < MinPasswordLength {
		return fmt.Errorf("%w: use at least %d characters", ErrInvalidPassword, MinPasswordLength)
	}
	if len(password) > MaxPasswordLength {
		return fmt.Errorf("%w: use at most %d bytes", ErrInvalidPassword, MaxPasswordLength)
	}
	if !utf8.ValidString(password) {
		return fmt.Errorf("%w: use valid UTF-8 text", ErrInvalidPassword)
	}
	// It must be typeable on the serial console's recovery menu.
	if strings.ContainsFunc(password, unicode.IsControl) {
		return fmt.Errorf("%w: remove control characters such as tabs or line breaks", ErrInvalidPassword)
	}
	return nil
}

// The lower-case Crockford base32 alphabet: 32 symbols, none of i, l, o or u,
// so nothing reads as another character on a console or a sticker, and each
// symbol is exactly 5 bits.
const passwordAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"

// GeneratePassword returns a random password such as "k3vq-8d2m-x0fh-rt7a":
// 16 symbols of 5 bits, 80 bits in all, grouped so that it can be read off
// the serial console and typed without mistakes.
func GeneratePassword() (string, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	var b strings.Builder
	for i, r := range raw {
		if i > 0 && i%4 == 0 {
			b.WriteByte('-')
		}
		b.WriteByte(passwordAlphabet[r&31])
	}
	return b.String(), nil
}
