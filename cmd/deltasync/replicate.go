package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/replicate"
	rblob "github.com/deltasync/deltasync/replicate/blob"
	"github.com/deltasync/deltasync/transfer"
)

// replFlags are the flags of replicate.
type replFlags struct {
	rf                                               runFlags
	interval, keepWithin                             time.Duration
	keepLast, keepHourly, keepDaily, keepWeekly      int
	keepMonthly, scrubEvery                          int
	once, pointEveryCycle                            bool
	tz, stateDir, name, pointsDir, freeze, logFormat string
	metrics, quota, dirtyFeed                        string
}

func newReplicateFlags(r *replFlags, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	r.rf.cmd = name
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, usage)
		fs.PrintDefaults()
	}
	r.register(fs)
	return fs
}

const replicateUsage = `usage: deltasync replicate [flags] SRC DST
Replicate SRC to DST in cycles until stopped (SIGINT, SIGTERM: the cycle in
progress is stopped, no point is cut, the state is saved, exit 0). Each cycle
freezes SRC, sends only what changed to DST, and leaves a recovery point on DST;
the -keep-* rules (restic's forget) decide which points stay. A cycle that
changed nothing keeps the newest point when DST's version proves nobody wrote it
since. One line per cycle is logged on stderr.

SRC: an image file (frozen by a reflink copy on XFS or btrfs, or taken as
quiesced: see -freeze) or a page blob (frozen by a snapshot per cycle, whose
snapshot diff gives the next cycle's changes). DST: an image file (points are
sparse copies, reflinks where the filesystem has them) or a page blob (points
are snapshots). 'deltasync status' reads the state; 'deltasync points' lists,
restores and deletes the points.

Exit status: 0 stopped by SIGINT or SIGTERM after a clean stop, or -once and
the cycle succeeded; 2 an error (a bad flag, a disk that cannot be opened,
another replicator holding the state, or -once and the cycle failed).
`

// register defines the flags of replicate (reprotect's too).
func (r *replFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&r.interval, "interval", replicate.DefaultInterval, "time from the start of one cycle to the start of the next")
	fs.BoolVar(&r.once, "once", false, "run one cycle and exit (cron, a Kubernetes CronJob): 0 if it succeeded, 2 if not")
	fs.IntVar(&r.keepLast, "keep-last", replicate.DefaultKeepLast, "keep the newest N points")
	fs.IntVar(&r.keepHourly, "keep-hourly", replicate.DefaultKeepHourly, "keep the newest point of each of the last N hours that have points (0: none)")
	fs.IntVar(&r.keepDaily, "keep-daily", 0, "keep the newest point of each of the last N days that have points")
	fs.IntVar(&r.keepWeekly, "keep-weekly", 0, "keep the newest point of each of the last N ISO weeks that have points")
	fs.IntVar(&r.keepMonthly, "keep-monthly", 0, "keep the newest point of each of the last N months that have points")
	fs.DurationVar(&r.keepWithin, "keep-within", 0, "keep every point taken within this duration before the newest, e.g. 48h")
	fs.StringVar(&r.tz, "tz", "UTC", "time zone of the hours, days, weeks and months of -keep-* (an IANA name, e.g. Europe/Paris)")
	fs.IntVar(&r.scrubEvery, "scrub-every", replicate.DefaultScrubEvery, "compare everything every N-th cycle, whatever the change hints say (1: every cycle; -1: never)")
	fs.BoolVar(&r.pointEveryCycle, "point-every-cycle", false, "cut a point even when a cycle changed nothing")
	fs.StringVar(&r.stateDir, "state-dir", "", "folder of the replicator's state, status and lock (default "+replicateDirDefault()+")")
	fs.StringVar(&r.name, "name", "", "name of this replication in the state folder, logs and metrics (default: DST's file or blob name)")
	fs.StringVar(&r.pointsDir, "points-dir", "", "image file DST: folder of its recovery points (default: DST's folder)")
	fs.StringVar(&r.freeze, "freeze", "auto", "how an image file SRC is frozen each cycle: reflink (a reflink copy beside it; XFS, btrfs), quiesced (the file itself: nothing may write it while a cycle runs, or the cycle fails), auto (reflink where the filesystem has it, else quiesced)")
	fs.StringVar(&r.logFormat, "log-format", "text", "log lines on stderr: text or json")
	fs.StringVar(&r.dirtyFeed, "dirty-feed", "", "image file or device SRC: a file to which the source's writer appends a line 'OFFSET LENGTH' before each write it issues; cycles then compare only those ranges (see docs/replication.md for when the feed is trusted)")
	fs.StringVar(&r.metrics, "metrics", "", "serve Prometheus metrics on /metrics and health on /healthz and /readyz at this address, e.g. 127.0.0.1:9750")
	fs.StringVar(&r.quota, "quota", "auto", "snapshot quota the retention must fit: premium (100 snapshots of a premium page blob), standard (none), managed (500, 7 per 5 minutes), none; auto: premium for a page blob DST, none for a file")
	rf := &r.rf
	fs.Var(&rf.blockSize, "block-size", "comparison block size: a multiple of 512 up to 4M (0: the default, 64K)")
	fs.IntVar(&rf.concurrency, "concurrency", 0, "writer goroutines (0: the default, 4)")
	fs.Var(&rf.memory, "memory", "memory budget of write buffers (0: the default, 64M)")
	fs.Var(&rf.bwlimit, "bwlimit", "bandwidth limit, bytes per second written, e.g. 20M (0: none)")
	fs.BoolVar(&rf.verify, "verify", false, "re-read both disks after each cycle's sync and prove them equal")
	fs.StringVar(&rf.directReads, "direct-reads", "never", "how local disks are read: never, auto, always (see 'deltasync sync -h')")
	fs.BoolVar(&rf.blob.breakLease, "break-lease", false, "page blob DST leased by another holder: break its lease (see 'deltasync sync -h')")
}

