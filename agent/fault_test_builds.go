//go:build keel_fault

package main

import (
	"errors"
	"time"
)

// faultMode makes the broken agents the rollback VM tests install, set with
// -ldflags "-X main.faultMode=health|hang". Only builds with the keel_fault
// tag have it; release images never do.
var faultMode string

// fault is called at the named point of the boot; it fails or hangs there
// as faultMode asks.
func fault(point string) error {
	if point != "health" {
		return nil
	}
	switch faultMode {
	case "health":
		return errors.New("injected fault: this test build fails its health check")
	case "hang":
		for {
			time.Sleep(time.Hour)
		}
	}
	return nil
}
