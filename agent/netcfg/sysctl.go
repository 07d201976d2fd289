package netcfg

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Sysctl reads and writes kernel parameters by their /proc/sys path, e.g.
// "net/ipv6/conf/eth0/autoconf". ErrNotExist from Get means the kernel has
// no such parameter (IPv6 disabled, link gone).
type Sysctl interface {
	Get(key string) (string, error)
	Set(key, value string) error
}

// procSysctl is Sysctl through /proc/sys, opened from inside a namespace:
// /proc/sys/net shows the network namespace of the thread that opens it.
type procSysctl struct{ ns NS }

func (p procSysctl) Get(key string) (string, error) {
	var v string
	err := p.ns.Do(func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		v = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", key, err)
	}
	return v, nil
}

func (p procSysctl) Set(key, value string) error {
	err := p.ns.Do(func() error {
		return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
	})
	if err != nil {
		return fmt.Errorf("write sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
