package blob

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/deltasync/deltasync/replicate"
)

// lostAnswer is a target whose next cut's answer is lost: the snapshot
// is made, the replicator is told it failed.
type lostAnswer struct {
	Target
	lose atomic.Bool
}

func (l *lostAnswer) CreatePoint(ctx context.Context) (replicate.Point, error) {
	p, err := l.Target.CreatePoint(ctx)
	if err == nil && l.lose.CompareAndSwap(true, false) {
		return replicate.Point{}, errors.New("the answer to Snapshot Blob was lost")
	}
	return p, err
}

// TestOrphanPointDeleted: a cut whose answer is lost leaves a snapshot no
// state names; the next cycle, in a new process, deletes it, and leaves
// every other snapshot: the committed points, an owned point older than
// the lost cut, another replication's point and a snapshot of the
// user's. Read back with List Blobs (pageblob.ListSnapshots).
func TestOrphanPointDeleted(t *testing.T) {
	ctx := context.Background()
	s := azuriteFor(t)
	const size = 4 << 20
	rng := rand.New(rand.NewPCG(61, 62))
	src := newBlob(t, s, "orphan-src", size)
	mutate(t, rng, src, size, 20)
	dst := newBlob(t, s, "orphan-dst", size)
	state := filepath.Join(t.TempDir(), "state")
	early, err := dst.RecoveryPointOf(ctx, "vm1") // an owned point no state names, from before
	if err != nil {
		t.Fatal(err)
	}
	la := &lostAnswer{Target: Target{Blob: dst, Owner: "vm1"}}
	cfg := replicate.Config{Name: "vm1", Source: Freezer{src}, Target: la, Policy: replicate.Policy{KeepLast: 5, KeepHourly: -1}, StateFile: state}
	r, err := replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep1, err := r.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	user, err := dst.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other, err := dst.RecoveryPointOf(ctx, "vm2")
	if err != nil {
		t.Fatal(err)
	}
	mutate(t, rng, src, size, 5)
	la.lose.Store(true)
	if _, err := r.Cycle(ctx); err == nil {
		t.Fatal("the cycle whose cut's answer was lost succeeded")
	}
	before, _ := dst.ListSnapshots(ctx)
	r.Close(ctx)

	// A new process: its first cycle finds and deletes the orphan.
	cfg.Target = Target{Blob: dst, Owner: "vm1"}
	r, err = replicate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep3, err := r.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	after, err := dst.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := func(ss []string) []string { slices.Sort(ss); return ss }
	var was, now []string
	for _, x := range before {
		was = append(was, x.ID)
	}
	for _, x := range after {
		now = append(now, x.ID)
	}
	var orphan string
	for _, id := range was {
		if !slices.Contains([]string{early, rep1.Point.ID, user, other}, id) {
			orphan = id
		}
	}
	if orphan == "" || len(was) != 5 {
		t.Fatalf("before: %v, want 5 snapshots with one orphan", was)
	}
	if len(rep3.Orphans) != 1 || rep3.Orphans[0].ID != orphan {
		t.Fatalf("the cycle deleted orphans %v, want %s", rep3.Orphans, orphan)
	}
	want := ids([]string{early, rep1.Point.ID, user, other, rep3.Point.ID})
	if !slices.Equal(ids(now), want) {
		t.Fatalf("after: %v, want %v (the orphan %s gone, nothing else)", now, want, orphan)
	}
	if rep3.Warning != nil {
		t.Fatalf("warning: %v", rep3.Warning)
	}
}
