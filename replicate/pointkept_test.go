package replicate

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/deltasync/deltasync/disk"
)

// noVersion hides a FileTarget's Versioner: nothing proves its newest
// point current.
type noVersion struct {
	disk.Target
	Points
}

// TestPointKeptOnlyWithEvidence: a cycle that changes nothing keeps the
// newest point instead of cutting one, but only while the target's
// version proves nobody wrote it since that point; a target written
// behind the replicator's back, or without a version, gets a new point.
func TestPointKeptOnlyWithEvidence(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(31, 32))
	sp, tgt, dir := localPair(t, rng, 2<<20)
	src := openSource(t, sp)
	r, err := New(Config{Source: Quiesced(src, nil), Target: tgt, Policy: Policy{KeepLast: 10, KeepHourly: -1},
		StateFile: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	cycle := func(wantKept bool) CycleReport {
		t.Helper()
		rep, err := r.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.PointKept != wantKept {
			t.Fatalf("cycle %d: point kept %v (%s), want %v", rep.Cycle, rep.PointKept, rep.PointReason, wantKept)
		}
		return rep
	}
	first := cycle(false)
	second := cycle(true)
	if second.Point.ID != first.Point.ID || len(r.Status().Points) != 1 {
		t.Fatalf("the unchanged cycle's point %s, want %s; %d points", second.Point.ID, first.Point.ID, len(r.Status().Points))
	}
	if r.Status().LastFrozen != second.Started {
		t.Fatal("the status's freeze time is not the unchanged cycle's: the lag would grow while the point is current")
	}
	// Someone writes the target and puts the bytes back: its content is
	// the source's again, so the sync writes nothing, but the version
	// moved: the point may not stand for the target.
	f, err := os.OpenFile(tgt.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	old := make([]byte, 8)
	f.ReadAt(old, 1000)
	f.WriteAt([]byte("scribble"), 1000)
	f.WriteAt(old, 1000)
	f.Close()
	third := cycle(false)
	if third.Bytes() != 0 || len(r.Status().Points) != 2 {
		t.Fatalf("after a write behind its back: sent %d, %d points", third.Bytes(), len(r.Status().Points))
	}
	cycle(true)
	r.Close(ctx)

	// A new process keeps the evidence in its state file.
	r, err = New(Config{Source: Quiesced(src, nil), Target: tgt, Policy: Policy{KeepLast: 10, KeepHourly: -1},
		StateFile: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	cycle(true)
	r.Close(ctx)

	// No version, no evidence: every cycle cuts a point.
	r, err = New(Config{Source: Quiesced(src, nil), Target: noVersion{tgt, tgt}, Policy: Policy{KeepLast: 10, KeepHourly: -1}})
	if err != nil {
		t.Fatal(err)
	}
	cycle(false)
	if rep := cycle(false); rep.PointReason == "" {
		t.Fatal("no reason given for the point cut")
	}
	// The policy can ask for a point every cycle.
	r, err = New(Config{Source: Quiesced(src, nil), Target: tgt, Policy: Policy{KeepLast: 10, KeepHourly: -1, PointEveryCycle: true}})
	if err != nil {
		t.Fatal(err)
	}
	cycle(false)
	cycle(false)
	s, _ := os.ReadFile(sp)
	d, _ := os.ReadFile(tgt.Path())
	if !bytes.Equal(s, d) {
		t.Fatal("target differs")
	}
}

// freezeWrite is a Freezer whose source is written, marked first (the
// writer's rule: mark, then write), after the replicator took the dirty
// map and before the view is frozen: the write is in the view.
type freezeWrite struct {
	Freezer
	write func()
}

func (f freezeWrite) Freeze(ctx context.Context) (View, error) {
	f.write()
	return f.Freezer.Freeze(ctx)
}

// TestDirtyMarkBetweenTakeAndFreeze: a write marked after the dirty map
// was taken but done before the freeze is in the view, so the hinted
// cycle must compare it (its point must be its view), and the next cycle
// compares it again.
func TestDirtyMarkBetweenTakeAndFreeze(t *testing.T) {
	ctx := context.Background()
	sp, tgt, _, dm := dirtyPair(t, 81, 4<<20)
	src := openSource(t, sp)
	armed := false
	fw := freezeWrite{Freezer: Quiesced(src, nil), write: func() {
		if armed {
			writeFile(t, sp, []byte("written between the take and the freeze"), 3<<20, dm)
		}
	}}
	r, err := New(Config{Source: fw, Target: tgt, Dirty: dm, Policy: Policy{KeepHourly: -1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Cycle(ctx); err != nil { // full: a new map
		t.Fatal(err)
	}
	writeFile(t, sp, []byte("marked before the take"), 1<<20, dm)
	armed = true
	rep, err := r.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Full {
		t.Fatalf("cycle 2 compared everything (%s): the test needs a hinted one", rep.Reason)
	}
	s, _ := os.ReadFile(sp)
	pointEquals(t, tgt, rep.Point.ID, s) // the point is its view
	// The late mark stays for the next cycle.
	armed = false
	rep, err = r.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Hinted == 0 {
		t.Fatal("the mark made after the take was forgotten by the next cycle")
	}
}

// TestHintsNeedAnUnchangedTarget: hints say what changed in the source;
// a target written behind the replicator's back between hinted cycles
// makes the next cycle compare everything (and repair it), and a newest
// point deleted by someone else is not "kept".
func TestHintsNeedAnUnchangedTarget(t *testing.T) {
	ctx := context.Background()
	sp, tgt, dir, dm := dirtyPair(t, 83, 4<<20)
	r, err := New(Config{Source: Quiesced(openSource(t, sp), nil), Target: tgt, Dirty: dm, Policy: Policy{KeepHourly: -1}, StateFile: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	cycle := func() CycleReport {
		t.Helper()
		rep, err := r.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	cycle() // full: a new map
	writeFile(t, sp, []byte("fed"), 1<<20, dm)
	if rep := cycle(); rep.Full {
		t.Fatalf("a fed cycle compared everything: %s", rep.Reason)
	}
	f, _ := os.OpenFile(tgt.Path(), os.O_RDWR, 0)
	f.WriteAt([]byte("scribble"), 2<<20)
	f.Close()
	writeFile(t, sp, []byte("fed again"), 3<<20, dm)
	rep := cycle()
	if !rep.Full || rep.Reason != "the target was written since the last cycle" {
		t.Fatalf("after the target was written: full %v (%s)", rep.Full, rep.Reason)
	}
	s, _ := os.ReadFile(sp)
	pointEquals(t, tgt, rep.Point.ID, s)
	// The newest point deleted behind its back: an unchanged cycle cuts
	// a new one instead of keeping a point that is gone.
	if err := tgt.DeletePoint(ctx, rep.Point.ID); err != nil {
		t.Fatal(err)
	}
	rep = cycle()
	if rep.PointKept || rep.PointReason == "" {
		t.Fatalf("kept the deleted point %s (%s)", rep.Point.ID, rep.PointReason)
	}
	pointEquals(t, tgt, rep.Point.ID, s)
}

// ownedTarget is a FileTarget that claims the given points as owned.
type ownedTarget struct {
	*FileTarget
	owned   []Point
	deleted []string
}

func (o *ownedTarget) OwnedPoints(context.Context) ([]Point, error) { return o.owned, nil }
func (o *ownedTarget) DeletePoint(ctx context.Context, id string) error {
	o.deleted = append(o.deleted, id)
	return nil
}

// TestOrphanWindow: only owned points taken within the skew of the
// unrecorded cut's start are orphans; an older state restored with a
// cut under way does not delete the points cut since.
func TestOrphanWindow(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(85, 86))
	_, tgt, _ := localPair(t, rng, 4096)
	cut := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ot := &ownedTarget{FileTarget: tgt, owned: []Point{
		{ID: "committed", Time: cut.Add(-time.Hour)},
		{ID: "orphan", Time: cut.Add(2 * time.Second)},
		{ID: "cut-an-hour-later", Time: cut.Add(time.Hour)},
		{ID: "a-day-before", Time: cut.Add(-24 * time.Hour)},
	}}
	d := &member{name: "disk", target: ot}
	d.st.Points = []Point{{ID: "committed", Time: cut.Add(-time.Hour)}}
	d.st.Cutting = cut
	gone, err := d.reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 1 || gone[0].ID != "orphan" || !slices.Equal(ot.deleted, []string{"orphan"}) {
		t.Fatalf("deleted %v, want only the orphan", ot.deleted)
	}
	if !d.st.Cutting.IsZero() {
		t.Fatal("the cut under way is still recorded after the reconciliation")
	}
}

// dirtyPair is localPair with a new dirty map of the source, closed at
// the end of the test.
func dirtyPair(t *testing.T, seed uint64, size int64) (string, *FileTarget, string, *DirtyMap) {
	t.Helper()
	sp, tgt, dir := localPair(t, rand.New(rand.NewPCG(seed, seed+1)), size)
	dm, err := OpenDirtyMap(filepath.Join(dir, "dirty"), size, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dm.Close() })
	return sp, tgt, dir, dm
}
