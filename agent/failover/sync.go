package failover

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/install"
	"keel.dev/keel/agent/supervisor"
)

// syncCallTimeout bounds a sync's wait for an answer to begin: the
// primary hashes the files that changed since its last manifest first
// (about 30 MiB/s on a slow box).
const syncCallTimeout = 30 * time.Minute

// syncAsk is what the backup says of itself in every sync request: the
// primary serves only a backup, and only one whose epoch is not ahead of
// its own (which would make it the stale one).
type syncAsk struct {
	Role  Role   `json:"role"`
	Epoch uint64 `json:"epoch"`
}

// syncConfig is the primary's configuration as a sync takes it.
type syncConfig struct {
	Serial   string          `json:"serial"`
	Role     Role            `json:"role"`
	Epoch    uint64          `json:"epoch"`
	Versions Versions        `json:"versions"`
	Settings Settings        `json:"settings"`
	Shared   []SharedAddress `json:"shared"`
	Files    []syncFile      `json:"files"`
	Network  json.RawMessage `json:"network,omitempty"`
	// App says whether the primary has application data to sync.
	App bool `json:"app"`
}

type syncFile struct {
	Section string `json:"section"`
	Present bool   `json:"present"`
	Data    []byte `json:"data,omitempty"`
}

type syncManifest struct {
	Role      Role    `json:"role"`
	Epoch     uint64  `json:"epoch"`
	BlockSize int     `json:"block_size"`
	Entries   []entry `json:"entries"`
}

// blockWant asks for some blocks of one file.
type blockWant struct {
	Path   string `json:"p"`
	Blocks []int  `json:"b"`
}

// servingCheck refuses to serve a sync to anything but a backup that is
// behind or level with this primary: syncs flow one way only.
func (s *Service) servingCheck(w http.ResponseWriter, r *peerRequest) (State, bool) {
	var ask syncAsk
	st := s.State()
	if err := decodeBody(r, &ask); err != nil {
		api.WriteError(w, http.StatusBadRequest, "the sync request cannot be read: "+err.Error())
		return st, false
	}
	if st.Role != RolePrimary {
		api.WriteError(w, http.StatusConflict, fmt.Sprintf("%s is %s, not primary: it serves no sync", s.Serial, st.Role))
		return st, false
	}
	if ask.Role != RoleBackup || ask.Epoch > st.Epoch {
		api.WriteError(w, http.StatusConflict, fmt.Sprintf("%s asks for a sync as %s with epoch %d, but this primary's epoch is %d: a sync only flows from the primary to its backup", r.Serial, ask.Role, ask.Epoch, st.Epoch))
		return st, false
	}
	return st, true
}

func (s *Service) serveConfig(w http.ResponseWriter, r *peerRequest) {
	st, ok := s.servingCheck(w, r)
	if !ok {
		return
	}
	c := syncConfig{Serial: s.Serial, Role: st.Role, Epoch: st.Epoch, Versions: s.Versions(), Settings: st.Settings, Shared: st.Shared}
	for _, sec := range s.Sections {
		b, err := os.ReadFile(sec.Path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			c.Files = append(c.Files, syncFile{Section: sec.Name})
		case err != nil:
			api.WriteError(w, http.StatusInternalServerError, fmt.Sprintf("the primary cannot read its %s: %v", sec.Name, err))
			return
		default:
			c.Files = append(c.Files, syncFile{Section: sec.Name, Present: true, Data: b})
		}
	}
	if s.Network != nil {
		n, err := s.Network.Synced()
		if err != nil {
			api.WriteError(w, http.StatusInternalServerError, "the primary cannot read its network settings: "+err.Error())
			return
		}
		c.Network = n
	}
	if s.App != nil {
		dir, err := s.App.DataDir()
		c.App = err == nil && dir != ""
	}
	api.WriteJSON(w, http.StatusOK, c)
}

func (s *Service) serveManifest(w http.ResponseWriter, r *peerRequest) {
	st, ok := s.servingCheck(w, r)
	if !ok {
		return
	}
	dir, err := s.appData()
	if err != nil || dir == "" {
		api.WriteError(w, http.StatusConflict, "the primary has no application data folder: "+fmt.Sprint(err))
		return
	}
	entries, err := s.hashes.manifest(dir)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	for i := range entries {
		entries[i] = entries[i].summary()
	}
	api.WriteJSON(w, http.StatusOK, syncManifest{Role: st.Role, Epoch: st.Epoch, BlockSize: blockSize, Entries: entries})
}

