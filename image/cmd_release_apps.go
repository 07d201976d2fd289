package main

import "keel.dev/keel/image/appimage"

// buildDemoApp writes the demo application's slot image (a squashfs) at
// version to outSquashfs, for `image release`.
func buildDemoApp(outSquashfs, version string) error {
	return appimage.Demo(outSquashfs, version)
}
