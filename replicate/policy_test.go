package replicate

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func ids(ps []Point) []string {
	var s []string
	for _, p := range ps {
		s = append(s, p.ID)
	}
	return s
}

// everyStep makes points from t0, one per step, n of them.
func everyStep(t0 time.Time, step time.Duration, n int) []Point {
	var ps []Point
	for i := range n {
		at := t0.Add(time.Duration(i) * step)
		ps = append(ps, Point{ID: at.Format("01-02T15:04"), Time: at})
	}
	return ps
}

// TestRetainRestic checks each rule against what restic's forget keeps
// for the same snapshot times (worked out by hand from restic's
// documentation: the newest of each bucket, n buckets that have points).
func TestRetainRestic(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC) // a Sunday
	// Every 6 hours for 20 days: 80 points, the newest 03-20T18:00.
	ps := everyStep(t0, 6*time.Hour, 80)
	for _, c := range []struct {
		name string
		p    Policy
		want []string
	}{
		{"last", Policy{KeepLast: 2, KeepHourly: -1}, []string{"03-20T12:00", "03-20T18:00"}},
		{"hourly", Policy{KeepLast: 1, KeepHourly: 3}, []string{"03-20T06:00", "03-20T12:00", "03-20T18:00"}},
		{"daily", Policy{KeepLast: 1, KeepHourly: -1, KeepDaily: 3}, []string{"03-18T18:00", "03-19T18:00", "03-20T18:00"}},
		// ISO weeks start on Monday: 03-16 (Mon) to 03-20 is this week,
		// 03-09..03-15 the one before, whose newest is 03-15T18:00.
		{"weekly", Policy{KeepLast: 1, KeepHourly: -1, KeepWeekly: 3}, []string{"03-08T18:00", "03-15T18:00", "03-20T18:00"}},
		{"monthly", Policy{KeepLast: 1, KeepHourly: -1, KeepMonthly: 5}, []string{"03-20T18:00"}},
		{"within", Policy{KeepLast: 1, KeepHourly: -1, KeepWithin: 12 * time.Hour}, []string{"03-20T06:00", "03-20T12:00", "03-20T18:00"}},
		{"union", Policy{KeepLast: 1, KeepHourly: -1, KeepDaily: 2, KeepWithin: 6 * time.Hour}, []string{"03-19T18:00", "03-20T12:00", "03-20T18:00"}},
	} {
		keep, drop := c.p.Retain(ps)
		if got := ids(keep); !slices.Equal(got, c.want) {
			t.Errorf("%s: kept %v, want %v", c.name, got, c.want)
		}
		if len(keep)+len(drop) != len(ps) {
			t.Errorf("%s: %d kept + %d deleted of %d", c.name, len(keep), len(drop), len(ps))
		}
		if n := c.p.MaxPoints(); len(keep) >= n {
			t.Errorf("%s: kept %d, MaxPoints %d must bound it", c.name, len(keep), n)
		}
	}
}

// TestRetainTimeZone: days are counted in the policy's zone. At
// 23:30 UTC it is already the next day in Tokyo.
func TestRetainTimeZone(t *testing.T) {
	tokyo := time.FixedZone("JST", 9*3600)
	ps := []Point{
		{ID: "a", Time: time.Date(2026, 3, 1, 14, 0, 0, 0, time.UTC)},  // 23:00 JST, 03-01
		{ID: "b", Time: time.Date(2026, 3, 1, 15, 30, 0, 0, time.UTC)}, // 00:30 JST, 03-02
		{ID: "c", Time: time.Date(2026, 3, 1, 16, 0, 0, 0, time.UTC)},  // 01:00 JST, 03-02
	}
	utc, _ := Policy{KeepLast: 1, KeepHourly: -1, KeepDaily: 2}.Retain(ps)
	jst, _ := Policy{KeepLast: 1, KeepHourly: -1, KeepDaily: 2, Location: tokyo}.Retain(ps)
	if got := ids(utc); !slices.Equal(got, []string{"c"}) {
		t.Errorf("UTC days: kept %v, want [c]", got)
	}
	if got := ids(jst); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("Tokyo days: kept %v, want [a c]", got)
	}
}

