package replicate

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Defaults of Policy.
const (
	// DefaultInterval is the time from the start of one cycle to the
	// start of the next (Azure Site Recovery cuts a crash-consistent
	// point every 5 minutes).
	DefaultInterval = 5 * time.Minute
	// DefaultKeepLast is how many of the newest recovery points are kept.
	DefaultKeepLast = 12
	// DefaultKeepHourly is for how many hours one point per hour is kept.
	DefaultKeepHourly = 24
	// DefaultScrubEvery is how many cycles may use change hints before one
	// compares everything.
	DefaultScrubEvery = 288 // once a day at the default interval
)

// Policy is a replication policy. The zero value means every default; a
// negative KeepHourly or ScrubEvery turns that rule off. A Policy is
// read, never changed, by the replicator.
//
// # Cycles and overruns
//
// A cycle starts every Interval, measured from the start of the previous
// one. When a cycle takes longer than Interval (it overruns), the ticks
// it missed are skipped, not queued, and the next cycle starts at once
// when it ends; the schedule then counts from that start. So cycles
// never overlap, never pile up, and recovery points are never cut more
// often than once per Interval (which keeps a policy inside the snapshot
// rate quota it was validated against). Status.Skipped counts skipped
// ticks. A failed cycle is retried at the next tick.
//
// # Retention
//
// After each successful cycle the recovery points this replicator made
// are sorted by their Time, which is the target service's own clock (a
// page blob snapshot's timestamp, chosen by Azure), never this machine's.
// The rules are those of restic's forget, and a point is kept when any
// rule keeps it:
//
//   - KeepLast: the n newest points.
//   - KeepHourly, KeepDaily, KeepWeekly (ISO weeks), KeepMonthly: the
//     newest point of each of the n most recent hours (days, weeks,
//     months) that have points; a bucket without points is not counted.
//   - KeepWithin: every point taken within that duration before the
//     newest point.
//
// Buckets are calendar hours, days, weeks and months in Location (UTC
// when nil). All other points are deleted. Snapshots the replicator did
// not make (a reprotect's prior-state snapshot, the failover's common
// point, anything of the user's) are never deleted.
//
// Before this release KeepHourly kept the oldest point of each hour.
// Points retained that way need no migration: each past hour holds one
// point, which is then its newest and stays; only the newest hour's
// points are chosen anew (its oldest may go, its newest stays).
//
// # Orphans
//
// Creating a snapshot is not idempotent. Before the point is cut the
// state file records that a cut is under way; when the cut's answer is
// lost (an error, a kill), the next cycle lists the target's points
// owned by this replication (OwnedPoints) and deletes those the state
// does not name that are newer than its newest point and taken within
// five minutes (the service's clock against this machine's) of the
// unrecorded cut's start:
// the orphans, so they are never counted against the snapshot quota.
// Older points, and points not owned by this replication, are never
// deleted this way.
//
// # Scrubs
//
// Every ScrubEvery-th cycle compares the whole disk (a scrub): after a
// cycle that compared everything, ScrubEvery-1 cycles use change hints
// (snapshot diffs, a dirty-range feed) and the next one is a scrub, which
// repairs whatever a wrong hint missed.
type Policy struct {
	// Interval is the time between cycle starts. Default 5 minutes; at
	// least 1 ms.
	Interval time.Duration
	// KeepLast is how many of the newest recovery points are kept.
	// Default 12; at least 1 (the newest point is always kept).
	KeepLast int
	// KeepHourly keeps the newest point of each of the KeepHourly most
	// recent hours that have points. Default 24; negative: none.
	KeepHourly int
	// KeepDaily, KeepWeekly and KeepMonthly keep the newest point of
	// each of that many most recent days, ISO weeks and months that
	// have points. Default 0: none.
	KeepDaily, KeepWeekly, KeepMonthly int
	// KeepWithin keeps every point taken within that duration before
	// the newest point. Default 0: none.
	KeepWithin time.Duration
	// Location is the time zone of the hours, days, weeks and months.
	// Default (nil) UTC.
	Location *time.Location
	// PointEveryCycle cuts a point even when a cycle changed nothing.
	// By default such a cycle keeps the newest point, which already
	// holds its state, when the target's version proves it (see
	// CycleReport.PointKept).
	PointEveryCycle bool
	// ScrubEvery makes every ScrubEvery-th cycle compare everything,
	// counting from the last cycle that did. Default 288; 1: every cycle;
	// negative: never (hints are trusted until one of the other fallback
	// rules applies).
	ScrubEvery int
}

// ErrBadPolicy is returned by Validate (and New) for a policy that is
// inconsistent or exceeds a Quota.
var ErrBadPolicy = errors.New("replicate: invalid policy")

// Quota is a snapshot quota of a kind of target, from Azure's documentation.
type Quota struct {
	Name string
	// MaxSnapshots is the most snapshots one disk or blob may have
	// (0: no limit).
	MaxSnapshots int
	// RateCount snapshots at most per RatePeriod (0: no limit).
	RateCount  int
	RatePeriod time.Duration
}

// Azure's snapshot quotas.
var (
	// ManagedDiskQuota: incremental snapshots of a managed disk: 500 per
	// disk, at most 7 per 5 minutes.
	ManagedDiskQuota = Quota{Name: "managed disk incremental snapshots", MaxSnapshots: 500, RateCount: 7, RatePeriod: 5 * time.Minute}
	// PremiumPageBlobQuota: a premium page blob has at most 100 snapshots.
	PremiumPageBlobQuota = Quota{Name: "premium page blob snapshots", MaxSnapshots: 100}
	// StandardPageBlobQuota: standard page blobs have no per-blob
	// snapshot limit (snapshots are billed for the pages they keep).
	StandardPageBlobQuota = Quota{Name: "standard page blob snapshots"}
)