// replicateDirDefault is the state folder used without -state-dir.
func replicateDirDefault() string {
	d, err := transfer.DefaultStateDir()
	if err != nil {
		return "$XDG_STATE_HOME/deltasync/replicate"
	}
	return filepath.Join(d, "replicate")
}

func (r *replFlags) policy() (replicate.Policy, error) {
	loc, err := time.LoadLocation(r.tz)
	if err != nil {
		return replicate.Policy{}, usagef("replicate", "-tz %q: %v", r.tz, err)
	}
	off := func(n int) int { // the flags say 0 for none; Policy says negative
		if n == 0 {
			return -1
		}
		return n
	}
	if r.keepLast < 1 {
		return replicate.Policy{}, usagef("replicate", "-keep-last %d: at least 1 (the newest point is always kept)", r.keepLast)
	}
	if r.interval < time.Second {
		return replicate.Policy{}, usagef("replicate", "-interval %v: at least 1s", r.interval)
	}
	return replicate.Policy{
		Interval: r.interval, KeepLast: r.keepLast, KeepHourly: off(r.keepHourly),
		KeepDaily: r.keepDaily, KeepWeekly: r.keepWeekly, KeepMonthly: r.keepMonthly,
		KeepWithin: r.keepWithin, Location: loc, ScrubEvery: r.scrubEvery, PointEveryCycle: r.pointEveryCycle,
	}, nil
}

// safeName is a replication name usable as a file name and a label.
var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func defaultName(dst string) string {
	if isBlobURL(dst) {
		if loc, err := pageblob.Locate(dst, nil); err == nil {
			return unsafeName.ReplaceAllString(loc.Container+"-"+loc.Blob, "_")
		}
	}
	return unsafeName.ReplaceAllString(strings.TrimSuffix(filepath.Base(dst), filepath.Ext(dst)), "_")
}

// replication is an open replication: its disks, replicator and files.
type replication struct {
	name, dir string
	r         *replicate.Replicator // one disk, or
	g         *replicate.Group      // a group of disks frozen together (-config)
	members   []string              // the group's disks
	closers   []func() error
	lock      *os.File
	log       *slog.Logger
	handler   slog.Handler
	started   time.Time
	interval  time.Duration
	metrics   *replMetrics
}

func (x *replication) statePath() string  { return filepath.Join(x.dir, x.name+".state") }
func (x *replication) statusPath() string { return filepath.Join(x.dir, x.name+".status.json") }

