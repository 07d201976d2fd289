package kpkg

import "errors"

// Errors Open and the payload reader wrap, so callers can tell a damaged
// download (retry) from a package that will never install (refuse). Their
// messages read as the start of a sentence: "package is truncated: payload
// has 10 of 4096 bytes".
var (
	// ErrTruncated: the stream ended early.
	ErrTruncated = errors.New("package is truncated")
	// ErrDamaged: the stream is not a well-formed package.
	ErrDamaged = errors.New("package is damaged")
	// ErrUnknownKey: the signature names a key that is not trusted.
	ErrUnknownKey = errors.New("signed by an unknown key")
	// ErrSignature: the signature does not verify with the key it names.
	ErrSignature = errors.New("signature does not verify")
	// ErrManifest: the manifest is signed but its content is not valid.
	ErrManifest = errors.New("manifest is invalid")
	// ErrPayload: the payload does not match the manifest's size or hash.
	ErrPayload = errors.New("payload does not match the manifest")
)
