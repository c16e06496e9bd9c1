package replicate

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/disk"
)

// TestMissedHintCaught: a write the dirty-range feed missed (simulated)
// is not seen by hinted cycles, and is repaired by the rules the package
// doc names: the periodic scrub, an unclean stop of the dirty map, and a
// dirty map restored from an older generation.
func TestMissedHintCaught(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 8))
	const size = 4 << 20
	sp, tgt, dir := localPair(t, rng, size)
	mapPath := filepath.Join(dir, "source.dirty")
	dm, err := OpenDirtyMap(mapPath, size, 0)
	if err != nil {
		t.Fatal(err)
	}
	src := openSource(t, sp)
	newRep := func(m *DirtyMap) *Replicator {
		r, err := New(Config{Source: Quiesced(src, nil), Target: tgt, Dirty: m,
			Policy: Policy{KeepLast: 10, KeepHourly: -1, ScrubEvery: 3}, StateFile: filepath.Join(dir, "state")})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := newRep(dm)
	cycle := func(wantFull bool, why string) CycleReport {
		t.Helper()
		rep, err := r.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Full != wantFull || (why != "" && !strings.Contains(rep.Reason, why)) {
			t.Fatalf("cycle %d: full %v (%s), want %v (%s)", rep.Cycle, rep.Full, rep.Reason, wantFull, why)
		}
		t.Logf("cycle %d: full=%v %s: hinted %d, compared %d, sent %d", rep.Cycle, rep.Full, rep.Reason, rep.Hinted, rep.Stats.Compared, rep.Bytes())
		return rep
	}
	same := func() bool {
		s, _ := os.ReadFile(sp)
		d, _ := os.ReadFile(tgt.Path())
		return bytes.Equal(s, d)
	}
	cycle(true, "first cycle")
	writeFile(t, sp, []byte("marked"), 1<<20, dm)
	writeFile(t, sp, []byte("missed"), 3<<20, nil) // the feed missed it
	rep := cycle(false, "dirty map")
	if rep.Hinted != DefaultGrain || same() {
		t.Fatalf("hinted %d; target equal to source: %v (the missed write should still differ)", rep.Hinted, same())
	}
	cycle(false, "dirty map")
	rep = cycle(true, "scrub")
	if !same() || rep.Stats.Written == 0 {
		t.Fatal("the scrub did not repair the missed write")
	}

	// Unclean stop: the process dies (no Close of the dirty map, no
	// Close of the replicator); a new process opens both again.
	writeFile(t, sp, []byte("missed again"), 2<<20, nil)
	dm2, err := OpenDirtyMap(mapPath, size, 0)
	if err != nil {
		t.Fatal(err)
	}
	r = newRep(dm2)
	cycle(true, "unclean stop")
	if !same() {
		t.Fatal("the full cycle after an unclean stop did not repair the missed write")
	}

	// A clean stop; later a dirty map file restored from that older
	// (clean) copy: the state's record of the generation catches it.
	writeFile(t, sp, []byte("x"), 100, dm2)
	cycle(false, "dirty map")
	r.Close(ctx)
	dm2.Close()
	old, _ := os.ReadFile(mapPath)
	dm3, err := OpenDirtyMap(mapPath, size, 0)
	if err != nil {
		t.Fatal(err)
	}
	r = newRep(dm3)
	writeFile(t, sp, []byte("y"), 200, dm3)
	cycle(false, "dirty map")
	r.Close(ctx)
	dm3.Close()
	os.WriteFile(mapPath, old, 0o644) // older generation, same epoch, clean
	writeFile(t, sp, []byte("missed a third time"), 3<<20+5000, nil)
	dm3, err = OpenDirtyMap(mapPath, size, 0)
	if err != nil {
		t.Fatal(err)
	}
	r = newRep(dm3)
	cycle(true, "older than the last cycle's")
	if !same() {
		t.Fatal("not repaired after restoring an old dirty map")
	}
	dm3.Close()
}

