package main

import (
	"archive/tar"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"keel.dev/keel/image/kpkg"
)

// errInvalid makes the command fail after it has said why on stdout.
var errInvalid = errors.New("not every package is valid")

// inspect is `image inspect`: it prints each package's manifest and
// whether the package is valid for the trusted keys, reading it as a box
// would, payload included.
func inspect(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("inspect", flag.ExitOnError)
	var trustedFiles listFlag
	fl.Var(&trustedFiles, "trusted", "PEM `file` of trusted public keys (repeat for more; default build/keys/vendor.pub)")
	fl.Parse(args)
	if fl.NArg() == 0 {
		return fmt.Errorf("inspect: name the package files (image inspect [-trusted KEY.pub] FILE.kpkg)")
	}
	if len(trustedFiles.values) == 0 {
		trustedFiles.values = []string{"build/keys/vendor.pub"}
	}
	var trusted []ed25519.PublicKey
	for _, f := range trustedFiles.values {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("inspect: trusted keys: %w", err)
		}
		keys, err := kpkg.ParsePublicKeys(b)
		if err != nil {
			return fmt.Errorf("inspect: %s: %w", f, err)
		}
		trusted = append(trusted, keys...)
	}
	failed := false
	for i, path := range fl.Args() {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		if err := describePackage(path, trusted, stdout); err != nil {
			if !errors.Is(err, errInvalid) {
				return err
			}
			failed = true
		}
	}
	if failed {
		return errInvalid
	}
	return nil
}

// describePackage prints a package's manifest and verdict; it returns
// errInvalid for a package a box would refuse.
func describePackage(path string, trusted []ed25519.PublicKey, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	defer f.Close()
	fmt.Fprintf(w, "package   %s\n", path)
	p, err := kpkg.Open(f, trusted)
	if err != nil {
		if mj := unverifiedManifest(path); mj != nil {
			fmt.Fprintf(w, "manifest, NOT verified:\n%s", mj)
		}
		fmt.Fprintf(w, "invalid: %v\n", err)
		return errInvalid
	}
	printManifest(w, &p.Manifest, p.KeyID)
	if _, err := io.Copy(io.Discard, p.Payload()); err != nil {
		fmt.Fprintf(w, "invalid: %v\n", err)
		return errInvalid
	}
	fmt.Fprintln(w, "valid")
	return nil
}

func printManifest(w io.Writer, m *kpkg.Manifest, keyID string) {
	or := func(s, none string) string {
		if s == "" {
			return none
		}
		return s
	}
	var reqs []string
	for _, r := range m.Requires {
		reqs = append(reqs, r.String())
	}
	wait := ""
	if m.Wait > 0 {
		wait = time.Duration(m.Wait).String()
	}
	fmt.Fprintf(w, "kind      %s\nname      %s\nversion   %s\n", m.Kind, m.Name, m.Version)
	fmt.Fprintf(w, "payload   %d bytes, sha256 %s\n", m.Payload.Size, m.Payload.SHA256)
	fmt.Fprintf(w, "hardware  %s\n", or(strings.Join(m.Hardware, ", "), "any"))
	fmt.Fprintf(w, "requires  %s\n", or(strings.Join(reqs, ", "), "nothing"))
	fmt.Fprintf(w, "wait      %s\n", or(wait, "none"))
	fmt.Fprintf(w, "signed by %s\n", keyID)
	if m.Notes != "" {
		fmt.Fprintf(w, "notes\n  %s\n", strings.ReplaceAll(strings.TrimRight(m.Notes, "\n"), "\n", "\n  "))
	}
}

// unverifiedManifest returns the manifest entry as it stands, to show
// what a package claims when it does not verify; nil when there is none.
func unverifiedManifest(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	tr := tar.NewReader(f)
	h, err := tr.Next()
	if err != nil || h.Name != "manifest.json" || h.Size > kpkg.MaxManifestSize {
		return nil
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return nil
	}
	return b
}
