package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/image/layout"
	"keel.dev/keel/qemu"
)

// resetData is the data partition of the reset figure's image.
const resetData = 4 << 30

// resetFigures measures a secure factory reset (issue 14) of a 4 GiB data
// partition, from the agent's own report (the wipe and its read-back),
// against u-root's dd writing zeros over the same number of bytes of the
// same partition, in the same QEMU setup.
func (b *bench) resetFigures() error {
	sizes := layout.DefaultSizes
	sizes.Data = resetData
	img := filepath.Join(b.work, "reset.img")
	say("building the reset bench image (4 GiB data partition)")
	if err := b.buildImage(img, diskimage.Options{Size: layout.MinDiskSize(sizes), Sizes: sizes, GrubTimeout: 2}); err != nil {
		return fmt.Errorf("reset image: %w", err)
	}
	vm, err := b.start(qemu.Config{Image: img, WorkDir: filepath.Join(b.work, "reset-vm")})
	if err != nil {
		return err
	}
	defer vm.Close()
	if _, err := vm.Expect(`keel: ready[^\r\n]*`, benchTimeout); err != nil {
		return err
	}
	box := newBox(vm)
	code, body, err := box.do("GET", "/api/v1/status", nil, time.Minute)
	var st api.Status
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &st) != nil {
		return fmt.Errorf("status: %d %s %v", code, body, err)
	}
	req := fmt.Sprintf(`{"mode":"secure","then":"poweroff","confirm":%q}`, st.Serial)
	if code, body, err := box.do("POST", "/api/v1/factory-reset", strings.NewReader(req), time.Minute); err != nil || code != http.StatusAccepted {
		return fmt.Errorf("factory reset: %d %s %v", code, body, err)
	}
	m, err := vm.Expect(`factory reset \(secure\) finished \S+: ([^,]+), NIST SP 800-88 Clear, ([0-9]+) bytes, ([0-9]+) random blocks read back as zeros, in ([0-9.]+) s`, 20*time.Minute)
	if err != nil {
		return err
	}
	vm.Wait(2 * time.Minute)
	bytes, _ := strconv.ParseInt(m[2], 10, 64)
	took, _ := strconv.ParseFloat(m[4], 64)
	say("reset: %s, %d bytes, %s blocks verified, %.1f s", m[1], bytes, m[3], took)

	ddInitrd, err := b.ddInitramfs()
	if err != nil {
		return fmt.Errorf("dd initramfs: %w", err)
	}
	dd, err := b.ddFloor(img, ddInitrd, layout.Data, bytes>>20)
	if err != nil {
		return fmt.Errorf("dd floor: %w", err)
	}
	row("reset: secure, 4 GiB data partition (s)", took, dd, "(baseline: dd if=/dev/zero over it)")
	return nil
}
