package replicate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/transfer"
)

// CommonPoint is the recovery point a failover was made from, as a
// snapshot on each side: SourceID of the failed-over (secondary) disk,
// taken when it was created from the point, and TargetID of the original
// (primary) disk, the point itself.
type CommonPoint struct {
	SourceID string
	TargetID string
}

// ReprotectConfig configures Reprotect.
type ReprotectConfig struct {
	// Source freezes the failed-over disk, which now runs the workload
	// and becomes the source of replication. If it is a Freezer whose
	// views are Changers (blob.Freezer), the common point's diff on this
	// side comes from them.
	Source Freezer
	// Target is the original disk, or nil when it is missing; it is then
	// made by Create, with the source's size, and seeded.
	Target Target
	Create func(ctx context.Context, size int64) (Target, error)
	// Common, when set, is the recovery point both disks still share.
	// The differences are then the union of each side's changes since
	// it (both sides must be Changers: the source's views and the
	// target), and nothing else is compared. When it is nil, or either
	// side cannot list its changes since it, both disks are compared
	// whole.
	Common *CommonPoint
	// Replication configures the delta replication started at the end
	// (Source, Target and Dirty are filled in by Reprotect when empty).
	Replication Config
	// Cycles is how many delta cycles Reprotect runs before returning
	// (0: none; the returned Replicator continues with Run or Cycle).
	Cycles int
}

// Phase is one phase of a reprotect, with what it cost.
type Phase struct {
	// Name is "freeze", "seed", "keep prior state", "differences" or
	// "replicate N".
	Name string
	// Detail says what was done (how the differences were found).
	Detail   string
	Duration time.Duration
	// Sent is the bytes written or cleared on the target; Read the bytes
	// read from the source and the target.
	Sent, Read int64
}

// ReprotectReport is what Reprotect did.
type ReprotectReport struct {
	Phases []Phase
	// Seeded tells that the original was missing and was seeded.
	Seeded bool
	// PriorState is the snapshot of the original taken before anything
	// was written to it (zero when it was seeded).
	PriorState Point
	// Replicator continues delta replication from the last point.
	Replicator *Replicator
}

