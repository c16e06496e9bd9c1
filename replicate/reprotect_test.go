package replicate

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// feedView is a local view whose changes since the common point come from
// a dirty-range feed (what a change tracker recorded since the failover).
type feedView struct {
	View
	common string
	feed   []disk.Range
}

func (v feedView) ChangedSince(ctx context.Context, id string) ([]disk.Range, error) {
	if id != v.common {
		return nil, ErrNoBase
	}
	return v.feed, nil
}

type feedTarget struct {
	*FileTarget
	common string
	feed   []disk.Range
}

func (t feedTarget) ChangedSince(ctx context.Context, id string) ([]disk.Range, error) {
	if id != t.common {
		return nil, ErrNoBase
	}
	return t.feed, nil
}

// TestReprotectLocalFeeds runs the reprotect scenario end to end on local
// files, with both sides' changes since the common point given by
// dirty-range feeds: only their union is read and sent; the original's
// prior state is kept; delta replication then runs hinted by a DirtyMap.
// The original missing (seed) and no common point (compare whole) are
// run too.
func TestReprotectLocalFeeds(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(21, 22))
	const size = 8 << 20
	secPath, _, dir := localPair(t, rng, size)
	base, _ := os.ReadFile(secPath)
	primPath := filepath.Join(dir, "primary.img")
	os.WriteFile(primPath, base, 0o644)

	// After the failover both sides changed: the secondary runs the
	// workload, the primary took a few writes before it went down.
	var secFeed, primFeed []disk.Range
	change := func(path string, feed *[]disk.Range, n int) {
		for range n {
			p := make([]byte, 4096*(1+rng.IntN(4)))
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			off := rng.Int64N(size/4096-4) * 4096
			writeFile(t, path, p, off, nil)
			*feed = append(*feed, disk.Range{Off: off, Len: int64(len(p))})
		}
	}
	change(secPath, &secFeed, 20)
	change(primPath, &primFeed, 5)
	priorPrim, _ := os.ReadFile(primPath)

	dm, err := OpenDirtyMap(filepath.Join(dir, "secondary.dirty"), size, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dm.Close()
	cs := &countingSource{Source: openSource(t, secPath)}
	q := Quiesced(cs, nil)
	src := FreezerFunc(func(ctx context.Context) (View, error) {
		v, err := q.Freeze(ctx)
		return feedView{View: v, common: "failover", feed: secFeed}, err
	})
	tgt := feedTarget{FileTarget: mustFileTarget(t, primPath, dir), common: "failover", feed: primFeed}
	rep, err := Reprotect(ctx, ReprotectConfig{
		Source: src,
		Target: tgt,
		Common: &CommonPoint{SourceID: "failover", TargetID: "failover"},
		// Blocks of 4 KiB, the writes' size: hints are widened to blocks.
		Replication: Config{Dirty: dm, Policy: Policy{KeepHourly: -1}, Transfer: &transfer.Options{BlockSize: 4096}},
		Cycles:      0,
	})
	if err != nil {
		t.Fatal(err)
	}
	union := UnionRanges(secFeed, primFeed)
	var unionBytes int64
	for _, r := range union {
		unionBytes += r.Len
	}
	for _, p := range rep.Phases {
		t.Logf("%-18s %8d bytes sent %8d read %v  %s", p.Name, p.Sent, p.Read, p.Duration, p.Detail)
	}
	distinct, outside := cs.distinct(union)
	diff := rep.Phases[2]
	if diff.Name != "differences" || !strings.Contains(diff.Detail, "union") || outside != 0 || distinct > unionBytes {
		t.Fatalf("differences: %+v; source read %d distinct bytes, %d outside the union of %d", diff, distinct, outside, unionBytes)
	}
	sec, _ := os.ReadFile(secPath)
	if got, _ := os.ReadFile(primPath); !bytes.Equal(got, sec) {
		t.Fatal("the original differs from the failed-over disk after the reprotect")
	}
	pointEquals(t, tgt, rep.PriorState.ID, priorPrim)

	// Delta replication, hinted by the dirty map from the first cycle.
	r := rep.Replicator
	for range 2 {
		p := make([]byte, 64<<10)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		writeFile(t, secPath, p, rng.Int64N(size/int64(len(p)))*int64(len(p)), dm)
		c, err := r.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c.Full || c.Hinted != int64(len(p)) {
			t.Fatalf("replication cycle: full=%v (%s), hinted %d", c.Full, c.Reason, c.Hinted)
		}
		sec, _ := os.ReadFile(secPath)
		pointEquals(t, tgt, c.Point.ID, sec)
	}

	// The original is missing: it is created and seeded.
	var created *FileTarget
	rep, err = Reprotect(ctx, ReprotectConfig{
		Source: Quiesced(openSource(t, secPath), nil),
		Create: func(ctx context.Context, size int64) (Target, error) {
			d, err := localdisk.OpenTarget(filepath.Join(dir, "new-primary.img"), localdisk.TargetOptions{Create: true})
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { d.Close() })
			created = &FileTarget{Disk: d, Dir: dir}
			return created, nil
		},
		Replication: Config{Policy: Policy{KeepHourly: -1}},
		Cycles:      1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Seeded || rep.Phases[1].Name != "seed" || rep.Phases[1].Sent == 0 {
		t.Fatalf("seed: %+v", rep.Phases)
	}
	sec, _ = os.ReadFile(secPath)
	if got, _ := os.ReadFile(created.Path()); !bytes.Equal(got, sec) {
		t.Fatal("the seeded original differs")
	}
	// No common point: both disks are compared whole.
	rep, err = Reprotect(ctx, ReprotectConfig{Source: Quiesced(openSource(t, secPath), nil), Target: created})
	if err != nil {
		t.Fatal(err)
	}
	if d := rep.Phases[2]; !strings.Contains(d.Detail, "compared whole") || d.Sent != 0 {
		t.Fatalf("no common point: %+v", d)
	}
}

// TestCommonHintsNoBase: when either side's common point is gone (its
// diff says ErrNoBase, as a page blob's 409 PreviousSnapshotNotFound
// does, see replicate/blob), nothing is trusted: both disks are compared
// whole. With both present, the hints are the union of both sides.
func TestCommonHintsNoBase(t *testing.T) {
	ctx := context.Background()
	v := feedView{common: "s", feed: []disk.Range{{Off: 0, Len: 4096}}}
	tg := feedTarget{common: "t", feed: []disk.Range{{Off: 2048, Len: 4096}}}
	h, detail := commonHints(ctx, v, tg, &CommonPoint{SourceID: "s", TargetID: "t"})
	if len(h) != 1 || h[0] != (disk.Range{Off: 0, Len: 6144}) {
		t.Fatalf("both present: %v (%s)", h, detail)
	}
	for _, cp := range []CommonPoint{{SourceID: "gone", TargetID: "t"}, {SourceID: "s", TargetID: "gone"}} {
		h, detail := commonHints(ctx, v, tg, &cp)
		if h != nil || !strings.Contains(detail, "compared whole") {
			t.Fatalf("common point %+v: hints %v (%s), want none", cp, h, detail)
		}
	}
}
