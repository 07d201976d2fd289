package apps

import (
	"errors"
	"fmt"
)

// StateHeld is an application the box keeps stopped on purpose: the
// backup of a failover pair holds it while the primary runs it.
const StateHeld = "held"

// Hold stops the application and keeps it stopped, across Start too,
// until Release; reason is shown in the status. Its data volume stays
// mounted, so a failover sync can write into it.
func (m *Manager) Hold(reason string) error {
	if reason == "" {
		return errors.New("hold: a reason is required")
	}
	m.switching.Lock()
	defer m.switching.Unlock()
	m.mu.Lock()
	was := m.held
	m.held = reason
	m.mu.Unlock()
	if was == "" {
		m.log().Info("application held", "reason", reason)
	}
	m.stopCurrent()
	return nil
}

// Release ends a hold and starts the application again, if the runtime
// is started and one is installed.
func (m *Manager) Release() error {
	m.switching.Lock()
	defer m.switching.Unlock()
	m.mu.Lock()
	was := m.held
	m.held = ""
	started, stopped, running := m.ctx != nil, m.stopped, m.cur != nil
	m.mu.Unlock()
	if was == "" || !started || stopped || running {
		return nil
	}
	st := m.Slots.State()
	if st.Active == "" {
		return nil
	}
	m.log().Info("application released", "was", was)
	if _, err := m.launch(st.Active); err != nil {
		m.setFailure(err.Error())
		return fmt.Errorf("the application did not start: %w", err)
	}
	return nil
}

// Held says why the application is held, or "".
func (m *Manager) Held() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.held
}

// DataDir is the committed application's data folder, its volume
// mounted (whether the application runs or is held); "" when no
// application is installed.
func (m *Manager) DataDir() (string, error) {
	m.mu.Lock()
	r, started := m.cur, m.ctx != nil
	m.mu.Unlock()
	if r != nil {
		return r.dataDir, nil
	}
	if !started {
		if _, err := m.Slots.Load(); err != nil {
			return "", err
		}
	}
	st := m.Slots.State()
	slot := st.CommittedSlot()
	if slot == "" {
		return "", nil
	}
	if err := m.mount(slot); err != nil {
		return "", err
	}
	spec, err := readSpec(m.slotDir(slot))
	if err != nil {
		return "", err
	}
	dir, _, _, err := m.data(spec)
	return dir, err
}
