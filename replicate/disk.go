package replicate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/transfer"
)

// diskState is what a replicator remembers of one disk pair between
// cycles (and, with a state file, between processes).
type diskState struct {
	// Base is the ID of the view the last successful cycle synced from:
	// the base of the next cycle's hints. "" before the first.
	Base     string    `json:"base,omitempty"`
	BaseSize int64     `json:"baseSize"`
	BaseTime time.Time `json:"baseTime,omitzero"`
	// Cycles counts successful cycles; SinceFull those since the last
	// one that compared everything.
	Cycles    int `json:"cycles"`
	SinceFull int `json:"sinceFull"`
	// MapEpoch and MapGen are the dirty map's, when the last cycle was
	// committed.
	MapEpoch uint64 `json:"mapEpoch,omitempty"`
	MapGen   uint64 `json:"mapGen,omitempty"`
	// Pending holds the hints of a cycle that started and did not
	// finish: the next cycle covers them again.
	Pending []disk.Range `json:"pending,omitempty"`
	// Points are the recovery points this replicator made, oldest first.
	Points []Point `json:"points,omitempty"`
	// PointVersion is the target's version (disk.Versioner) read just
	// after the newest point was cut: while the target still has it, the
	// newest point holds the target's content. "" when unknown.
	PointVersion string `json:"pointVersion,omitempty"`
	// Cutting is when (this machine's clock) a point cut began whose
	// result is not recorded: saved before CreatePoint, cleared when its
	// point is committed. Set on load, it says an orphan may exist.
	Cutting time.Time `json:"cutting,omitzero"`
}

// member is one source and target pair: the machinery of a cycle, shared
// by Replicator (one disk) and Group (several).
type member struct {
	name      string
	freezer   Freezer // nil in a group
	target    Target
	dirty     *DirtyMap
	policy    Policy // with defaults
	opts      transfer.Options
	stateFile string
	sigDir    string // points' signatures (Config.SignatureDir), or ""

	mu   sync.Mutex // guards st, base and status
	st   diskState
	base View // the view of st.Base, while this process holds it
	stat Status
}

func newDisk(name string, f Freezer, t Target, dirty *DirtyMap, p Policy, opts *transfer.Options, stateFile string) (*member, error) {
	if t == nil {
		return nil, fmt.Errorf("replicate: disk %q has no target", name)
	}
	d := &member{name: name, freezer: f, target: t, dirty: dirty, policy: p.withDefaults(), stateFile: stateFile}
	if opts != nil {
		d.opts = *opts
	}
	d.opts.Hints = nil
	d.opts.TruncateExcess = true
	if d.opts.Journal == nil && !d.opts.NoJournal {
		d.opts.NoJournal = true
	}
	if d.opts.Journal != nil {
		d.opts.DiscardBadJournal = true // each view is a new source
	}
	if stateFile != "" {
		b, err := os.ReadFile(stateFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("replicate: disk %q: reading state: %w", name, err)
		default:
			if err := openJSON("deltasync-replicate-state", b, &d.st); err != nil {
				return nil, fmt.Errorf("replicate: disk %q: state %s: %w", name, stateFile, err)
			}
		}
	}
	d.stat.Disk = name
	d.stat.Points = slices.Clone(d.st.Points)
	return d, nil
}

// saveLocked persists the state when there is a state file.
func (d *member) saveLocked() error {
	if d.stateFile == "" {
		return nil
	}
	b, err := sealJSON("deltasync-replicate-state", &d.st)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(d.stateFile, b); err != nil {
		return fmt.Errorf("replicate: disk %q: saving state: %w", d.name, err)
	}
	return nil
}

// taken is what a dirty map handed to a cycle, before the freeze.
type taken struct {
	inv     uint64 // the map's Invalidations when the view was frozen
	have    bool
	ranges  []disk.Range
	trusted bool
	why     string
}

// take takes the dirty map's ranges (call it before the freeze) and
// checks the map against the state's record of it.
func (d *member) take() taken {
	if d.dirty == nil {
		return taken{}
	}
	rs, ok, why := d.dirty.Take()
	epoch, gen := d.dirty.Generation()
	d.mu.Lock()
	defer d.mu.Unlock()
	if ok && d.st.MapEpoch != 0 {
		switch {
		case epoch != d.st.MapEpoch:
			ok, why = false, "the dirty map is not the one the last cycle used (another epoch)"
		case gen < d.st.MapGen:
			ok, why = false, fmt.Sprintf("the dirty map is older than the last cycle's (generation %d < %d): an old copy was restored", gen, d.st.MapGen)
		}
	}
	return taken{have: true, ranges: rs, trusted: ok, why: why}
}

// dirtyTrustedNow reports whether the dirty map is still trusted after
// the freeze.
func (d *member) dirtyTrustedNow() bool {
	ok, _ := d.dirty.Trusted()
	return ok
}