// signatureDir holds the signatures of the replication's points.
func (x *replication) signatureDir() string { return filepath.Join(x.dir, x.name+".signatures") }

func (x *replication) close(ctx context.Context) error {
	var errs []error
	if x.r != nil {
		errs = append(errs, x.r.Close(ctx))
	}
	if x.g != nil {
		errs = append(errs, x.g.Close(ctx))
	}
	for i := len(x.closers) - 1; i >= 0; i-- {
		errs = append(errs, x.closers[i]())
	}
	return errors.Join(errs...)
}

func cmdReplicate(ctx context.Context, args []string) error {
	var rf replFlags
	fs := newReplicateFlags(&rf, "replicate", replicateUsage)
	config := fs.String("config", "", "replicate a group of disks frozen together, listed in this YAML file (docs/replication.md), instead of SRC DST")
	pos, err := parseArgs(fs, args)
	switch {
	case err != nil:
	case *config != "" && len(pos) != 0:
		err = usagef("replicate", "with -config the disks are in the file: give no SRC DST")
	case *config == "" && len(pos) != 2:
		err = usagef("replicate", "want SRC and DST, got %d arguments", len(pos))
	}
	if err != nil {
		return err
	}
	if *config != "" {
		c, err := loadGroupConfig(*config)
		if err != nil {
			return err
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, fl := range []string{"name", "points-dir", "dirty-feed"} {
			if set[fl] {
				return usagef("replicate", "-%s is per disk or per group: with -config, set it in the file (name:, and points-dir: under each disk)", fl)
			}
		}
		c.apply(&rf, set)
		x, policy, err := newReplication(&rf, "", "")
		if err != nil {
			return err
		}
		x.log = slog.New(x.handler).With("group", x.name)
		if err := x.openGroup(ctx, &rf, policy, c); err != nil {
			x.close(context.WithoutCancel(ctx))
			return stoppedWhileOpening(err, rf.once)
		}
		return x.serve(ctx, &rf, "group "+c.Name, *config)
	}
	x, policy, err := newReplication(&rf, pos[0], pos[1])
	if err != nil {
		return err
	}
	if err := x.open(ctx, &rf, policy, pos[0], pos[1]); err != nil {
		x.close(context.WithoutCancel(ctx))
		return stoppedWhileOpening(err, rf.once)
	}
	return x.serve(ctx, &rf, pos[0], pos[1])
}

// stoppedWhileOpening is the error of an open that a signal cut short:
// for -once, interrupted (130, 143); for the service, a clean stop (0).
func stoppedWhileOpening(err error, once bool) error {
	if caught.Load() == nil {
		return err
	}
	if once {
		return interrupted(err, -1, 0, "nothing was replicated; rerun the same command")
	}
	return errStopped
}

// newReplication checks the flags shared by replicate and reprotect and
// makes the replication's logger.
func newReplication(rf *replFlags, srcArg, dstArg string) (*replication, replicate.Policy, error) {
	policy, err := rf.policy()
	if err != nil {
		return nil, policy, err
	}
	var h slog.Handler
	switch rf.logFormat {
	case "text":
		h = slog.NewTextHandler(os.Stderr, nil)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, nil)
	default:
		return nil, policy, usagef(rf.rf.cmd, "-log-format %q: want text or json", rf.logFormat)
	}
	if srcArg != "" && sameDisk(srcArg, dstArg) {
		return nil, policy, fmt.Errorf("%w: %s and %s are one file or device", transfer.ErrSameDisk, srcArg, dstArg)
	}
	x := &replication{name: rf.name, dir: rf.stateDir, started: time.Now(), interval: policy.Interval}
	if x.name == "" {
		x.name = defaultName(dstArg)
	}
	if x.name == "" || unsafeName.MatchString(x.name) {
		return nil, policy, usagef(rf.rf.cmd, "-name %q: use letters, digits, '.', '_' and '-'", x.name)
	}
	if x.dir == "" {
		x.dir = replicateDirDefault()
	}
	x.handler = h
	x.log = slog.New(h).With("disk", x.name)
	return x, policy, nil
}

