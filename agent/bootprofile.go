package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"runtime/pprof"
	"strings"
)

// Markers around the boot's CPU profile on the console.
const (
	cpuProfileBegin = "keel: boot cpu profile begin"
	cpuProfileEnd   = "keel: boot cpu profile end"
)

// startBootProfile profiles the agent's CPU from PID 1's start to ready when
// on, which the kernel command line's keel.cpuprofile=1 turns (`go run
// ./qemu/cmd/bench -only boot -cpuprofile FILE` boots with it). The returned stop prints
// the profile on the console as base64 between two marker lines: at that
// moment of a boot there is nowhere else to take it from. It is nil
// without the argument.
func startBootProfile(on bool) (stop func(console io.Writer)) {
	if !on {
		return nil
	}
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		return nil
	}
	return func(console io.Writer) {
		pprof.StopCPUProfile()
		s := base64.StdEncoding.EncodeToString(buf.Bytes())
		var out strings.Builder
		fmt.Fprintln(&out, cpuProfileBegin)
		for len(s) > 0 {
			n := min(len(s), 100)
			fmt.Fprintln(&out, s[:n])
			s = s[n:]
		}
		fmt.Fprintln(&out, cpuProfileEnd)
		io.WriteString(console, out.String())
	}
}
