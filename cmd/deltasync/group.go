package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/deltasync/deltasync/replicate"
)

// groupConfig is the file of 'deltasync replicate -config FILE': a group
// of disks frozen together, with the flags of replicate as keys.
type groupConfig struct {
	Name       string        `yaml:"name"`
	Interval   time.Duration `yaml:"interval"`
	StateDir   string        `yaml:"state-dir"`
	ScrubEvery *int          `yaml:"scrub-every"`
	Quota      string        `yaml:"quota"`
	Freeze     string        `yaml:"freeze"`
	LogFormat  string        `yaml:"log-format"`
	Metrics    string        `yaml:"metrics"`
	Retention  struct {
		KeepLast        *int          `yaml:"keep-last"`
		KeepHourly      *int          `yaml:"keep-hourly"`
		KeepDaily       int           `yaml:"keep-daily"`
		KeepWeekly      int           `yaml:"keep-weekly"`
		KeepMonthly     int           `yaml:"keep-monthly"`
		KeepWithin      time.Duration `yaml:"keep-within"`
		TZ              string        `yaml:"tz"`
		PointEveryCycle bool          `yaml:"point-every-cycle"`
	} `yaml:"retention"`
	// Pause and Resume are commands (argv) run around the freeze of
	// every source, e.g. fsfreeze --freeze and --unfreeze: what makes the
	// views one moment when the disks are written during the cycle.
	Pause  []string    `yaml:"pause"`
	Resume []string    `yaml:"resume"`
	Disks  []groupDisk `yaml:"disks"`
}

type groupDisk struct {
	Name      string `yaml:"name"`
	Source    string `yaml:"source"`
	Target    string `yaml:"target"`
	PointsDir string `yaml:"points-dir"`
}

// loadGroupConfig reads and checks a group file strictly: an unknown key
// is an error naming its line.
func loadGroupConfig(path string) (*groupConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-config: %w", err)
	}
	var c groupConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		msg := regexp.MustCompile(`field (\S+) not found in type \S+( struct \{[^}]*\})?`).ReplaceAllString(err.Error(), "$1 is not a key here")
		return nil, fmt.Errorf("-config %s: %s (see docs/replication.md for the format)", path, msg)
	}
	bad := func(f string, a ...any) error { return fmt.Errorf("-config %s: "+f, append([]any{path}, a...)...) }
	if c.Name == "" || unsafeName.MatchString(c.Name) {
		return nil, bad("name %q: give the group a name of letters, digits, '.', '_' and '-'", c.Name)
	}
	if len(c.Disks) == 0 {
		return nil, bad("no disks: list them under disks:, each with a name, a source and a target")
	}
	seen := map[string]bool{}
	for i, d := range c.Disks {
		switch {
		case d.Name == "" || unsafeName.MatchString(d.Name):
			return nil, bad("disk %d: name %q: use letters, digits, '.', '_' and '-'", i+1, d.Name)
		case seen[d.Name]:
			return nil, bad("disk %q is listed twice", d.Name)
		case d.Source == "" || d.Target == "":
			return nil, bad("disk %q: it needs a source and a target", d.Name)
		case sameDisk(d.Source, d.Target):
			return nil, bad("disk %q: its source and target are one file or device", d.Name)
		}
		seen[d.Name] = true
	}
	if (len(c.Pause) == 0) != (len(c.Resume) == 0) {
		return nil, bad("pause and resume go together: give both commands, or neither")
	}
	return &c, nil
}

// apply sets the replicate flags from the file; a flag given on the
// command line wins.
func (c *groupConfig) apply(r *replFlags, set map[string]bool) {
	str := func(flag string, dst *string, v string) {
		if v != "" && !set[flag] {
			*dst = v
		}
	}
	num := func(flag string, dst *int, v *int) {
		if v != nil && !set[flag] {
			*dst = *v
		}
	}
	str("state-dir", &r.stateDir, c.StateDir)
	str("quota", &r.quota, c.Quota)
	str("freeze", &r.freeze, c.Freeze)
	str("log-format", &r.logFormat, c.LogFormat)
	str("metrics", &r.metrics, c.Metrics)
	str("tz", &r.tz, c.Retention.TZ)
	num("scrub-every", &r.scrubEvery, c.ScrubEvery)
	num("keep-last", &r.keepLast, c.Retention.KeepLast)
	num("keep-hourly", &r.keepHourly, c.Retention.KeepHourly)
	rv := c.Retention
	for _, x := range []struct {
		flag string
		dst  *int
		v    int
	}{{"keep-daily", &r.keepDaily, rv.KeepDaily}, {"keep-weekly", &r.keepWeekly, rv.KeepWeekly}, {"keep-monthly", &r.keepMonthly, rv.KeepMonthly}} {
		if x.v != 0 && !set[x.flag] {
			*x.dst = x.v
		}
	}
	if rv.KeepWithin != 0 && !set["keep-within"] {
		r.keepWithin = rv.KeepWithin
	}
	if c.Interval != 0 && !set["interval"] {
		r.interval = c.Interval
	}
	if rv.PointEveryCycle && !set["point-every-cycle"] {
		r.pointEveryCycle = true
	}
	r.name = c.Name
}