// plan decides the hints of a cycle: nil means compare everything, for
// the reason given.
//
// Hints say what changed in the source since the base view; they are
// enough only while the target still holds that view. before is the
// target's version read before this cycle touched it: unless it equals
// the one read at the end of the last successful cycle (PointVersion),
// something wrote the target since (or it has no version to tell), and
// everything is compared.
func (d *member) plan(ctx context.Context, v View, tk taken, before string) (hints []disk.Range, reason string, err error) {
	d.mu.Lock()
	st := d.st
	d.mu.Unlock()
	switch {
	case st.Base == "":
		return nil, "first cycle", nil
	case v.Size() != st.BaseSize:
		return nil, fmt.Sprintf("resize (%d to %d bytes)", st.BaseSize, v.Size()), nil
	case before == "":
		return nil, "the target has no version to prove it unchanged since the last cycle", nil
	case st.PointVersion == "":
		return nil, "no version of the target was recorded by the last cycle", nil
	case before != st.PointVersion:
		return nil, "the target was written since the last cycle", nil
	case tk.have && !tk.trusted:
		return nil, tk.why, nil
	case tk.have && !d.dirtyTrustedNow():
		_, why := d.dirty.Trusted()
		return nil, why, nil
	case d.policy.ScrubEvery > 0 && st.SinceFull+1 >= d.policy.ScrubEvery:
		return nil, fmt.Sprintf("scrub (every %d cycles)", d.policy.ScrubEvery), nil
	}
	if tk.have {
		// Marks made since the Take, before or after the freeze: a
		// write marked before it was issued and done before the freeze
		// is in the view, so it must be in the hints (they stay in the
		// map for the next cycle too).
		hints = append(hints, tk.ranges...)
		hints = append(hints, d.dirty.Peek()...)
		reason = "dirty map"
	} else if c, ok := v.(Changer); ok {
		rs, err := c.ChangedSince(ctx, st.Base)
		if errors.Is(err, ErrNoBase) {
			return nil, fmt.Sprintf("no change hints since %s: %v", st.Base, err), nil
		}
		if err != nil {
			return nil, "", fmt.Errorf("replicate: disk %q: listing changes since %s: %w", d.name, st.Base, err)
		}
		hints = append(hints, rs...)
		reason = "snapshot diff"
	} else {
		return nil, "the source gives no change hints", nil
	}
	if len(st.Pending) > 0 {
		hints = append(hints, st.Pending...)
		reason += " + an unfinished cycle's hints"
	}
	hints = disk.Normalize(hints)
	if hints == nil {
		hints = []disk.Range{}
	}
	return hints, reason, nil
}

