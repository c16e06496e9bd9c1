package replicate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/deltasync/deltasync/transfer"
)

// GroupFreezer freezes the sources of a group together: the views it
// returns (one per member, in order) hold the disks as they were at one
// moment, so that the group's recovery point is crash-consistent across
// disks (a multi-disk VM restarts from it as from a power cut).
type GroupFreezer interface {
	FreezeGroup(ctx context.Context) ([]View, error)
}

// FreezeTogether returns a GroupFreezer that pauses the writers of every
// disk (pause: the VM is paused, the filesystems frozen with fsfreeze, the
// application's writes held), freezes each source in turn, and resumes
// the writers. Separate snapshots taken while writes go on are not one
// moment: pause is what makes them one. A nil pause is for sources
// already still. If a freeze fails, the views already frozen are released.
func FreezeTogether(pause func(ctx context.Context) (resume func(), err error), fs ...Freezer) GroupFreezer {
	return groupFreezer{pause: pause, fs: fs}
}

type groupFreezer struct {
	pause func(context.Context) (func(), error)
	fs    []Freezer
}

func (g groupFreezer) FreezeGroup(ctx context.Context) ([]View, error) {
	if g.pause != nil {
		resume, err := g.pause(ctx)
		if err != nil {
			return nil, fmt.Errorf("replicate: pausing the group's writers: %w", err)
		}
		defer resume()
	}
	vs := make([]View, 0, len(g.fs))
	for i, f := range g.fs {
		v, err := f.Freeze(ctx)
		if err != nil {
			for _, v := range vs {
				v.Release(context.WithoutCancel(ctx))
			}
			return nil, fmt.Errorf("replicate: freezing member %d: %w", i, err)
		}
		vs = append(vs, v)
	}
	return vs, nil
}

// Member is one disk of a group.
type Member struct {
	// Name names the disk in the manifest; unique in the group.
	Name   string
	Target Target
	// Dirty is the source's dirty-range feed, if any.
	Dirty *DirtyMap
}

// GroupConfig configures a Group.
type GroupConfig struct {
	// Name names the group in manifests. Default "group".
	Name    string
	Members []Member
	// Freezer freezes every member's source at one moment.
	Freezer GroupFreezer
	// Policy applies to group recovery points (manifests): a member's
	// point is deleted once no kept manifest names it.
	Policy  Policy
	Quotas  []Quota
	Reserve int
	// Manifests stores the group recovery points (required).
	Manifests ManifestStore
	// Transfer is the base of each member's transfer options (see
	// Config.Transfer).
	Transfer *transfer.Options
	// StateDir, when set, keeps each member's state in
	// StateDir/NAME.state (see Config.StateFile).
	StateDir string
	// Concurrency is how many members are synced at once. Default 2.
	Concurrency int
	// SignatureDir, when set, keeps the signatures of each member's
	// points in SignatureDir/MEMBER (see Config.SignatureDir).
	SignatureDir string
	// OnCycle, when set, is called at the end of every group cycle,
	// successful or not, with its report and error (see Config.OnCycle).
	OnCycle func(GroupReport, error)
}

// Group replicates several disks together: each cycle freezes all
// sources at one moment, syncs each member, cuts a recovery point of each
// target, and stores a manifest naming them (the group recovery point).
// A cycle in which any member fails stores no manifest; the members that
// succeeded keep their points until retention finds no manifest naming
// them. Methods are safe for concurrent use.
type Group struct {
	cfg   GroupConfig
	disks []*member
	sem   chan struct{}
	sched schedule

	mu        sync.Mutex
	manifests []Manifest
	lastErr   error
}