// openGroup opens every disk of the group and the group replicator.
func (x *replication) openGroup(ctx context.Context, f *replFlags, policy replicate.Policy, c *groupConfig) error {
	if err := x.lockState(); err != nil {
		return err
	}
	o, err := f.rf.options()
	if err != nil {
		return err
	}
	var freezers []replicate.Freezer
	var members []replicate.Member
	blob := false
	for _, d := range c.Disks {
		fr, size, err := x.openSource(ctx, f, d.Source)
		if err != nil {
			return fmt.Errorf("disk %q: %w", d.Name, sided("source", err))
		}
		f.rf.blob.srcSize = size
		f.pointsDir = d.PointsDir
		tgt, b, err := x.openTarget(ctx, f, d.Target)
		if err != nil {
			return fmt.Errorf("disk %q: %w", d.Name, sided("target", err))
		}
		blob = blob || b
		freezers = append(freezers, fr)
		members = append(members, replicate.Member{Name: d.Name, Target: tgt})
		x.members = append(x.members, d.Name)
	}
	cfg, err := x.config(f, policy, o, blob)
	if err != nil {
		return err
	}
	var pause func(ctx context.Context) (func(), error)
	if len(c.Pause) > 0 {
		pause = func(ctx context.Context) (func(), error) {
			if err := x.runHook(ctx, "pause", c.Pause); err != nil {
				return nil, err
			}
			return func() {
				if err := x.runHook(context.WithoutCancel(ctx), "resume", c.Resume); err != nil {
					x.log.Error("the resume command failed: the disks' writers may still be paused", "error", scrub(err.Error()))
				}
			}, nil
		}
	}
	stateDir := filepath.Join(x.dir, x.name+".members")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	manifests := filepath.Join(x.dir, x.name+".manifests")
	if err := os.MkdirAll(manifests, 0o700); err != nil {
		return err
	}
	x.g, err = replicate.NewGroup(replicate.GroupConfig{
		Name: x.name, Members: members, Freezer: replicate.FreezeTogether(pause, freezers...),
		Policy: policy, Quotas: cfg.Quotas, Manifests: replicate.DirManifests{Dir: manifests},
		Transfer: cfg.Transfer, StateDir: stateDir, OnCycle: x.onGroupCycle, SignatureDir: x.signatureDir(),
	})
	return err
}

// runHook runs a pause or resume command, at most a minute.
func (x *replication) runHook(ctx context.Context, what string, argv []string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("the %s command %s: %v: %s", what, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// onGroupCycle logs a group cycle, with one line per member.
func (x *replication) onGroupCycle(rep replicate.GroupReport, err error) {
	var sum replicate.CycleReport
	for _, d := range rep.Disks {
		var derr error
		if err != nil && d.Point.ID == "" { // this member did not reach its point
			derr = fmt.Errorf("the group cycle failed: %w", err)
		}
		x.onCycleOf(d, derr, slog.New(x.handler).With("disk", d.Disk, "group", x.name))
		sum.Stats.Compared += d.Stats.Compared
		sum.Stats.Written += d.Stats.Written
		sum.Stats.Zeroed += d.Stats.Zeroed
		sum.Full = sum.Full || d.Full
	}
	sum.Elapsed = rep.Elapsed
	x.metrics.observe(sum, err)
	attrs := []any{"manifest", rep.Manifest.ID, "disks", len(rep.Disks), "compared", sum.Stats.Compared,
		"written", sum.Stats.Written, "zeroed", sum.Stats.Zeroed, "seconds", rep.Elapsed.Seconds(), "deleted", len(rep.Deleted)}
	switch {
	case err != nil && caught.Load() != nil:
		x.log.Info("group cycle stopped by a signal: no group point stored", append(attrs, "error", scrub(err.Error()))...)
	case err != nil:
		x.log.Error("group cycle failed: no group point stored; the next cycle covers its changes", append(attrs, "error", scrub(err.Error()))...)
	default:
		x.log.Info("group cycle done", attrs...)
	}
	x.writeStatus("running")
}

// status is the replication's status: a group's is its members' taken
// together (the oldest freeze, the worst lag, the fewest cycles), with
// the group points (manifests) as its points.
func (x *replication) status() replicate.Status {
	if x.g == nil {
		return x.r.Status()
	}
	gs := x.g.Status()
	s := replicate.Status{Disk: x.name, LastError: gs.LastError}
	for i, d := range gs.Disks {
		s.Running = s.Running || d.Running
		if i == 0 || d.Cycles < s.Cycles {
			s.Cycles = d.Cycles
		}
		s.Failed, s.Skipped = max(s.Failed, d.Failed), max(s.Skipped, d.Skipped)
		if i == 0 || d.LastFrozen.Before(s.LastFrozen) {
			s.LastFrozen, s.LastViewTime = d.LastFrozen, d.LastViewTime
		}
		if i == 0 || d.LastSuccess.Before(s.LastSuccess) {
			s.LastSuccess = d.LastSuccess
		}
		s.Lag = max(s.Lag, d.Lag)
		s.Next = d.Next
		if s.LastError == nil && d.LastError != nil {
			s.LastError, s.LastErrorAt = d.LastError, d.LastErrorAt
		}
	}
	for _, m := range gs.Manifests {
		s.Points = append(s.Points, replicate.Point{ID: m.ID, Time: m.Time})
	}
	slices.SortFunc(s.Points, func(a, b replicate.Point) int { return a.Time.Compare(b.Time) })
	return s
}

func (x *replication) cycle(ctx context.Context) error {
	if x.g != nil {
		_, err := x.g.Cycle(ctx)
		return err
	}
	_, err := x.r.Cycle(ctx)
	return err
}

func (x *replication) run(ctx context.Context) error {
	if x.g != nil {
		return x.g.Run(ctx)
	}
	return x.r.Run(ctx)
}
