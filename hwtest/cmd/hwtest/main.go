// Command hwtest runs keel's hardware self-test and prints its table (or
// JSON with -json); it exits 1 when a check fails. The agent runs the same
// library from the console menu, POST /api/v1/hwtest and keel.hwtest=1.
//
//	hwtest [-profile NAME | -profile-file FILE] [-mode quick|full] [-scratch DIR] [-json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"keel.dev/keel/hwtest"
)

func main() {
	name := flag.String("profile", "qemu-virtio", "shipped hardware profile: "+strings.Join(hwtest.ProfileNames(), ", "))
	file := flag.String("profile-file", "", "a hardware profile in JSON (see hwtest/profiles/template.json); overrides -profile")
	mode := flag.String("mode", "quick", "quick (about 2 minutes in a VM) or full")
	scratch := flag.String("scratch", "", "a folder on the data partition for the disk write-read test (empty: skipped)")
	asJSON := flag.Bool("json", false, "print the report as JSON")
	flag.Parse()
	if *mode != "quick" && *mode != "full" {
		fmt.Fprintln(os.Stderr, "hwtest: -mode is quick or full")
		os.Exit(2)
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
		fmt.Fprintln(os.Stderr, "hwtest:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	r := hwtest.Run(ctx, hwtest.Options{Profile: p, Mode: hwtest.Mode(*mode), ScratchDir: *scratch,
		Progress: func(n string) {
			if !*asJSON {
				fmt.Fprintf(os.Stderr, "hwtest: %s…\n", n)
			}
		}})
	if *asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Println(string(b))
	} else {
		r.Table(os.Stdout)
	}
	if !r.Passed {
		os.Exit(1)
	}
}