// NewGroup returns a Group for cfg.
func NewGroup(cfg GroupConfig) (*Group, error) {
	if cfg.Freezer == nil || cfg.Manifests == nil || len(cfg.Members) == 0 {
		return nil, errors.New("replicate: a group needs members, a Freezer and a ManifestStore")
	}
	if cfg.Name == "" {
		cfg.Name = "group"
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 2
	}
	if err := cfg.Policy.Validate(cfg.Reserve, cfg.Quotas...); err != nil {
		return nil, err
	}
	g := &Group{cfg: cfg, sem: make(chan struct{}, 1)}
	seen := map[string]bool{}
	for _, m := range cfg.Members {
		if m.Name == "" || seen[m.Name] || strings.ContainsAny(m.Name, `/\`) {
			return nil, fmt.Errorf("replicate: member name %q is empty, repeated or has a slash", m.Name)
		}
		seen[m.Name] = true
		sf := ""
		if cfg.StateDir != "" {
			sf = filepath.Join(cfg.StateDir, m.Name+".state")
		}
		d, err := newDisk(m.Name, nil, m.Target, m.Dirty, cfg.Policy, cfg.Transfer, sf)
		if err != nil {
			return nil, err
		}
		if cfg.SignatureDir != "" {
			d.sigDir = filepath.Join(cfg.SignatureDir, m.Name)
		}
		g.disks = append(g.disks, d)
	}
	g.sched = schedule{interval: g.disks[0].policy.Interval}
	// The group points an earlier process kept, for the status until the
	// first retention.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ms, err := cfg.Manifests.List(ctx); err == nil {
		for _, m := range ms {
			if m.Group == cfg.Name {
				g.manifests = append(g.manifests, m)
			}
		}
		slices.SortFunc(g.manifests, func(a, b Manifest) int { return a.Time.Compare(b.Time) })
	}
	return g, nil
}

// GroupReport describes one group cycle.
type GroupReport struct {
	Manifest Manifest
	Disks    []CycleReport
	// Deleted are the manifests the retention policy deleted.
	Deleted []Manifest
	Freeze  time.Duration
	Elapsed time.Duration
	Warning error
}

// Cycle runs one group cycle.
func (g *Group) Cycle(ctx context.Context) (rep GroupReport, err error) {
	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return GroupReport{}, ctx.Err()
	}
	defer func() { <-g.sem }()
	if g.cfg.OnCycle != nil {
		defer func() { g.cfg.OnCycle(rep, err) }()
	}
	start := time.Now()
	var oerrs []error
	for _, d := range g.disks { // orphans of unrecorded cuts (see OwnedPoints)
		if _, err := d.reconcile(ctx); err != nil {
			oerrs = append(oerrs, err)
		}
	}
	tks := make([]taken, len(g.disks))
	for i, d := range g.disks {
		d.setRunning(true)
		defer d.setRunning(false)
		tks[i] = d.take()
	}
	vs, err := g.cfg.Freezer.FreezeGroup(ctx)
	frozen := time.Now()
	rep = GroupReport{Freeze: frozen.Sub(start), Warning: errors.Join(oerrs...)}
	if err == nil && len(vs) != len(g.disks) {
		for _, v := range vs {
			v.Release(context.WithoutCancel(ctx))
		}
		err = fmt.Errorf("replicate: group freezer returned %d views for %d members", len(vs), len(g.disks))
	}
	if err != nil {
		for _, d := range g.disks {
			d.failFreeze(err)
		}
		g.setErr(err)
		return rep, err
	}
	rep.Disks = make([]CycleReport, len(g.disks))
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(g.cfg.Concurrency)
	for i, d := range g.disks {
		eg.Go(func() error {
			r, err := d.cycle(ectx, vs[i], tks[i], frozen)
			r.Freeze = rep.Freeze
			rep.Disks[i] = r
			if err == nil {
				d.record(r)
			}
			return err
		})
	}
	if err := eg.Wait(); err != nil {
		g.setErr(err)
		rep.Elapsed = time.Since(start)
		return rep, err
	}
	m := Manifest{Group: g.cfg.Name, Frozen: frozen.UTC()}
	for i, r := range rep.Disks {
		m.Disks = append(m.Disks, ManifestDisk{Name: g.disks[i].name, View: r.View, ViewTime: r.ViewTime, Point: r.Point.ID, PointTime: r.Point.Time, Size: r.Point.Size})
		if r.Point.Time.After(m.Time) {
			m.Time = r.Point.Time
		}
	}
	m.ID = m.Time.UTC().Format(pointLayout)
	if err := g.cfg.Manifests.Put(ctx, m); err != nil {
		err = fmt.Errorf("replicate: storing the group recovery point: %w", err)
		g.setErr(err)
		return rep, err
	}
	rep.Manifest = m
	g.setErr(nil) // a successful group cycle: the status shows no stale error
	var rerr error
	rep.Deleted, rerr = g.retain(ctx)
	rep.Warning = errors.Join(rep.Warning, rerr)
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// retain applies the policy to the manifests, then deletes every member
// point made by this group that no kept manifest names (older ones
// only: a point newer than the newest manifest belongs to a cycle in
// progress or failed, and is kept until a later retention).
func (g *Group) retain(ctx context.Context) ([]Manifest, error) {
	ms, err := g.cfg.Manifests.List(ctx)
	if err != nil {
		return nil, err
	}
	var pts []Point
	byID := map[string]Manifest{}
	for _, m := range ms {
		if m.Group != g.cfg.Name {
			continue
		}
		pts = append(pts, Point{ID: m.ID, Time: m.Time})
		byID[m.ID] = m
	}
	keep, drop := g.cfg.Policy.Retain(pts)
	var errs []error
	var deleted []Manifest
	for _, p := range drop {
		if err := g.cfg.Manifests.Delete(ctx, p.ID); err != nil && !isNotFound(err) {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, byID[p.ID])
	}
	named := map[string]bool{}
	for _, p := range keep {
		for _, d := range byID[p.ID].Disks {
			named[d.Name+"\x00"+d.Point] = true
		}
	}
	for _, d := range g.disks {
		var unused []Point
		for _, p := range d.points() {
			if !named[d.name+"\x00"+p.ID] && len(keep) > 0 && !p.Time.After(keep[len(keep)-1].Time) {
				unused = append(unused, p)
			}
		}
		if _, err := d.deletePoints(ctx, unused); err != nil {
			errs = append(errs, err)
		}
	}
	g.mu.Lock()
	g.manifests = nil
	for _, p := range keep {
		g.manifests = append(g.manifests, byID[p.ID])
	}
	g.mu.Unlock()
	return deleted, errors.Join(errs...)
}

func (g *Group) setErr(err error) {
	g.mu.Lock()
	g.lastErr = err
	g.mu.Unlock()
}

// Run runs group cycles every Policy.Interval until ctx is done (see
// Replicator.Run).
func (g *Group) Run(ctx context.Context) error {
	return g.sched.run(ctx, func(ctx context.Context) { g.Cycle(ctx) }, func(n int) {
		for _, d := range g.disks {
			d.addSkipped(n)
		}
	}, func(t time.Time) {
		for _, d := range g.disks {
			d.setNext(t)
		}
	})
}

// GroupStatus is the status of a group: each member's, the group
// recovery points kept, and the last error of a group cycle.
type GroupStatus struct {
	Disks     []Status
	Manifests []Manifest
	LastError error
}

// Status returns the group's status; safe to call at any time.
func (g *Group) Status() GroupStatus {
	var s GroupStatus
	for _, d := range g.disks {
		s.Disks = append(s.Disks, d.status())
	}
	g.mu.Lock()
	s.Manifests = slices.Clone(g.manifests)
	s.LastError = g.lastErr
	g.mu.Unlock()
	return s
}

// Close saves every member's state (see Replicator.Close).
func (g *Group) Close(ctx context.Context) error {
	var errs []error
	for _, d := range g.disks {
		errs = append(errs, d.close(ctx))
	}
	return errors.Join(errs...)
}

// Manifest is a group recovery point: for each disk, the target snapshot
// made from source views frozen together at one moment.
type Manifest struct {
	// ID is Time in a fixed-width UTC form; it names the manifest.
	ID    string `json:"id"`
	Group string `json:"group"`
	// Time is the newest of the members' point times (the targets'
	// clock): the manifest's age for retention.
	Time time.Time `json:"time"`
	// Frozen is when the views were frozen, on this machine's clock.
	Frozen time.Time      `json:"frozen"`
	Disks  []ManifestDisk `json:"disks"`
}

// ManifestDisk is one disk of a Manifest.
type ManifestDisk struct {
	Name      string    `json:"name"`
	View      string    `json:"view"`
	ViewTime  time.Time `json:"viewTime,omitzero"`
	Point     string    `json:"point"`
	PointTime time.Time `json:"pointTime"`
	Size      int64     `json:"size"`
}

// ManifestStore keeps group recovery points. Methods may be called
// concurrently.
type ManifestStore interface {
	Put(ctx context.Context, m Manifest) error
	// List returns every manifest, oldest first. A manifest that fails
	// its checksum is an error wrapping ErrCorrupt.
	List(ctx context.Context) ([]Manifest, error)
	Get(ctx context.Context, id string) (Manifest, error)
	// Delete deletes a manifest; a missing one is fs.ErrNotExist.
	Delete(ctx context.Context, id string) error
}

// DirManifests is a ManifestStore in a directory: one file per manifest,
// ID.manifest.json (use one directory per group), checksummed (SHA-256) and written atomically.
type DirManifests struct {
	Dir string
}

var _ ManifestStore = DirManifests{}

func (s DirManifests) path(id string) string { return filepath.Join(s.Dir, id+".manifest.json") }

// Put stores m.
func (s DirManifests) Put(ctx context.Context, m Manifest) error {
	if m.ID == "" || strings.ContainsAny(m.ID, `/\`) {
		return fmt.Errorf("replicate: manifest id %q", m.ID)
	}
	b, err := sealJSON("deltasync-group-manifest", &m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	return writeFileAtomic(s.path(m.ID), b)
}

// Get reads one manifest.
func (s DirManifests) Get(ctx context.Context, id string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(s.path(id))
	if err != nil {
		return m, err
	}
	if err := openJSON("deltasync-group-manifest", b, &m); err != nil {
		return m, fmt.Errorf("replicate: manifest %s: %w", id, err)
	}
	return m, nil
}

// List reads every manifest, oldest first.
func (s DirManifests) List(ctx context.Context) ([]Manifest, error) {
	ents, err := os.ReadDir(s.Dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Manifest
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".manifest.json")
		if !ok || strings.HasPrefix(id, ".") {
			continue
		}
		m, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Manifest) int { return a.Time.Compare(b.Time) })
	return out, nil
}

// Delete removes a manifest.
func (s DirManifests) Delete(ctx context.Context, id string) error {
	return os.Remove(s.path(id))
}