// TestRetainMigration: of the points retained by the old rule (the
// oldest point of each hour, plus the newest), the new one with the same
// counts deletes none from a past hour: only the newest hour's points
// are chosen anew.
func TestRetainMigration(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 8, 5, 0, 0, time.UTC)
	ps := everyStep(t0, 10*time.Minute, 60) // 10 hours, 6 an hour
	// The old rule: KeepLast 3, and the first point of each of the last
	// 24 hours.
	var old []Point
	seen := map[int]bool{}
	for i, p := range ps {
		h := p.Time.Hour()
		if i >= len(ps)-3 || !seen[h] {
			old = append(old, p)
		}
		seen[h] = true
	}
	keep, drop := Policy{KeepLast: 3, KeepHourly: 24}.Retain(old)
	newestHour := old[len(old)-1].Time.Truncate(time.Hour)
	for _, p := range drop {
		if p.Time.Truncate(time.Hour) != newestHour {
			t.Errorf("the new rule deletes %s, from a past hour, which the old one kept", p.ID)
		}
	}
	if len(keep)+len(drop) != len(old) || len(keep) < 12 {
		t.Fatalf("kept %v, deleted %v", ids(keep), ids(drop))
	}
	// And from then on the newest of each hour is what stays.
	next := append(slices.Clone(old), Point{ID: "new", Time: ps[len(ps)-1].Time.Add(50 * time.Minute)})
	keep, _ = Policy{KeepLast: 1, KeepHourly: 24}.Retain(next)
	hour := map[int]string{}
	for _, p := range keep {
		hour[p.Time.Hour()] = p.ID
	}
	if hour[17] != ps[len(ps)-1].ID {
		t.Fatalf("hour 17 keeps %s, want its newest %s (kept %v)", hour[17], ps[len(ps)-1].ID, ids(keep))
	}
}

func TestValidateCountsEveryRule(t *testing.T) {
	p := Policy{Interval: time.Hour, KeepLast: 10, KeepHourly: 24, KeepDaily: 30, KeepWeekly: 10, KeepMonthly: 12, KeepWithin: 48 * time.Hour}
	// 10 + 24 + 30 + 10 + 12 + (48 + 1) + 1 = 136 > 100
	if n := p.MaxPoints(); n != 136 {
		t.Fatalf("MaxPoints %d, want 136", n)
	}
	err := p.Validate(0, PremiumPageBlobQuota)
	if err == nil {
		t.Fatal("a policy keeping 136 points fits 100 snapshots?")
	}
	t.Log(err)
	if err := (Policy{KeepWithin: -time.Second}).Validate(0); err == nil {
		t.Fatal("negative keep-within accepted")
	}
}

// TestRetainThousandCycles runs 1,000 real cycles of a small image every
// 15 minutes on a fake clock (the points' times) with keep-last 3,
// keep-hourly 6, keep-daily 4, keep-weekly 2, and checks the points kept
// at the end against restic's documented forget behaviour, worked out by
// hand: the 3 newest; the newest of each of the last 6 hours; the newest
// of each of the last 4 days; the newest of each of the last 2 ISO weeks.
func TestRetainThousandCycles(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(71, 72))
	sp, tgt, dir := localPair(t, rng, 4096)
	t0 := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC) // a Monday
	now := t0
	clock := func() time.Time { return now }
	tgt.Now = clock
	src := openSource(t, sp)
	p := Policy{Interval: 15 * time.Minute, KeepLast: 3, KeepHourly: 6, KeepDaily: 4, KeepWeekly: 2}
	r, err := New(Config{Source: Quiesced(src, clock), Target: tgt, Policy: p, StateFile: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	f, err := os.OpenFile(sp, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range 1000 {
		now = t0.Add(time.Duration(i) * 15 * time.Minute)
		f.WriteAt([]byte{byte(i), byte(i >> 8)}, 0) // a change: each cycle cuts a point
		rep, err := r.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.PointKept {
			t.Fatalf("cycle %d kept a point though the source changed", i)
		}
		if n := len(r.Status().Points); n > p.MaxPoints() {
			t.Fatalf("cycle %d: %d points kept, over MaxPoints %d", i, n, p.MaxPoints())
		}
	}
	// The last point: 2026-03-12 09:45, a Thursday.
	at := func(day, h, m int) string { return time.Date(2026, 3, day, h, m, 0, 0, time.UTC).Format(pointLayout) }
	want := []string{
		at(8, 23, 45),                                 // weekly: the newest of the week before
		at(9, 23, 45), at(10, 23, 45), at(11, 23, 45), // daily: the newest of each earlier day
		at(12, 4, 45), at(12, 5, 45), at(12, 6, 45), at(12, 7, 45), at(12, 8, 45), // hourly
		at(12, 9, 15), at(12, 9, 30), at(12, 9, 45), // last 3 (09:45 is also hourly, daily, weekly)
	}
	var got []string
	for _, pt := range r.Status().Points {
		got = append(got, pt.ID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("kept %v\nwant %v", got, want)
	}
	// And on the target itself: exactly those point files.
	listed, err := tgt.ListPoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != len(want) {
		t.Fatalf("%d point files on the target, want %d", len(listed), len(want))
	}
}
