package replicate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/deltasync/deltasync/transfer"
)

// Config configures a Replicator. Source and Target are required.
type Config struct {
	// Name names the disk pair in errors and status. Default "disk".
	Name string
	// Source freezes the source disk at the start of each cycle.
	Source Freezer
	// Target is the disk kept identical to the source, with its
	// recovery points.
	Target Target
	// Dirty, when set, is the source's dirty-range feed: the cycle's
	// hints come from it (taken before the freeze), not from the view.
	Dirty *DirtyMap
	// Policy is the replication policy (zero: defaults).
	Policy Policy
	// Quotas, when given, are checked by New (Policy.Validate with
	// Reserve).
	Quotas []Quota
	// Reserve is how many snapshots of the target that the replicator
	// does not manage count against the quotas (a reprotect's prior
	// state, the failover's common point).
	Reserve int
	// Transfer is the base of each cycle's transfer options (block size,
	// concurrency, bandwidth, durability, progress). The replicator sets
	// Hints and TruncateExcess (the target follows the source's size),
	// and turns journaling off unless a Journal is given (a journal is
	// then discarded when a cycle's view differs from the one that wrote
	// it, since each view is a new source).
	Transfer *transfer.Options
	// StateFile, when set, is where the replicator keeps its state
	// between processes (the base view's ID, the cycle counters, the
	// recovery points it made, the hints of an unfinished cycle),
	// checksummed and written atomically. Default: in memory only; a new
	// process then starts with a full comparison and does not delete
	// the points of an earlier one.
	StateFile string
	// SignatureDir, when set, keeps a signature of each recovery point
	// cut (SignaturePath): the keyed hashes of the source view it was
	// synced from, so that VerifyPoint proves a point, or a disk
	// restored from it, holds what was replicated, without the source.
	// A hinted cycle hashes only its hinted blocks; a full one every
	// block. Signatures hold their key: keep the folder private.
	SignatureDir string
	// OnCycle, when set, is called at the end of every cycle, successful
	// or not, with its report and error, on the goroutine that ran it:
	// the place for a service's log line and metrics.
	OnCycle func(CycleReport, error)
}

// CycleReport describes one cycle of one disk.
type CycleReport struct {
	Disk string
	// Cycle is the number of successful cycles including this one.
	Cycle int
	// View is the ID of the source view synced from, ViewTime when it
	// was frozen (the source's clock).
	View     string
	ViewTime time.Time
	// Full tells that everything was compared; Reason says why, or where
	// the hints came from.
	Full   bool
	Reason string
	// Hinted is the bytes of the hinted ranges (0 for a full cycle).
	Hinted int64
	// Stats are the sync's: Written+Zeroed are the bytes sent,
	// SourceRead and TargetRead the bytes read.
	Stats transfer.Stats
	// Point is the recovery point cut, or, when PointKept, the newest
	// point, which the cycle found current: it changed nothing, and the
	// target's version proves nobody wrote it since that point was cut
	// (so no new point was cut). PointReason says why a point was cut.
	// Deleted are the points the retention policy deleted after it.
	Point       Point
	PointKept   bool
	PointReason string
	Deleted     []Point
	// Orphans are the points an earlier cut left unrecorded, deleted
	// before this cycle (see OwnedPoints).
	Orphans []Point
	// Started is when the view was frozen, on this machine's clock.
	// Freeze, Sync and Cut are the time spent freezing, syncing and
	// cutting the point; Elapsed the whole cycle.
	Started                    time.Time
	Freeze, Sync, Cut, Elapsed time.Duration
	// Warning is a failure after the point was cut (saving the state or
	// dirty map, releasing the previous view, deleting old points): the
	// cycle counts as done.
	Warning error
}

// Bytes returns the bytes the cycle sent to the target.
func (r CycleReport) Bytes() int64 { return r.Stats.Written + r.Stats.Zeroed }

// Status is what a caller can read of a replicator at any time.
type Status struct {
	Disk string
	// Running tells that a cycle is in progress.
	Running bool
	// Cycles and Failed count successful and failed cycles; Skipped the
	// ticks skipped by overrunning cycles (see Policy).
	Cycles, Failed, Skipped int
	// LastSuccess is when the last successful cycle ended (this
	// machine's clock).
	LastSuccess time.Time
	// LastFrozen is when the view of the last successful cycle was
	// frozen (this machine's clock) and LastViewTime the same on the
	// source's clock: the newest recovery point holds the source as of
	// then, whether that cycle cut it or found it current
	// (CycleReport.PointKept).
	LastFrozen   time.Time
	LastViewTime time.Time
	// Lag is the recovery point objective met: the time since LastFrozen
	// (0 before the first cycle), whether or not that cycle found
	// changes. It is a duration on this machine's monotonic clock, so
	// clock offsets between machines do not enter it.
	Lag time.Duration
	// Next is when Run starts the next cycle: Interval after the start
	// of the running or last one, or at once after an overrun (zero
	// outside Run).
	Next time.Time
	// LastCycle is the report of the last successful cycle.
	LastCycle CycleReport
	// Points are the recovery points the replicator made and keeps,
	// oldest first.
	Points []Point
	// LastError is the last error (a failed cycle, or a warning of a
	// successful one) and when it happened.
	LastError   error
	LastErrorAt time.Time
}

// Replicator replicates one disk pair in cycles. Its methods are safe
// for concurrent use; cycles never overlap (Cycle waits for a running one).
type Replicator struct {
	d       *member
	freezer Freezer
	sem     chan struct{}
	sched   schedule
	onCycle func(CycleReport, error)
	cleaned bool // ViewCleaner called (under sem)
}