// serve runs the open replication's cycles (one with -once) until ctx
// ends, then closes it, saving the state.
func (x *replication) serve(ctx context.Context, rf *replFlags, srcArg, dstArg string) error {
	defer func() {
		if x.lock != nil {
			x.lock.Close()
		}
	}()
	if rf.metrics != "" {
		stop, err := x.serveMetrics(rf.metrics)
		if err != nil {
			x.close(context.WithoutCancel(ctx))
			return err
		}
		defer stop()
	}
	x.log.Info("replication started", "source", shown(srcArg), "target", shown(dstArg), "interval", x.interval.String(),
		"once", rf.once, "state", x.statePath(), "version", versionLine())
	x.writeStatus("running")
	var err error
	if rf.once {
		err = x.cycle(ctx)
	} else {
		err = x.run(ctx)
		if ctx.Err() != nil {
			err = nil // a clean stop
		}
	}
	cerr := x.close(context.WithoutCancel(ctx))
	state := "stopped"
	if rf.once && err != nil && caught.Load() != nil {
		x.writeStatus(state)
		return interrupted(err, -1, 0, "no point was cut; rerun the same command: the next cycle covers this one's changes")
	}
	if caught.Load() != nil {
		x.log.Info("replication stopped by a signal; the state is saved and the next start continues", "signal", (*caught.Load()).String())
	}
	x.writeStatus(state)
	if err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("saving the state: %w", cerr)
	}
	if caught.Load() != nil && !rf.once {
		return errStopped
	}
	return nil
}

// errStopped ends a service stopped by a signal after a clean stop: exit 0.
var errStopped = errors.New("stopped")

// open takes the state folder's lock and opens both disks and the
// replicator.
func (x *replication) open(ctx context.Context, f *replFlags, policy replicate.Policy, srcArg, dstArg string) error {
	if err := x.lockState(); err != nil {
		return err
	}
	rf := &f.rf
	o, err := rf.options()
	if err != nil {
		return err
	}
	freezer, srcSize, err := x.openSource(ctx, f, srcArg)
	if err != nil {
		return sided("source", err)
	}
	rf.blob.srcSize = srcSize
	tgt, blob, err := x.openTarget(ctx, f, dstArg)
	if err != nil {
		return sided("target", err)
	}
	cfg, err := x.config(f, policy, o, blob)
	if err != nil {
		return err
	}
	if f.dirtyFeed != "" {
		if isBlobURL(srcArg) {
			return usagef("replicate", "-dirty-feed is for a local source; a page blob's changes come from its snapshot diffs")
		}
		feed, err := openDirtyFeed(f.dirtyFeed, filepath.Join(x.dir, x.name+".dirty"), srcSize)
		if err != nil {
			return err
		}
		x.closers = append(x.closers, feed.Close)
		freezer, cfg.Dirty = feedFreezer{freezer, feed}, feed.m
	}
	cfg.Source, cfg.Target = freezer, tgt
	x.r, err = replicate.New(cfg)
	return err
}

// config is the replicator's configuration but for its disks; blob tells
// a page blob target (for -quota auto).
func (x *replication) config(f *replFlags, policy replicate.Policy, o transfer.Options, blob bool) (replicate.Config, error) {
	var quotas []replicate.Quota
	switch q := f.quota; {
	case q == "premium" || q == "auto" && blob:
		quotas = []replicate.Quota{replicate.PremiumPageBlobQuota}
	case q == "managed":
		quotas = []replicate.Quota{replicate.ManagedDiskQuota}
	case q == "standard" || q == "none" || q == "auto":
	default:
		return replicate.Config{}, usagef(f.rf.cmd, "-quota %q: want auto, premium, standard, managed or none", q)
	}
	x.metrics = newReplMetrics(x.name)
	o.Progress = nil
	return replicate.Config{Name: x.name, Policy: policy, Quotas: quotas, Transfer: &o, StateFile: x.statePath(), OnCycle: x.onCycle,
		SignatureDir: x.signatureDir()}, nil
}