// Reprotect sets up replication back from a failed-over disk (the
// source) to the original (the target), the way Azure Site Recovery's
// reprotect does:
//
//   - the original is missing: it is created and seeded (blocks of
//     zeros are not sent);
//   - it exists: its prior state is kept first (a snapshot, like ASR's
//     -ASRReplica copy), then only the differences are sent. With a
//     common point, the differences are the union of both sides'
//     changes since it (snapshot diffs on both sides) and nothing else
//     is compared or read; without one, both disks are compared whole;
//   - then delta replication starts: a Replicator whose first cycle is
//     hinted from the view the reprotect synced, and Cycles cycles of it.
//
// Each phase is reported with its duration and bytes.
func Reprotect(ctx context.Context, cfg ReprotectConfig) (*ReprotectReport, error) {
	rep := &ReprotectReport{}
	if cfg.Source == nil {
		return rep, errors.New("replicate: ReprotectConfig.Source is nil")
	}
	t0 := time.Now()
	if cfg.Replication.Dirty != nil {
		// Writes marked until now are in the view frozen next.
		cfg.Replication.Dirty.Take()
	}
	v, err := cfg.Source.Freeze(ctx)
	if err != nil {
		return rep, fmt.Errorf("replicate: reprotect: freezing the failed-over disk: %w", err)
	}
	frozen := time.Now()
	rep.Phases = append(rep.Phases, Phase{Name: "freeze", Detail: "view " + v.ID(), Duration: frozen.Sub(t0)})
	release := true
	defer func() {
		if release {
			v.Release(context.WithoutCancel(ctx))
		}
	}()
	opts := transfer.Options{}
	if cfg.Replication.Transfer != nil {
		opts = *cfg.Replication.Transfer
	}
	opts.Hints = nil
	opts.TruncateExcess = true
	if opts.Journal == nil {
		opts.NoJournal = true
	}

	tgt := cfg.Target
	var full bool
	if tgt == nil {
		if cfg.Create == nil {
			return rep, errors.New("replicate: reprotect: the original disk is missing and there is no Create")
		}
		t0 = time.Now()
		tgt, err = cfg.Create(ctx, v.Size())
		if err != nil {
			return rep, fmt.Errorf("replicate: reprotect: creating the original disk: %w", err)
		}
		st, err := transfer.Seed(ctx, v, tgt, &opts)
		rep.Phases = append(rep.Phases, Phase{Name: "seed", Detail: "the original was missing: created and seeded", Duration: time.Since(t0), Sent: st.Written + st.Zeroed, Read: st.SourceRead + st.TargetRead})
		if err != nil {
			return rep, fmt.Errorf("replicate: reprotect: seeding: %w", err)
		}
		rep.Seeded, full = true, true
	} else {
		t0 = time.Now()
		pt, err := tgt.CreatePoint(ctx)
		if err != nil {
			return rep, fmt.Errorf("replicate: reprotect: keeping the original's prior state: %w", err)
		}
		rep.PriorState = pt
		rep.Phases = append(rep.Phases, Phase{Name: "keep prior state", Detail: "snapshot " + pt.ID, Duration: time.Since(t0)})

		t0 = time.Now()
		hints, detail := commonHints(ctx, v, tgt, cfg.Common)
		opts.Hints = hints
		full = hints == nil
		st, err := transfer.Sync(ctx, v, tgt, &opts)
		rep.Phases = append(rep.Phases, Phase{Name: "differences", Detail: detail, Duration: time.Since(t0), Sent: st.Written + st.Zeroed, Read: st.SourceRead + st.TargetRead})
		if err != nil {
			return rep, fmt.Errorf("replicate: reprotect: sending the differences: %w", err)
		}
	}

	rc := cfg.Replication
	if rc.Source == nil {
		rc.Source = cfg.Source
	}
	rc.Target = tgt
	if rc.Name == "" {
		rc.Name = "reprotect"
	}
	r, err := New(rc)
	if err != nil {
		return rep, err
	}
	// The synced view is the first recovery point and the base of the
	// next cycle's hints.
	t0 = time.Now()
	if f, ok := tgt.(disk.Flusher); ok {
		if err := f.Flush(ctx); err != nil {
			return rep, err
		}
	}
	v1 := r.d.targetVersion(ctx)
	pt, err := tgt.CreatePoint(ctx)
	if err != nil {
		return rep, fmt.Errorf("replicate: reprotect: cutting the first recovery point: %w", err)
	}
	pt.View, pt.ViewTime = v.ID(), v.Time()
	r.d.adopt(v, pt, full, frozen, stableVersion(v1, r.d.targetVersion(ctx)))
	release = false
	if rc.Dirty != nil {
		// The target now equals the view, which holds every write
		// marked before the Take: the map is good from here on.
		if err := rc.Dirty.Done(); err != nil {
			return rep, err
		}
		e, g := rc.Dirty.Generation()
		r.d.mu.Lock()
		r.d.st.MapEpoch, r.d.st.MapGen = e, g
		r.d.saveLocked()
		r.d.mu.Unlock()
	}
	rep.Phases = append(rep.Phases, Phase{Name: "recovery point", Detail: "point " + pt.ID, Duration: time.Since(t0)})
	rep.Replicator = r
	for i := range cfg.Cycles {
		c, err := r.Cycle(ctx)
		what := "hinted by the " + c.Reason
		if c.Full {
			what = "full comparison: " + c.Reason
		}
		rep.Phases = append(rep.Phases, Phase{Name: fmt.Sprintf("replicate %d", i+1), Detail: what, Duration: c.Elapsed, Sent: c.Bytes(), Read: c.Stats.SourceRead + c.Stats.TargetRead})
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// commonHints returns the union of both sides' changes since the common
// point, or nil (compare everything) with the reason.
func commonHints(ctx context.Context, v View, t Target, cp *CommonPoint) ([]disk.Range, string) {
	if cp == nil {
		return nil, "no common recovery point: both disks compared whole"
	}
	sc, ok1 := v.(Changer)
	tc, ok2 := t.(Changer)
	if !ok1 || !ok2 {
		return nil, "a side cannot list its changes: both disks compared whole"
	}
	a, err := sc.ChangedSince(ctx, cp.SourceID)
	if err != nil {
		return nil, fmt.Sprintf("the failed-over disk's changes since the common point are unknown (%v): both disks compared whole", err)
	}
	b, err := tc.ChangedSince(ctx, cp.TargetID)
	if err != nil {
		return nil, fmt.Sprintf("the original's changes since the common point are unknown (%v): both disks compared whole", err)
	}
	u := UnionRanges(a, b)
	var n, na, nb int64
	for _, r := range u {
		n += r.Len
	}
	for _, r := range a {
		na += r.Len
	}
	for _, r := range b {
		nb += r.Len
	}
	if u == nil {
		u = []disk.Range{}
	}
	return u, fmt.Sprintf("union of both sides' changes since the common point: %d bytes (failed-over disk %d, original %d)", n, na, nb)
}

// UnionRanges returns the sorted, merged union of range lists.
func UnionRanges(lists ...[]disk.Range) []disk.Range {
	var all []disk.Range
	for _, l := range lists {
		all = append(all, l...)
	}
	return disk.Normalize(all)
}

// adopt makes v (already synced to the target, whose point pt was cut)
// the base of the next cycle.
func (d *member) adopt(v View, pt Point, full bool, frozen time.Time, version string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.base = v
	d.st.PointVersion = version
	d.st.Base, d.st.BaseSize, d.st.BaseTime = v.ID(), v.Size(), v.Time()
	d.st.Cycles++
	if full {
		d.st.SinceFull = 0
	} else {
		d.st.SinceFull++
	}
	d.st.Points = append(d.st.Points, pt)
	d.stat.Cycles = d.st.Cycles
	d.stat.LastSuccess = time.Now()
	d.stat.LastFrozen = frozen
	d.stat.LastViewTime = v.Time()
	d.stat.Points = append([]Point(nil), d.st.Points...)
	d.saveLocked()
}
