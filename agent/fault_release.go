//go:build !keel_fault

package main

// fault is a no-op in release builds; see fault_test_builds.go.
func fault(string) error { return nil }
