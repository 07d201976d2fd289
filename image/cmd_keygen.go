package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"keel.dev/keel/image/kpkg"
)

// keygen writes a new vendor signing key pair. It never overwrites: a lost
// or replaced key strands every box that trusts the old one.
func keygen(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("keygen", flag.ExitOnError)
	prefix := fl.String("o", "build/keys/vendor", "write `PREFIX`.key (private, mode 0600) and PREFIX.pub")
	fl.Parse(args)
	keyPath, pubPath := *prefix+".key", *prefix+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("keygen: %s exists; keygen never overwrites a key (remove it yourself if you mean it)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("keygen: %w", err)
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	privPEM, err := kpkg.MarshalPrivateKey(priv)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	pubPEM, err := kpkg.MarshalPublicKey(pub)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := writeNew(keyPath, privPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, pubPEM, 0o644); err != nil {
		os.Remove(keyPath) // ours, just written: a key without its public half is of no use
		return err
	}
	fmt.Fprintf(stdout, "vendor key %s: private %s, public %s\n", kpkg.KeyID(pub), keyPath, pubPath)
	return nil
}

// writeNew creates path, failing if it exists, and syncs it.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("keygen: %s: %w", path, err)
	}
	return nil
}