// New returns a Replicator for cfg. It validates the policy against the
// quotas given and loads the state file, if any.
func New(cfg Config) (*Replicator, error) {
	if cfg.Source == nil {
		return nil, errors.New("replicate: Config.Source is nil")
	}
	if cfg.Name == "" {
		cfg.Name = "disk"
	}
	if err := cfg.Policy.Validate(cfg.Reserve, cfg.Quotas...); err != nil {
		return nil, err
	}
	d, err := newDisk(cfg.Name, cfg.Source, cfg.Target, cfg.Dirty, cfg.Policy, cfg.Transfer, cfg.StateFile)
	if err != nil {
		return nil, err
	}
	d.sigDir = cfg.SignatureDir
	return &Replicator{d: d, freezer: cfg.Source, sem: make(chan struct{}, 1), sched: schedule{interval: d.policy.Interval}, onCycle: cfg.OnCycle}, nil
}

// Cycle runs one cycle: take the dirty map's ranges (if any), freeze the
// source, decide the hints (or compare everything, see the package doc
// for when), sync, flush, cut a recovery point, apply the retention
// policy. A failed cycle leaves the previous recovery point as the newest
// and its hints are covered again by the next cycle.
func (r *Replicator) Cycle(ctx context.Context) (rep CycleReport, err error) {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return CycleReport{Disk: r.d.name}, ctx.Err()
	}
	defer func() { <-r.sem }()
	if r.onCycle != nil {
		defer func() { r.onCycle(rep, err) }()
	}
	r.d.setRunning(true)
	defer r.d.setRunning(false)

	start := time.Now()
	orphans, oerr := r.d.reconcile(ctx)
	if c, ok := r.freezer.(ViewCleaner); ok && !r.cleaned {
		r.cleaned = true
		r.d.mu.Lock()
		keep := []string{r.d.st.Base}
		r.d.mu.Unlock()
		if err := c.CleanViews(ctx, keep); err != nil {
			oerr = errors.Join(oerr, fmt.Errorf("replicate: disk %q: deleting views left by an earlier process: %w", r.d.name, err))
		}
	}
	tk := r.d.take()
	v, err := r.freezer.Freeze(ctx)
	frozen := time.Now()
	if err != nil {
		err = fmt.Errorf("replicate: disk %q: freezing the source: %w", r.d.name, err)
		r.d.failFreeze(err)
		return CycleReport{Disk: r.d.name, Started: frozen, Freeze: frozen.Sub(start)}, err
	}
	rep, err = r.d.cycle(ctx, v, tk, frozen)
	rep.Freeze = frozen.Sub(start)
	rep.Orphans, rep.Warning = orphans, errors.Join(rep.Warning, oerr)
	if err != nil {
		rep.Elapsed = time.Since(start)
		return rep, err
	}
	_, drop := r.d.policy.Retain(r.d.points())
	// The point this cycle cut or kept holds the target now: it stays,
	// whatever the clocks say (a point time stepping back).
	drop = slices.DeleteFunc(drop, func(p Point) bool { return p.ID == rep.Point.ID })
	deleted, derr := r.d.deletePoints(ctx, drop)
	rep.Deleted = deleted
	rep.Warning = errors.Join(rep.Warning, derr)
	rep.Elapsed = time.Since(start)
	r.d.record(rep)
	return rep, nil
}

// Run runs cycles every Policy.Interval until ctx is done, and returns
// ctx's error. A failed cycle is recorded in Status and retried at the
// next tick; an overrunning cycle makes Run skip the missed ticks and
// start the next cycle at once (see Policy).
func (r *Replicator) Run(ctx context.Context) error {
	return r.sched.run(ctx, func(ctx context.Context) { r.Cycle(ctx) }, r.d.addSkipped, r.d.setNext)
}

// Status returns the replicator's status. It may be called at any time,
// from any goroutine.
func (r *Replicator) Status() Status { return r.d.status() }

// Close saves the state and lets go of the base view's handle; the view
// itself (a source snapshot) is kept, as the next process's base for
// hints. It does not close the target, the source or the dirty map.
func (r *Replicator) Close(ctx context.Context) error { return r.d.close(ctx) }

func (d *member) points() []Point {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Point(nil), d.st.Points...)
}

func (d *member) setRunning(b bool) {
	d.mu.Lock()
	d.stat.Running = b
	d.mu.Unlock()
}

func (d *member) setNext(t time.Time) {
	d.mu.Lock()
	d.stat.Next = t
	d.mu.Unlock()
}

func (d *member) addSkipped(n int) {
	d.mu.Lock()
	d.stat.Skipped += n
	d.mu.Unlock()
}

func (d *member) failFreeze(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stat.Failed++
	d.stat.LastError, d.stat.LastErrorAt = err, time.Now()
}

func (d *member) status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stat
	s.Points = append([]Point(nil), s.Points...)
	s.LastCycle.Deleted = append([]Point(nil), s.LastCycle.Deleted...)
	if !s.LastFrozen.IsZero() {
		s.Lag = time.Since(s.LastFrozen)
	}
	return s
}

func isNotFound(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// schedule runs cycles every interval, skipping ticks missed by an
// overrun.
type schedule struct {
	interval time.Duration
}

func (s schedule) run(ctx context.Context, cycle func(context.Context), skipped func(int), next func(time.Time)) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		start := time.Now()
		next(start.Add(s.interval))
		cycle(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		took := time.Since(start)
		wait := s.interval - took
		if wait < 0 {
			// Overrun: the ticks inside the cycle are skipped and the
			// next cycle starts now.
			skipped(int(took / s.interval))
			wait = 0
		}
		if wait == 0 {
			next(time.Now())
		}
		t.Reset(wait)
	}
}
