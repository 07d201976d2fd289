package install

import (
	"context"
	"fmt"

	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/layout"
)

// startApp installs a verified and checked app package: it streams the
// payload into the application slot not in use, reads it back, and hands
// the slot to SwitchApp, which runs the new version and commits it after
// its health check or goes back to the previous one. No reboot is needed;
// the boot state is not touched.
func (in *Installer) startApp(ctx context.Context, p *kpkg.Package) (*Job, error) {
	m := &p.Manifest
	active := ""
	if in.AppSlot != nil {
		active = in.AppSlot()
	}
	target := "a"
	keeps := "no application was running"
	if active != "" {
		target = layout.Other(active)
		keeps = "the application keeps running from application slot " + active
	}
	slot := "application slot " + target
	dev, size, err := in.OpenAppSlot(target)
	if err != nil {
		return nil, fail(ErrSystem, "%s cannot be opened, so nothing was written: %v", slot, err)
	}
	if m.Payload.Size > size {
		dev.Close()
		return nil, fail(ErrIncompatible, "the payload of %s %s is %d bytes, but %s holds only %d; nothing was written",
			m.Name, m.Version, m.Payload.Size, slot, size)
	}

	j := newJob(m.Version.String(), target)
	j.pkg = kpkg.KindApp
	in.jobs().add(j)
	in.current.Store(j)
	defer in.current.Store(nil)
	log := in.log().With("job", j.ID(), "app", m.Name, "version", m.Version.String(), "slot", target)
	log.Info("app install accepted", "key", p.KeyID, "bytes", m.Payload.Size)

	// The write and the read-back take 90% of the progress; starting the
	// application and its health check the rest.
	size = m.Payload.Size
	err = stream(ctx, p, dev, slot, j, 2*size+size/5, log)
	// The slot is mounted next, which an open (exclusive) device forbids.
	cerr := dev.Close()
	if err != nil {
		err = fmt.Errorf("%w; %s", err, keeps)
		log.Error("app install failed", "err", err)
		j.finish(Failed, err.Error())
		return j, err
	}
	if cerr != nil {
		err := fail(ErrSystem, "closing %s failed: %v; %s", slot, cerr, keeps)
		j.finish(Failed, err.Error())
		return j, err
	}
	j.setMessage(fmt.Sprintf("starting app %s %s from %s and checking its health", m.Name, m.Version, slot))
	// Once the slot is written the switch runs to its end (commit or
	// rollback, bounded by the health check's timeout) even if the client
	// goes away.
	if err := in.SwitchApp(context.WithoutCancel(ctx), target, m.Version.String()); err != nil {
		log.Error("app install rolled back", "err", err)
		j.finish(Failed, err.Error())
		return j, &failure{kind: ErrAppFailed, msg: err.Error()}
	}
	msg := fmt.Sprintf("app %s %s is running", m.Name, m.Version)
	j.finish(Done, msg)
	log.Info(msg)
	return j, nil
}