// withDefaults returns p with defaults applied.
func (p Policy) withDefaults() Policy {
	if p.Interval == 0 {
		p.Interval = DefaultInterval
	}
	if p.KeepLast == 0 {
		p.KeepLast = DefaultKeepLast
	}
	if p.KeepHourly == 0 {
		p.KeepHourly = DefaultKeepHourly
	}
	if p.ScrubEvery == 0 {
		p.ScrubEvery = DefaultScrubEvery
	}
	return p // idempotent: a rule that is off stays negative
}

// MaxPoints is the most recovery points the policy keeps at once, plus
// one: the point of a cycle exists before retention deletes the oldest.
// Points are at least Interval apart, which bounds KeepWithin's.
func (p Policy) MaxPoints() int {
	d := p.withDefaults()
	return d.KeepLast + d.bucketed() + d.within() + 1
}

// bucketed is how many points the bucket rules keep at most.
func (d Policy) bucketed() int {
	return max(d.KeepHourly, 0) + max(d.KeepDaily, 0) + max(d.KeepWeekly, 0) + max(d.KeepMonthly, 0)
}

// within is how many points KeepWithin keeps at most: one per Interval
// in the window, and the newest.
func (d Policy) within() int {
	if d.KeepWithin <= 0 {
		return 0
	}
	return int(d.KeepWithin/d.Interval) + 1
}

// Validate checks the policy on its own and, for each quota given,
// against that quota: the points it keeps at once (MaxPoints, plus
// reserve snapshots the caller keeps on the same disk, such as a
// reprotect's prior state) must fit MaxSnapshots, and one point per
// Interval must fit the rate. Errors wrap ErrBadPolicy.
func (p Policy) Validate(reserve int, quotas ...Quota) error {
	if p.Interval < 0 || p.KeepLast < 0 || p.KeepWithin < 0 {
		return fmt.Errorf("%w: negative interval %v, keep-last %d or keep-within %v", ErrBadPolicy, p.Interval, p.KeepLast, p.KeepWithin)
	}
	d := p.withDefaults()
	if d.Interval < time.Millisecond {
		return fmt.Errorf("%w: interval %v is under 1ms", ErrBadPolicy, d.Interval)
	}
	for _, q := range quotas {
		if n := d.MaxPoints() + reserve; q.MaxSnapshots > 0 && n > q.MaxSnapshots {
			return fmt.Errorf("%w: keeps up to %d snapshots (%d last + %d hourly, daily, weekly and monthly + %d within %v + 1 being cut + %d reserved), %s allow %d",
				ErrBadPolicy, n, d.KeepLast, d.bucketed(), d.within(), d.KeepWithin, reserve, q.Name, q.MaxSnapshots)
		}
		if q.RateCount > 0 && q.RatePeriod > 0 {
			// Cycles start at least Interval apart: at most
			// ceil(period/interval) points start in any window of period.
			n := int((q.RatePeriod + d.Interval - 1) / d.Interval)
			if n > q.RateCount {
				return fmt.Errorf("%w: an interval of %v cuts up to %d snapshots per %v, %s allow %d (use at least %v)",
					ErrBadPolicy, d.Interval, n, q.RatePeriod, q.Name, q.RateCount, (q.RatePeriod+time.Duration(q.RateCount)-1)/time.Duration(q.RateCount))
			}
		}
	}
	return nil
}

// Retain splits points into those the policy keeps and those it deletes
// (see Policy). Times are the points' own (the target service's clock);
// the newest point is "now". Both results are sorted oldest first.
func (p Policy) Retain(points []Point) (keep, drop []Point) {
	d := p.withDefaults()
	ps := slices.Clone(points)
	slices.SortStableFunc(ps, func(a, b Point) int { return a.Time.Compare(b.Time) })
	if len(ps) == 0 {
		return nil, nil
	}
	kept := make([]bool, len(ps))
	for i := max(0, len(ps)-d.KeepLast); i < len(ps); i++ {
		kept[i] = true
	}
	loc := d.Location
	if loc == nil {
		loc = time.UTC
	}
	for _, r := range []struct {
		n      int
		bucket func(t time.Time) int
	}{
		{d.KeepHourly, func(t time.Time) int { return t.Year()*1_000_000 + t.YearDay()*100 + t.Hour() }},
		{d.KeepDaily, func(t time.Time) int { return t.Year()*1000 + t.YearDay() }},
		{d.KeepWeekly, func(t time.Time) int { y, w := t.ISOWeek(); return y*100 + w }},
		{d.KeepMonthly, func(t time.Time) int { return t.Year()*100 + int(t.Month()) }},
	} {
		last, n := -1, r.n
		for i := len(ps) - 1; i >= 0 && n > 0; i-- { // newest first: the newest of each bucket wins
			if b := r.bucket(ps[i].Time.In(loc)); b != last {
				kept[i], last = true, b
				n--
			}
		}
	}
	if d.KeepWithin > 0 {
		from := ps[len(ps)-1].Time.Add(-d.KeepWithin)
		for i, pt := range ps {
			if !pt.Time.Before(from) {
				kept[i] = true
			}
		}
	}
	for i, pt := range ps {
		if kept[i] {
			keep = append(keep, pt)
		} else {
			drop = append(drop, pt)
		}
	}
	return keep, drop
}