// cycle syncs the target from a frozen view and cuts a recovery point;
// frozen is when the view was frozen, on this machine's monotonic clock.
// On success the view becomes the base of the next cycle (the old base
// is released); on failure it is released.
func (d *member) cycle(ctx context.Context, v View, tk taken, frozen time.Time) (rep CycleReport, err error) {
	rep = CycleReport{Disk: d.name, View: v.ID(), ViewTime: v.Time(), Started: frozen}
	defer func() {
		if err != nil {
			d.fail(ctx, v, err)
		}
	}()
	if d.dirty != nil {
		tk.inv = d.dirty.Invalidations() // the view is frozen now
	}
	// The target's version before this cycle touches it: the evidence
	// that nobody wrote it since the last cycle (for hints, and for
	// keeping the newest point; the sync's own bookkeeping, such as a
	// witness's marks, moves it without changing data).
	before := d.targetVersion(ctx)
	hints, reason, err := d.plan(ctx, v, tk, before)
	if err != nil {
		return rep, err
	}
	rep.Full, rep.Reason = hints == nil, reason
	for _, h := range hints {
		rep.Hinted += h.Len
	}
	d.mu.Lock()
	if hints != nil {
		d.st.Pending = hints
	} else {
		d.st.Pending = nil
	}
	err = d.saveLocked()
	d.mu.Unlock()
	if err != nil {
		return rep, err
	}

	t0 := time.Now()
	opts := d.opts
	opts.Hints = hints
	st, err := transfer.Sync(ctx, v, d.target, &opts)
	rep.Stats, rep.Sync = st, time.Since(t0)
	if err != nil {
		return rep, fmt.Errorf("replicate: disk %q: syncing from view %s: %w", d.name, v.ID(), err)
	}
	t0 = time.Now()
	if f, ok := d.target.(disk.Flusher); ok {
		if err := f.Flush(ctx); err != nil {
			return rep, fmt.Errorf("replicate: disk %q: flushing before the recovery point: %w", d.name, err)
		}
	}
	v1 := d.targetVersion(ctx) // after the flush: what the point, cut or kept, holds
	var pt Point
	if why := d.pointCurrent(ctx, st, before); why == "" {
		// Nothing changed and the target is as its newest point holds
		// it: that point stands for this cycle too.
		d.mu.Lock()
		pt = d.st.Points[len(d.st.Points)-1]
		d.mu.Unlock()
		rep.PointKept = true
	} else {
		rep.PointReason = why
		d.mu.Lock()
		if d.st.Cutting.IsZero() { // an earlier unrecorded cut keeps its older time
			d.st.Cutting = time.Now()
		}
		err = d.saveLocked()
		d.mu.Unlock()
		if err != nil {
			return rep, err
		}
		pt, err = d.target.CreatePoint(ctx)
		if err != nil {
			rep.Cut = time.Since(t0)
			return rep, fmt.Errorf("replicate: disk %q: cutting the recovery point: %w", d.name, err)
		}
		pt.View, pt.ViewTime = v.ID(), v.Time()
	}
	rep.Cut = time.Since(t0)
	rep.Point = pt
	pointVersion := v1
	if !rep.PointKept {
		// A write between the two reads may or may not be in the point:
		// then no version vouches for it (the next cycle compares
		// everything).
		pointVersion = stableVersion(v1, d.targetVersion(ctx))
	}

	d.mu.Lock()
	prevID := ""
	if n := len(d.st.Points); n > 0 {
		prevID = d.st.Points[n-1].ID
	}
	old := d.base
	oldID := d.st.Base
	d.base = v
	d.st.Base, d.st.BaseSize, d.st.BaseTime = v.ID(), v.Size(), v.Time()
	d.st.Cycles++
	rep.Cycle = d.st.Cycles
	if rep.Full {
		d.st.SinceFull = 0
	} else {
		d.st.SinceFull++
	}
	d.st.Pending = nil
	if !rep.PointKept {
		d.st.Points = append(d.st.Points, pt)
	}
	d.st.Cutting = time.Time{}
	d.st.PointVersion = pointVersion
	d.mu.Unlock()
	var warn []error
	if !rep.PointKept && d.sigDir != "" {
		if err := d.writeSignature(ctx, v, pt, prevID, hints); err != nil {
			warn = append(warn, err)
		}
	}
	if d.dirty != nil {
		if err := d.dirty.DoneSince(tk.inv); err != nil {
			warn = append(warn, err)
		}
		e, g := d.dirty.Generation()
		d.mu.Lock()
		d.st.MapEpoch, d.st.MapGen = e, g
		d.mu.Unlock()
	}
	d.mu.Lock()
	if err := d.saveLocked(); err != nil {
		warn = append(warn, err)
	}
	d.mu.Unlock()
	// The old base is no longer needed for hints.
	if old != nil {
		if err := old.Release(ctx); err != nil {
			warn = append(warn, fmt.Errorf("replicate: disk %q: releasing view %s: %w", d.name, oldID, err))
		}
	} else if oldID != "" {
		if r, ok := d.freezer.(ViewReleaser); ok {
			if err := r.ReleaseView(ctx, oldID); err != nil {
				warn = append(warn, fmt.Errorf("replicate: disk %q: releasing view %s: %w", d.name, oldID, err))
			}
		}
	}
	rep.Warning = errors.Join(warn...)
	return rep, nil
}

// stableVersion is a when b equals it, else "": a version read twice
// around an operation vouches for it only if nothing moved in between.
func stableVersion(a, b string) string {
	if a != "" && a == b {
		return a
	}
	return ""
}

// targetVersion returns the target's version, or "" when it has none or
// it cannot be read.
func (d *member) targetVersion(ctx context.Context) string {
	if vr, ok := d.target.(disk.Versioner); ok {
		if v, err := vr.Version(ctx); err == nil {
			return v
		}
	}
	return ""
}

// pointCurrent returns "" when the cycle may keep the newest point instead
// of cutting one, or why it may not. It may when the sync changed
// nothing and the target's version before the sync (before) was still
// the one read at the end of the cycle that cut or kept the newest point
// (evidence that nobody wrote it since); a target without a version, a
// group member and a policy of a point every cycle always cut one.
func (d *member) pointCurrent(ctx context.Context, st transfer.Stats, before string) string {
	if d.policy.PointEveryCycle {
		return "a point every cycle (policy)"
	}
	if d.freezer == nil {
		return "a group cuts its points together"
	}
	if st.Written+st.Zeroed > 0 || st.ResizedFrom != -1 || st.Resumed {
		return "the cycle changed the target"
	}
	d.mu.Lock()
	n, want := len(d.st.Points), d.st.PointVersion
	d.mu.Unlock()
	if n == 0 {
		return "no point yet"
	}
	switch {
	case before == "":
		return "the target has no version to prove its newest point current"
	case want == "":
		return "no version was recorded with the newest point"
	case before != want:
		return "the target was written since its newest point"
	}
	// The point itself must still be there (a lifecycle rule, or a user,
	// may have deleted it).
	d.mu.Lock()
	newest := d.st.Points[n-1].ID
	d.mu.Unlock()
	pts, err := d.target.ListPoints(ctx)
	if err != nil {
		return fmt.Sprintf("listing the points to find the newest: %v", err)
	}
	if !slices.ContainsFunc(pts, func(p Point) bool { return p.ID == newest }) {
		return "the newest point " + newest + " is gone from the target"
	}
	return ""
}