// lockState takes the replication's lock in the state folder: one
// process per replication.
func (x *replication) lockState() error {
	if err := os.MkdirAll(x.dir, 0o700); err != nil {
		return fmt.Errorf("the state folder: %w", err)
	}
	lk, err := os.OpenFile(filepath.Join(x.dir, x.name+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("the state folder: %w", err)
	}
	if err := unix.Flock(int(lk.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(lk.Name())
		lk.Close()
		return fmt.Errorf("another deltasync replicate runs replication %q (pid %s; its lock is %s): stop it first, or give this one another -name",
			x.name, strings.TrimSpace(string(pid)), lk.Name())
	}
	lk.Truncate(0)
	fmt.Fprintf(lk, "%d\n", os.Getpid())
	x.lock = lk
	return nil
}

func (x *replication) openSource(ctx context.Context, f *replFlags, arg string) (replicate.Freezer, int64, error) {
	if isBlobURL(arg) {
		octx, stop := openContext()
		defer stop()
		b, err := pageblob.Open(octx, arg, nil)
		if err != nil {
			return nil, 0, err
		}
		x.closers = append(x.closers, b.Close)
		x.log.Info("the source is frozen by a snapshot each cycle", "freeze", "snapshot")
		return rblob.Freezer{Blob: b}, b.Size(), nil
	}
	if isAgentURL(arg) {
		return nil, 0, fmt.Errorf("%s: an agent:// source cannot be frozen from here yet: run the replicator on the source's machine", arg)
	}
	switch f.freeze {
	case "auto", "reflink":
		fr, err := replicate.NewReflinkFreezer(arg, "")
		if err == nil {
			fr.Tag = x.name
			x.closers = append(x.closers, fr.Close)
			x.log.Info("the source is frozen by a reflink copy each cycle", "freeze", "reflink")
			return fr, fr.Size(), nil
		}
		if f.freeze == "reflink" || !errors.Is(err, replicate.ErrNoReflink) {
			return nil, 0, err
		}
		x.log.Warn("the source's filesystem has no reflinks: it is taken as quiesced (a cycle during which it is written fails); use XFS or btrfs, or a volume snapshot, for a frozen view", "freeze", "quiesced", "why", err.Error())
	case "quiesced":
	default:
		return nil, 0, usagef("replicate", "-freeze %q: want auto, reflink or quiesced", f.freeze)
	}
	src, err := localdisk.OpenSource(arg, localdisk.SourceOptions{})
	if err != nil {
		return nil, 0, err
	}
	x.closers = append(x.closers, src.Close)
	return replicate.Quiesced(src, nil), src.Size(), nil
}

// openTarget opens DST as a replication target; blob tells a page blob.
func (x *replication) openTarget(ctx context.Context, f *replFlags, arg string) (replicate.Target, bool, error) {
	if isBlobURL(arg) {
		d, err := openBlobTarget(arg, &f.rf, f.rf.blob.srcSize > 0)
		if err != nil {
			return nil, false, err
		}
		x.closers = append(x.closers, d.Close)
		bt, ok := d.(*blobTarget)
		if !ok || bt.managed {
			return nil, false, fmt.Errorf("%s: a managed disk upload has no snapshots to keep recovery points in: replicate to a page blob", shown(arg))
		}
		return rblob.Target{Blob: bt.Blob, Owner: x.name}, true, nil
	}
	if isAgentURL(arg) {
		return nil, false, fmt.Errorf("%s: an agent:// target keeps no recovery points: run the replicator on the target's machine, or sync to it", arg)
	}
	d, err := localdisk.OpenTarget(arg, localdisk.TargetOptions{Create: true})
	if err != nil {
		return nil, false, err
	}
	x.closers = append(x.closers, d.Close)
	if isBlockDevice(d) {
		return nil, false, fmt.Errorf("%s is a block device: its recovery points are the volume manager's (LVM, ZFS); replicate to an image file or a page blob, or use the replicate package with your own Points", arg)
	}
	return &replicate.FileTarget{Disk: d, Dir: f.pointsDir}, false, nil
}

// onCycle logs a cycle, updates the metrics and the status file.
func (x *replication) onCycle(rep replicate.CycleReport, err error) {
	x.metrics.observe(rep, err)
	x.onCycleOf(rep, err, x.log)
	x.writeStatus("running")
}

// onCycleOf logs a cycle of one disk.
func (x *replication) onCycleOf(rep replicate.CycleReport, err error, log *slog.Logger) {
	st := rep.Stats
	attrs := []any{"cycle", rep.Cycle, "view", rep.View, "full", rep.Full, "reason", rep.Reason,
		"compared", st.Compared, "written", st.Written, "zeroed", st.Zeroed, "hinted", rep.Hinted,
		"seconds", rep.Elapsed.Seconds(), "sync_seconds", rep.Sync.Seconds()}
	switch {
	case err != nil && caught.Load() != nil:
		log.Info("cycle stopped by a signal: no point cut; the next start covers it again", append(attrs, "error", scrub(err.Error()))...)
	case err != nil:
		log.Error("cycle failed; the newest point stays the newest, and the next cycle covers this one's changes", append(attrs, "error", scrub(err.Error()))...)
	default:
		attrs = append(attrs, "point", rep.Point.ID, "point_kept", rep.PointKept, "deleted", len(rep.Deleted))
		if rep.Warning != nil {
			log.Warn("cycle done with a warning", append(attrs, "warning", scrub(rep.Warning.Error()))...)
		} else {
			log.Info("cycle done", attrs...)
		}
	}
}

// statusFile is what 'deltasync status' reads: written after every cycle
// and when the service starts and stops.
type statusFile struct {
	Name        string            `json:"name"`
	Members     []string          `json:"members,omitempty"` // a group's disks
	State       string            `json:"state"`             // running, stopped
	PID         int               `json:"pid"`
	Version     string            `json:"version"`
	Started     time.Time         `json:"started"`
	Written     time.Time         `json:"written"`
	Interval    string            `json:"interval"`
	Cycles      int               `json:"cycles"`
	Failed      int               `json:"failed"`
	Skipped     int               `json:"skipped"`
	LastSuccess time.Time         `json:"lastSuccess,omitzero"`
	LastFrozen  time.Time         `json:"lastFrozen,omitzero"`
	Next        time.Time         `json:"next,omitzero"`
	LastCycle   *cycleSummary     `json:"lastCycle,omitempty"`
	Points      []replicate.Point `json:"points"`
	LastError   string            `json:"lastError,omitempty"`
	LastErrorAt time.Time         `json:"lastErrorAt,omitzero"`
}

type cycleSummary struct {
	Cycle       int     `json:"cycle"`
	View        string  `json:"view"`
	Full        bool    `json:"full"`
	Reason      string  `json:"reason"`
	Compared    int64   `json:"compared"`
	Written     int64   `json:"written"`
	Zeroed      int64   `json:"zeroed"`
	Seconds     float64 `json:"seconds"`
	Point       string  `json:"point"`
	PointKept   bool    `json:"pointKept"`
	PointReason string  `json:"pointReason,omitempty"`
}

func (x *replication) writeStatus(state string) {
	if x.r == nil && x.g == nil {
		return
	}
	s := x.status()
	f := statusFile{Name: x.name, Members: x.members, State: state, PID: os.Getpid(), Version: versionLine(), Started: x.started, Written: time.Now(),
		Interval: x.interval.String(), Cycles: s.Cycles, Failed: s.Failed, Skipped: s.Skipped,
		LastSuccess: s.LastSuccess, LastFrozen: s.LastFrozen, Next: s.Next, Points: s.Points, LastErrorAt: s.LastErrorAt}
	if state != "running" {
		f.Next = time.Time{}
	}
	if f.Points == nil {
		f.Points = []replicate.Point{}
	}
	if s.LastError != nil {
		f.LastError = scrub(s.LastError.Error())
	}
	if c := s.LastCycle; c.Cycle > 0 {
		f.LastCycle = &cycleSummary{Cycle: c.Cycle, View: c.View, Full: c.Full, Reason: c.Reason, Compared: c.Stats.Compared,
			Written: c.Stats.Written, Zeroed: c.Stats.Zeroed, Seconds: c.Elapsed.Seconds(), Point: c.Point.ID, PointKept: c.PointKept, PointReason: c.PointReason}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err == nil {
		err = writeFileAtomic(x.statusPath(), append(b, '\n'))
	}
	if err != nil {
		x.log.Warn("writing the status file", "error", err.Error())
	}
}

// writeFileAtomic replaces path with data (a temporary file renamed).
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
