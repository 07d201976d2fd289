// Command hwtest runs keel's hardware self-test and prints its table (or
// JSON with -json); it exits 1 when a check fails. The agent runs the same
// library from the console menu, POST /api/v1/hwtest and keel.hwtest=1, and
// is /bin/hwtest on the box itself.
//
//	hwtest [-profile NAME | -profile-file FILE] [-mode quick|full] [-scratch DIR] [-json]
package main

import (
	"os"

	"keel.dev/keel/hwtest/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
