// Package cli is the hwtest command line: /bin/hwtest on the box (the
// agent's own binary under that name) and hwtest/cmd/hwtest off it.
//
//	hwtest [-profile NAME | -profile-file FILE] [-mode quick|full] [-scratch DIR] [-json]
package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"keel.dev/keel/hwtest"
)

// Main runs the self-test with args (without the program name), prints its
// table (or JSON with -json) to stdout and returns the exit code: 0 when
// every check passed, 1 when one failed, 2 for bad arguments.
func Main(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("hwtest", flag.ContinueOnError)
	fl.SetOutput(stderr)
	name := fl.String("profile", "qemu-virtio", "shipped hardware profile: "+strings.Join(hwtest.ProfileNames(), ", "))
	file := fl.String("profile-file", "", "a hardware profile in JSON (see hwtest/profiles/template.json); overrides -profile")
	mode := fl.String("mode", "quick", "quick (about 2 minutes in a VM) or full")
	scratch := fl.String("scratch", "", "a folder on the data partition for the disk write-read test (empty: skipped)")
	asJSON := fl.Bool("json", false, "print the report as JSON")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *mode != "quick" && *mode != "full" {
		fmt.Fprintln(stderr, "hwtest: -mode is quick or full")
		return 2
	}
	var p hwtest.Profile
	var err error
	if *file != "" {
		var b []byte
		if b, err = os.ReadFile(*file); err == nil {
			p, err = hwtest.ParseProfile(b)
		}
	} else {
		p, err = hwtest.LookupProfile(*name)
	}
	if err != nil {
		fmt.Fprintln(stderr, "hwtest:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	r := hwtest.Run(ctx, hwtest.Options{Profile: p, Mode: hwtest.Mode(*mode), ScratchDir: *scratch,
		Progress: func(n string) {
			if !*asJSON {
				fmt.Fprintf(stderr, "hwtest: %s…\n", n)
			}
		}})
	if *asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else {
		r.Table(stdout)
	}
	if !r.Passed {
		return 1
	}
	return 0
}
