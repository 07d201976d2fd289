package apps

import (
	"path/filepath"
	"time"

	"keel.dev/keel/agent/appdata"
	"keel.dev/keel/agent/sandbox"
)

// DefaultNProc is RLIMIT_NPROC for the application's user.
const DefaultNProc = 512

// cgroupParent holds the applications' cgroups under the cgroup root.
const cgroupParent = "keel-apps"

// Confinement is what holds the application in, as the status shows it.
type Confinement struct {
	Root   string `json:"root,omitempty"`   // its root folder (see package sandbox)
	Cgroup string `json:"cgroup,omitempty"` // its cgroup v2 folder
	// Ports are the only ports it may bind (with its cgroup; 0, any free
	// port, too).
	Ports []int `json:"ports,omitempty"`
	// Data is the data folder's volume: its size and use.
	Data *appdata.Usage `json:"data,omitempty"`
	// Unenforced names the limits the kernel had no controller for, and
	// the data volume when it could not be made.
	Unenforced []string `json:"unenforced,omitempty"`
}

func (m *Manager) nproc() int {
	if m.NProc > 0 {
		return m.NProc
	}
	return DefaultNProc
}

// confine builds r's root and cgroup, once, when the Manager asks for
// them. A failure leaves the application unstarted (it is retried with
// the next start), never running unconfined.
func (r *runner) confine() error {
	if r.m.SandboxDir != "" && r.root == nil {
		root, err := sandbox.PrepareRoot(sandbox.RootConfig{Dir: filepath.Join(r.m.SandboxDir, r.spec.Name), Slot: r.slotDir, Data: r.dataDir})
		if err != nil {
			return err
		}
		r.root = root
	}
	if r.m.CgroupRoot != "" && r.cg == nil {
		cg, err := sandbox.NewCgroup(r.m.CgroupRoot, cgroupParent, r.spec.Name, r.m.Limits)
		if err != nil {
			return err
		}
		// It may bind only the ports its app.json declares.
		if err := cg.GuardBinds(r.spec.Ports); err != nil {
			cg.Remove()
			return err
		}
		fd, err := cg.FD()
		if err != nil {
			cg.Remove()
			return err
		}
		if len(cg.Missing) > 0 {
			r.log.Warn("the kernel has no controller for some application limits; they are not enforced", "limits", cg.Missing)
		}
		r.cg, r.cgFD = cg, fd
	}
	return nil
}

// release kills whatever is left in r's cgroup and takes its root and
// cgroup down.
func (r *runner) release() {
	if r.cg != nil {
		if err := r.cg.Remove(); err != nil {
			r.log.Error("the application's cgroup could not be emptied", "err", err)
		}
		r.cgFD.Close()
		r.cg, r.cgFD = nil, nil
	}
	if r.root != nil {
		if err := r.root.Close(); err != nil {
			r.log.Error("the application's root could not be taken down", "err", err)
		}
		r.root = nil
	}
}

// killAll ends every process the application left, those that left its
// process group too when it has a cgroup.
func (r *runner) killAll() {
	if r.cg != nil {
		if err := r.cg.Kill(5 * time.Second); err != nil {
			r.log.Error("processes of the application survived", "err", err)
		}
	}
}

func (r *runner) confinement() *Confinement {
	if r.root == nil && r.cg == nil && r.vol == nil && r.volUnenforced == "" {
		return nil
	}
	c := &Confinement{}
	if r.root != nil {
		c.Root = r.root.Dir
	}
	if r.cg != nil {
		c.Cgroup, c.Ports = r.cg.Dir, r.spec.Ports
		c.Unenforced = append(c.Unenforced, r.cg.Missing...)
	}
	if r.vol != nil {
		if u, err := r.vol.Usage(); err == nil {
			c.Data = &u
		}
	}
	if r.volUnenforced != "" {
		c.Unenforced = append(c.Unenforced, r.volUnenforced)
	}
	return c
}