// TestHintedCycleReadsOnlyHints is the acceptance check, small: on the
// 1% case with a dirty-range feed, a cycle reads from the source only the
// hinted ranges (and the target only the same), and sends only them.
// BenchmarkCycleHinted and BenchmarkCycleFull measure the speed on 1 GiB.
func TestHintedCycleReadsOnlyHints(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(9, 10))
	const size = 32 << 20
	sp, tgt, dir := localPair(t, rng, size)
	dm, err := OpenDirtyMap(filepath.Join(dir, "dirty"), size, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dm.Close()
	cs := &countingSource{Source: openSource(t, sp)}
	r, err := New(Config{Source: Quiesced(cs, nil), Target: tgt, Dirty: dm, Policy: Policy{KeepHourly: -1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	// 1% of the disk in 64 KiB writes (the map's grain and the block
	// size: hints are widened to both) at random places.
	p := make([]byte, 64<<10)
	var marked []disk.Range
	for range size / 100 / len(p) {
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		off := rng.Int64N(size/int64(len(p))) * int64(len(p))
		writeFile(t, sp, p, off, dm)
		marked = append(marked, disk.Range{Off: off, Len: int64(len(p))})
	}
	cs.reset()
	rep, err := r.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	distinct, outside := cs.distinct(UnionRanges(marked))
	t.Logf("hinted cycle: hinted %d bytes (%.2f%%); source: %d distinct bytes read, %d outside the hints, %d reads in all (compare, then copy: the copy's reread comes from the page cache); target read %d; sent %d; sync %v",
		rep.Hinted, 100*float64(rep.Hinted)/size, distinct, outside, cs.n.Load(), rep.Stats.TargetRead, rep.Bytes(), rep.Sync)
	if rep.Full || outside != 0 || distinct > rep.Hinted || rep.Stats.TargetRead > rep.Hinted {
		t.Fatalf("read %d distinct source bytes, %d outside the hints, target %d, for %d hinted", distinct, outside, rep.Stats.TargetRead, rep.Hinted)
	}
	s, _ := os.ReadFile(sp)
	pointEquals(t, tgt, rep.Point.ID, s)
}

// benchCycle runs cycles on a disk of size bytes with 1% changed between
// them, hinted by a dirty map or compared whole.
func benchCycle(b *testing.B, hinted bool) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	dir := b.TempDir()
	sp := filepath.Join(dir, "source.img")
	f, err := os.Create(sp)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		for i := 0; i < len(buf); i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				buf[i+k] = byte(v >> (8 * k))
			}
		}
		f.WriteAt(buf, off)
	}
	f.Close()
	tgt := mustFileTarget(b, filepath.Join(dir, "target.img"), dir)
	var dm *DirtyMap
	if hinted {
		dm, err = OpenDirtyMap(filepath.Join(dir, "dirty"), size, 0)
		if err != nil {
			b.Fatal(err)
		}
	}
	src := mustSource(b, sp)
	cs := &countingSource{Source: src}
	// Points are a target's business (a copy on ext4, a reflink on XFS):
	// the benchmark measures the cycle's comparison and copy.
	r, err := New(Config{Source: Quiesced(cs, nil), Target: noPoints{tgt}, Dirty: dm, Policy: Policy{KeepHourly: -1, ScrubEvery: -1}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.Cycle(ctx); err != nil {
		b.Fatal(err)
	}
	w, _ := os.OpenFile(sp, os.O_WRONLY, 0)
	defer w.Close()
	p := make([]byte, 64<<10)
	b.SetBytes(size)
	b.ResetTimer()
	var hintedBytes, read, sent int64
	for b.Loop() {
		b.StopTimer()
		for range size / 100 / int64(len(p)) {
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			off := rng.Int64N(size/int64(len(p))) * int64(len(p))
			w.WriteAt(p, off)
			if dm != nil {
				dm.Mark(off, int64(len(p)))
			}
		}
		cs.reset()
		b.StartTimer()
		rep, err := r.Cycle(ctx)
		if err != nil {
			b.Fatal(err)
		}
		hintedBytes, read, sent = rep.Hinted, cs.n.Load(), rep.Bytes()
	}
	b.ReportMetric(float64(read)/float64(size)*100, "%read")
	b.Logf("size %d: hinted %d, source read %d, sent %d", size, hintedBytes, read, sent)
}

func BenchmarkCycleHinted(b *testing.B) { benchCycle(b, true) }
func BenchmarkCycleFull(b *testing.B)   { benchCycle(b, false) }

// noPoints is a target whose points cost nothing (for benchmarks).
type noPoints struct{ *FileTarget }

func (noPoints) CreatePoint(context.Context) (Point, error) {
	return Point{ID: time.Now().UTC().Format(pointLayout), Time: time.Now()}, nil
}
func (noPoints) DeletePoint(context.Context, string) error { return nil }

var _ disk.Target = noPoints{}