// orphanSkew is how far the target service's clock may be behind this
// machine's when orphans are told from an earlier replication's points.
const orphanSkew = 5 * time.Minute

// reconcile deletes the orphans of a cut whose result was not recorded
// (st.Cutting set): the target's owned points that the state does not
// name, newer than its newest point and taken within orphanSkew of the
// cut's start (a point's time is when its cut began: a snapshot's
// request, a FileTarget's copy). Points outside that window, which an
// earlier replicator of the same name with a lost state, or another
// state of the same name, may have made, are never touched.
func (d *member) reconcile(ctx context.Context) ([]Point, error) {
	d.mu.Lock()
	cutting := d.st.Cutting
	known := map[string]bool{}
	var newest time.Time
	for _, p := range d.st.Points {
		known[p.ID] = true
		newest = maxTime(newest, p.Time)
	}
	d.mu.Unlock()
	op, ok := d.target.(OwnedPoints)
	if cutting.IsZero() || !ok {
		return nil, nil
	}
	owned, err := op.OwnedPoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("replicate: disk %q: listing its points to find an orphan of an unrecorded cut: %w", d.name, err)
	}
	floor := cutting.Add(-orphanSkew)
	var gone []Point
	for _, p := range owned {
		if known[p.ID] || !p.Time.After(newest) || p.Time.Before(floor) || p.Time.After(cutting.Add(orphanSkew)) {
			continue
		}
		if err := d.target.DeletePoint(ctx, p.ID); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return gone, fmt.Errorf("replicate: disk %q: deleting the orphan point %s: %w", d.name, p.ID, err)
		}
		gone = append(gone, p)
	}
	d.mu.Lock()
	d.st.Cutting = time.Time{}
	err = d.saveLocked()
	d.mu.Unlock()
	return gone, err
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// fail records a failed cycle: the view is released, the base kept.
func (d *member) fail(ctx context.Context, v View, err error) {
	rctx := context.WithoutCancel(ctx)
	rerr := v.Release(rctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stat.Failed++
	d.stat.LastError = errors.Join(err, rerr)
	d.stat.LastErrorAt = time.Now()
}

// record updates the status after a successful cycle.
func (d *member) record(rep CycleReport) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stat.Cycles = d.st.Cycles
	d.stat.LastSuccess = time.Now()
	d.stat.LastFrozen = rep.Started
	d.stat.LastViewTime = rep.ViewTime
	d.stat.LastCycle = rep
	d.stat.Points = slices.Clone(d.st.Points)
	if rep.Warning != nil {
		d.stat.LastError = rep.Warning
		d.stat.LastErrorAt = time.Now()
	}
}

// deletePoints deletes recovery points made by this disk and forgets
// them; a point already gone is forgotten as well.
func (d *member) deletePoints(ctx context.Context, drop []Point) (deleted []Point, err error) {
	var errs []error
	gone := map[string]bool{}
	for _, p := range drop {
		if e := d.target.DeletePoint(ctx, p.ID); e != nil && !isNotFound(e) {
			errs = append(errs, fmt.Errorf("replicate: disk %q: deleting recovery point %s: %w", d.name, p.ID, e))
			continue
		}
		gone[p.ID] = true
		deleted = append(deleted, p)
		if d.sigDir != "" {
			os.Remove(SignaturePath(d.sigDir, p.ID))
		}
	}
	d.mu.Lock()
	d.st.Points = slices.DeleteFunc(d.st.Points, func(p Point) bool { return gone[p.ID] })
	d.stat.Points = slices.Clone(d.st.Points)
	serr := d.saveLocked()
	d.mu.Unlock()
	return deleted, errors.Join(append(errs, serr)...)
}

// close releases the base view and saves the state.
func (d *member) close(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	// The base view is kept (not released): it is the next process's
	// base for hints. Only this process's handle on it goes.
	if c, ok := d.base.(interface{ Close() error }); ok {
		c.Close()
	}
	d.base = nil
	return d.saveLocked()
}

// ViewReleaser is an optional capability of a Freezer: it releases a view
// by ID, for a view frozen by an earlier process (named in a state file).
type ViewReleaser interface {
	ReleaseView(ctx context.Context, id string) error
}