// fileHashes are a file's block hashes, as sync/hashes answers them.
type fileHashes struct {
	Path   string `json:"p"`
	Size   int64  `json:"s"`
	Hashes []byte `json:"h"`
}

// serveHashes answers the block hashes of the files asked for (those
// whose Sum differs on the backup); a file gone since answers none.
func (s *Service) serveHashes(w http.ResponseWriter, r *peerRequest) {
	if st := s.State(); st.Role != RolePrimary {
		api.WriteError(w, http.StatusConflict, fmt.Sprintf("%s is %s, not primary: it serves no sync", s.Serial, st.Role))
		return
	}
	var paths []string
	if err := decodeBody(r, &paths); err != nil {
		api.WriteError(w, http.StatusBadRequest, "the request cannot be read: "+err.Error())
		return
	}
	dir, err := s.appData()
	if err != nil || dir == "" {
		api.WriteError(w, http.StatusConflict, "the primary has no application data folder")
		return
	}
	out := make([]fileHashes, 0, len(paths))
	for _, rel := range paths {
		p, ok := inside(dir, rel)
		if !ok {
			continue
		}
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			out = append(out, fileHashes{Path: rel})
			continue
		}
		h, err := s.hashes.hashes(p, fi, statOf(fi))
		if err != nil {
			out = append(out, fileHashes{Path: rel})
			continue
		}
		out = append(out, fileHashes{Path: rel, Size: fi.Size(), Hashes: h})
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// serveBlocks streams the blocks asked for, each as a 4-byte length and
// its bytes; a file that is gone or shorter answers what it has (the
// backup finds the hash wrong and keeps its version until the next sync).
func (s *Service) serveBlocks(w http.ResponseWriter, r *peerRequest) {
	if st := s.State(); st.Role != RolePrimary {
		api.WriteError(w, http.StatusConflict, fmt.Sprintf("%s is %s, not primary: it serves no sync", s.Serial, st.Role))
		return
	}
	var want []blockWant
	if err := decodeBody(r, &want); err != nil {
		api.WriteError(w, http.StatusBadRequest, "the block request cannot be read: "+err.Error())
		return
	}
	dir, err := s.appData()
	if err != nil || dir == "" {
		api.WriteError(w, http.StatusConflict, "the primary has no application data folder")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	buf := make([]byte, blockSize)
	var hdr [4]byte
	for _, wt := range want {
		p, ok := inside(dir, wt.Path)
		var f *os.File
		if ok {
			f, _ = os.Open(p)
		}
		for _, b := range wt.Blocks {
			n := 0
			if f != nil && b >= 0 {
				n, _ = f.ReadAt(buf, int64(b)*blockSize)
			}
			binary.BigEndian.PutUint32(hdr[:], uint32(n))
			if _, err := w.Write(hdr[:]); err != nil {
				break
			}
			if _, err := w.Write(buf[:n]); err != nil {
				break
			}
		}
		if f != nil {
			f.Close()
		}
	}
}

// inside joins a manifest path to dir, refusing one that leaves it.
func inside(dir, rel string) (string, bool) {
	if rel == "" || strings.HasPrefix(rel, "/") || filepath.IsAbs(rel) {
		return "", false
	}
	for _, part := range strings.Split(rel, "/") {
		if part == ".." || part == "" || part == "." {
			return "", false
		}
	}
	if rel == syncDir || strings.HasPrefix(rel, syncDir+"/") {
		return "", false
	}
	return filepath.Join(dir, filepath.FromSlash(rel)), true
}

func (s *Service) appData() (string, error) {
	if s.App == nil {
		return "", nil
	}
	dir, err := s.App.DataDir()
	if err == nil {
		s.mu.Lock()
		s.lastAppDir = dir
		s.mu.Unlock()
	}
	return dir, err
}

// counter counts the bytes a sync moved.
type counter struct {
	r io.Reader
	n *int64
}

func (c counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// SyncNow starts a sync as a job (the backup's Sync Now).
func (s *Service) SyncNow() (*install.Job, error) {
	st := s.State()
	if st.Role != RoleBackup {
		return nil, &refusal{http.StatusConflict, fmt.Sprintf("this appliance is %s: Sync Now runs on the backup, which pulls from its primary", describeRole(st))}
	}
	job := s.Jobs.Begin("sync", "pulling the configuration and the application data from "+st.Peer.Serial)
	supervisor.Go(s.log(), "sync now", func() {
		rep, err := s.pull(context.Background(), job)
		msg := rep.Result
		job.End(err, msg)
	})
	return job, nil
}

// pullScheduled is the schedule's sync: none if another sync ran while
// it waited for its turn (the schedule starts again from that one).
func (s *Service) pullScheduled(ctx context.Context) {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	due := !s.now().Before(s.nextSync)
	s.mu.Unlock()
	if due {
		s.pullLocked(ctx, nil)
	}
}

// pull is one sync: the backup takes the primary's configuration and
// application data, stages them, and applies them all at once. The next
// scheduled one follows it by the sync interval (sooner after a failure).
func (s *Service) pull(ctx context.Context, job *install.Job) (SyncReport, error) {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	return s.pullLocked(ctx, job)
}

func (s *Service) pullLocked(ctx context.Context, job *install.Job) (rep SyncReport, err error) {
	defer func() {
		next := s.State().Settings.SyncInterval.D()
		if err != nil && !errors.Is(err, context.Canceled) {
			next = min(next, 30*time.Second)
		}
		s.mu.Lock()
		s.nextSync = s.now().Add(next)
		s.mu.Unlock()
	}()
	s.mu.Lock()
	s.syncing = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.syncing = false
		s.mu.Unlock()
	}()
	start := s.now()
	st := s.State()
	rep = SyncReport{At: start.UTC(), Epoch: st.Epoch}
	if st.Peer != nil {
		rep.From = st.Peer.Serial
	}
	err = s.pullOnce(ctx, st, &rep, job)
	rep.DurationS = s.now().Sub(start).Seconds()
	if err != nil {
		rep.OK, rep.Result = false, "the sync failed: "+err.Error()
	} else {
		rep.OK = true
	}
	if uerr := s.update(func(cur *State) {
		r := rep
		cur.LastSync = &r
		if rep.OK {
			cur.LastOK = &r
		}
	}); uerr != nil {
		s.log().Error("the sync's report was not saved", "err", uerr)
	}
	level := s.log().Info
	if err != nil {
		level = s.log().Warn
	}
	level("failover sync", "from", rep.From, "ok", rep.OK, "bytes", rep.Bytes, "files", rep.Files, "took", time.Duration(rep.DurationS*float64(time.Second)).Round(time.Millisecond), "result", rep.Result)
	if err != nil && isNotRelated(err) {
		s.log().Warn("the primary is no longer in the relationship; breaking it here too")
		s.breakLocal("the primary said it is no longer in a relationship with this appliance")
	}
	return rep, err
}

func isNotRelated(err error) bool {
	var pr *peerRefusal
	return errors.As(err, &pr) && pr.Code == http.StatusConflict && strings.Contains(pr.Sentence, "is not in a failover relationship with")
}

func (s *Service) peerAddr(st State) string {
	return netJoin(st.Peer.Address, st.Peer.Port)
}

func netJoin(host string, port int) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}

func (s *Service) pullOnce(ctx context.Context, st State, rep *SyncReport, job *install.Job) error {
	if st.Role != RoleBackup || st.Peer == nil {
		return fmt.Errorf("this appliance is %s; only a backup pulls a sync", describeRole(st))
	}
	say := func(p float64, msg string) {
		if job != nil {
			job.Progress(p)
			job.Say(msg)
		}
	}
	ask := syncAsk{Role: st.Role, Epoch: st.Epoch}
	call := func(path string, body any) (*peerAnswer, error) {
		b, _ := json.Marshal(body)
		rep.Bytes += int64(len(b))
		return s.call(ctx, peerCall{Addr: s.peerAddr(st), Pin: st.Peer.CertSHA256, Method: "POST", Path: peerPrefix + path, Body: body, Timeout: syncCallTimeout})
	}
	say(0.05, "asking "+st.Peer.Serial+" for its configuration")
	a, err := call("sync/config", ask)
	if err != nil {
		return err
	}
	var cfg syncConfig
	a.count(&rep.Bytes)
	if err := a.decode(&cfg); err != nil {
		return err
	}
	if cfg.Role != RolePrimary || cfg.Epoch < st.Epoch {
		return fmt.Errorf("%s is %s with epoch %d, behind this appliance's %d: a sync flows only from the primary", cfg.Serial, cfg.Role, cfg.Epoch, st.Epoch)
	}
	if mine := s.Versions(); mine != cfg.Versions {
		return fmt.Errorf("the primary runs %s, this appliance %s: a pair must run the same versions; break the relationship, upgrade, and establish it again", cfg.Versions, mine)
	}
	j := &journal{Created: s.now().UTC(), From: cfg.Serial, Epoch: cfg.Epoch, Snapshot: st.Diverged, Network: cfg.Network}
	if cfg.Settings != st.Settings {
		set := cfg.Settings
		j.Settings = &set
	}
	if !sameShared(cfg.Shared, st.Shared) {
		j.Shared = cfg.Shared
		if j.Shared == nil {
			j.Shared = []SharedAddress{}
		}
	}
	os.RemoveAll(s.stageDir())
	if err := s.stageConfig(cfg, j); err != nil {
		s.cleanStage(j.AppDir)
		return err
	}
	if cfg.App {
		say(0.15, "comparing the application data with "+st.Peer.Serial+"'s")
		if err := s.stageApp(st, call, j, rep, say); err != nil {
			// Nothing was committed: what was staged goes, the box
			// keeps the last sync's state.
			s.cleanStage(j.AppDir)
			return err
		}
	}
	say(0.95, "applying the sync")
	// A takeover during the sync makes this box primary: what it pulled
	// from the old primary must not go over what it now serves.
	s.roleMu.Lock()
	if cur := s.State(); cur.Role != RoleBackup || cur.Epoch != st.Epoch {
		s.roleMu.Unlock()
		s.cleanStage(j.AppDir)
		return fmt.Errorf("this appliance became %s during the sync; what it pulled is dropped", cur.Role)
	}
	if err := s.commit(j); err != nil {
		s.roleMu.Unlock()
		return fmt.Errorf("the sync was not committed: %w", err)
	}
	if s.crashAfterCommit {
		s.roleMu.Unlock()
		return errors.New("test: the power went after the commit")
	}
	err = s.apply(j)
	s.roleMu.Unlock()
	if err != nil {
		return fmt.Errorf("the sync was committed but not all of it applied (%w); the next boot or sync finishes it", err)
	}
	for _, f := range j.Files {
		s.hashes.remember(j.path(f.Entry.Path), f.Entry.Hashes)
	}
	for _, p := range j.Patches {
		s.hashes.remember(j.path(p.Entry.Path), p.Entry.Hashes)
	}
	for _, mv := range j.Moves {
		s.hashes.remember(j.path(mv.Entry.Path), mv.Entry.Hashes)
	}
	if j.Snapshot != "" {
		s.update(func(cur *State) { cur.Diverged = "" })
	}
	changed := len(j.Config) + len(j.Files) + len(j.Patches) + len(j.Moves) + len(j.Remove) + len(j.Links) + j.newDirs
	rep.Files = len(j.Files) + len(j.Patches) + len(j.Moves)
	rep.Result = fmt.Sprintf("pulled from %s: %d changes, %s on the wire", cfg.Serial, changed, humanBytes(rep.Bytes))
	if rep.DataBytes > 0 {
		rep.Result += fmt.Sprintf(" (%s of application data)", humanBytes(rep.DataBytes))
	}
	if j.Snapshot != "" {
		rep.Result += "; what this appliance had that differed is kept in snapshot " + j.Snapshot
	}
	return nil
}

func sameShared(a, b []SharedAddress) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// stageConfig stages each section that differs from this box's.
func (s *Service) stageConfig(cfg syncConfig, j *journal) error {
	dir := filepath.Join(s.stageDir(), "config")
	for _, f := range cfg.Files {
		sec := s.section(f.Section)
		if sec == nil {
			continue // a section this version does not sync
		}
		cur, err := os.ReadFile(sec.Path)
		have := err == nil
		if have == f.Present && bytes.Equal(cur, f.Data) {
			continue
		}
		c := configChange{Section: sec.Name, Path: sec.Path}
		if f.Present {
			c.Staged = filepath.Join(dir, strings.ReplaceAll(sec.Name, "/", "_"))
			if err := writeSynced(c.Staged, f.Data, 0o600); err != nil {
				return fmt.Errorf("stage %s: %w", sec.Name, err)
			}
		}
		j.Config = append(j.Config, c)
	}
	return nil
}

func writeSynced(p string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func humanBytes(n int64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 10<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// refusal is an operator's request refused, with its HTTP status.
type refusal struct {
	code     int
	sentence string
}

func (r *refusal) Error() string { return r.sentence }

func describeRole(st State) string {
	switch st.Role {
	case RolePrimary:
		return "the primary of " + st.Peer.Serial
	case RoleBackup:
		return "the backup of " + st.Peer.Serial
	}
	return "not in a failover relationship"
}
