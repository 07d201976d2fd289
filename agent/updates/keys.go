package updates

import (
	"crypto/ed25519"
	"fmt"

	"keel.dev/keel/image/downloadkey"
)

// DownloadKey issues a download key: the appliance's serial, its installed
// versions and an expiry, signed with its identity key, for an operator to
// redeem on a machine that reaches the vendor. A box whose clock is not
// synchronized issues none: the expiry would be meaningless.
func (m *Manager) DownloadKey() ([]byte, error) {
	if m.Synced == nil || !m.Synced() {
		return nil, fmt.Errorf("%w: a download key carries an expiry, so it needs the right time; check the NTP settings (GET /api/v1/time) and try again once the clock is synchronized", ErrClock)
	}
	if len(m.Identity) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("this appliance has no identity key (the data partition is not mounted?)")
	}
	box := m.Box()
	now := m.now()
	return downloadkey.Issue(downloadkey.Body{
		Serial: box.Serial, Hardware: box.Hardware, Channel: box.Channel,
		Installed: box.Installed, Names: box.Names,
		Issued: now, Expires: now.Add(downloadkey.DefaultLifetime),
	}, m.Identity)
}

// IdentityKey is the public half of the key download keys are signed
// with, as the update server's appliances.json holds it.
func (m *Manager) IdentityKey() (string, error) {
	if len(m.Identity) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("this appliance has no identity key (the data partition is not mounted?)")
	}
	return downloadkey.EncodePublicKey(m.Identity.Public().(ed25519.PublicKey))
}
