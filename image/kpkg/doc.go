// Package kpkg is keel's package format: one file that carries a signed
// manifest and the payload for a base or application slot. The vendor's
// tools write packages with Write; the agent reads them with Open. The
// package has no side effects: no files, no clock, no global state.
//
// # File format
//
// A package (conventionally NAME-KIND-VERSION.kpkg) is a POSIX ustar
// archive, so `tar -xOf FILE manifest.json` shows the manifest. It holds
// exactly three regular files, in this order:
//
//	manifest.json  the manifest (JSON, at most MaxManifestSize bytes)
//	manifest.sig   {"key_id":"<16 hex>","ed25519":"<base64>"} and a newline
//	payload        the slot's squashfs, Manifest.Payload.Size bytes
//
// followed by the ustar end-of-archive marker (two zero blocks), where a
// reader stops. Entries are plain ustar regular files: no PAX or GNU
// extensions, links or sparse files. The ed25519 signature covers the
// exact bytes of manifest.json; the manifest names the payload's size and
// SHA-256, so the signature binds the whole package while the payload
// streams. The key id is the hex of the first 8 bytes of the SHA-256 of the
// raw 32-byte public key; it picks the trusted key and is not itself
// trusted. Archive metadata (owner, mode, time) is ignored and written as
// constants, so packaging is reproducible.
//
// Order matters for streaming: a reader holds at most the manifest and the
// signature in memory (archive/tar may read up to 1 MiB of a hostile
// extended header before it is refused), verifies them, and only then
// hands out payload bytes, hashing them as they pass; the payload is good
// only once its stream has ended with io.EOF. Nothing in verification
// reads the clock.
//
// Keys are PEM files: the public key as "PUBLIC KEY" (PKIX) and the
// private key as "PRIVATE KEY" (PKCS #8), as openssl writes them for
// ed25519. A file of trusted keys may hold several PUBLIC KEY blocks.
package kpkg
