package blob

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/deltasync/deltasync/replicate"

	"github.com/deltasync/deltasync/pageblob"
)

// TestCyclesPageBlob: five cycles from snapshots of a source page blob to
// a target page blob, with random writes and clears between them. Every
// recovery point kept restores to the source as it was frozen, retention
// deletes exactly the points the policy drops, and the source keeps only
// the snapshot that is the base of the next diff.
func TestCyclesPageBlob(t *testing.T) {
	s := azuriteFor(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(11, 12))
	const size = 4 << 20
	src := newBlob(t, s, "src", size)
	mutate(t, rng, src, size, 40)
	tb := newBlob(t, s, "dst", size)
	tgt := Target{Blob: tb}
	r, err := replicate.New(replicate.Config{Source: Freezer{src}, Target: tgt,
		Policy: replicate.Policy{KeepLast: 3, KeepHourly: -1}, Quotas: []replicate.Quota{replicate.PremiumPageBlobQuota}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	var made []replicate.Point
	for i := range 5 {
		if i > 0 {
			mutate(t, rng, src, size, 10)
		}
		before := readAll(t, src)
		rep, err := r.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("cycle %d: full=%v (%s) hinted %d sent %d in %v", rep.Cycle, rep.Full, rep.Reason, rep.Hinted, rep.Bytes(), rep.Elapsed)
		if i > 0 && (rep.Full || rep.Reason != "snapshot diff") {
			t.Fatalf("cycle %d not hinted by the snapshot diff: %s", rep.Cycle, rep.Reason)
		}
		want[rep.Point.ID] = before
		made = append(made, rep.Point)
		// Retention: the three newest are kept, exactly.
		if n := len(made); n > 3 {
			if len(rep.Deleted) != 1 || rep.Deleted[0].ID != made[n-4].ID {
				t.Fatalf("cycle %d deleted %v, want %s", rep.Cycle, rep.Deleted, made[n-4].ID)
			}
		} else if len(rep.Deleted) != 0 {
			t.Fatalf("cycle %d deleted %v", rep.Cycle, rep.Deleted)
		}
	}
	listed, err := tgt.ListPoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range listed {
		ids = append(ids, p.ID)
	}
	wantIDs := []string{made[2].ID, made[3].ID, made[4].ID}
	if !slices.Equal(ids, wantIDs) {
		t.Fatalf("target snapshots %v, want %v", ids, wantIDs)
	}
	for _, id := range ids {
		pointEquals(t, tgt, id, want[id])
	}
	st := r.Status()
	if st.Cycles != 5 || len(st.Points) != 3 || st.LastError != nil || st.Lag <= 0 {
		t.Fatalf("status %+v", st)
	}
	ss, err := src.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 1 || ss[0].ID != made[4].View {
		t.Fatalf("source snapshots %v, want only the base %s", ss, made[4].View)
	}
}

// cancelTarget cancels the cycle's context at its k-th write.
type cancelTarget struct {
	Target
	k      int64
	n      atomic.Int64
	cancel context.CancelFunc
}

func (c *cancelTarget) WriteAt(p []byte, off int64) (int, error) {
	if c.n.Add(1) == c.k {
		c.cancel()
		return 0, context.Canceled
	}
	return c.Target.WriteAt(p, off)
}

// WriteAtContext hides the blob's own: the engine prefers it to WriteAt.
func (c *cancelTarget) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return c.WriteAt(p, off)
}

// TestKillMidCycle: a cycle killed at a random write (its context
// cancelled) leaves no recovery point; the next cycle completes, and its
// point restores to the source as it was frozen.
func TestKillMidCycle(t *testing.T) {
	s := azuriteFor(t)
	rng := rand.New(rand.NewPCG(13, 14))
	const size = 4 << 20
	src := newBlob(t, s, "src", size)
	mutate(t, rng, src, size, 30)
	ct := &cancelTarget{Target: Target{Blob: newBlob(t, s, "dst", size)}}
	r, err := replicate.New(replicate.Config{Source: Freezer{src}, Target: ct, Policy: replicate.Policy{KeepHourly: -1},
		Transfer: nil})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Cycle(context.Background()); err != nil {
		t.Fatal(err)
	}
	mutate(t, rng, src, size, 30)
	ctx, cancel := context.WithCancel(context.Background())
	ct.n.Store(0)
	ct.k, ct.cancel = 1+rng.Int64N(5), cancel
	rep, err := r.Cycle(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("killed cycle: %v", err)
	}
	t.Logf("killed at write %d: %v", ct.k, err)
	if rep.Point.ID != "" {
		t.Fatal("a killed cycle cut a point")
	}
	if st := r.Status(); st.Failed != 1 || st.LastError == nil || len(st.Points) != 1 {
		t.Fatalf("status after the kill: %+v", st)
	}
	mutate(t, rng, src, size, 5)
	before := readAll(t, src)
	ct.k = 0
	rep, err = r.Cycle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("next cycle: full=%v (%s) hinted %d sent %d", rep.Full, rep.Reason, rep.Hinted, rep.Bytes())
	pointEquals(t, ct, rep.Point.ID, before)
	if ss, _ := src.ListSnapshots(context.Background()); len(ss) != 1 {
		t.Fatalf("the killed cycle's source snapshot was not released: %d snapshots", len(ss))
	}
}

// TestGroupPageBlobs: three disks written by one writer that stamps a
// generation on all three at once; the group freezes them together (the
// writer paused), and every manifest's points restore to the sources as
// frozen, all three of one generation.
func TestGroupPageBlobs(t *testing.T) {
	s := azuriteFor(t)
	ctx := context.Background()
	const size = 1 << 20
	var srcs []*pageblob.Blob
	var fs []replicate.Freezer
	var ms []replicate.Member
	names := []string{"os", "data1", "data2"}
	for _, n := range names {
		b := newBlob(t, s, "src-"+n, size)
		srcs = append(srcs, b)
		fs = append(fs, Freezer{b})
		ms = append(ms, replicate.Member{Name: n, Target: Target{Blob: newBlob(t, s, "dst-"+n, size)}})
	}
	// The writer: each step writes generation g at a random place of
	// every disk, and at offset 0 of each.
	var mu sync.Mutex
	gen := 0
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(15, 16))
		for {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			gen++
			p := bytes.Repeat([]byte{byte(gen)}, 512)
			for _, b := range srcs {
				b.WriteAt(p, 0)
				b.WriteAt(p, (1+rng.Int64N(size/512-1))*512)
			}
			mu.Unlock()
		}
	}()
	frozen := map[string][]byte{} // disk/point -> content when frozen
	pause := func(ctx context.Context) (func(), error) {
		mu.Lock()
		for i, b := range srcs {
			frozen[names[i]] = readAll(t, b)
		}
		return mu.Unlock, nil
	}
	g, err := replicate.NewGroup(replicate.GroupConfig{Members: ms, Freezer: replicate.FreezeTogether(pause, fs...),
		Manifests: replicate.DirManifests{Dir: t.TempDir()}, Policy: replicate.Policy{KeepLast: 2, KeepHourly: -1}})
	if err != nil {
		t.Fatal(err)
	}
	contents := map[string][]byte{}
	for range 3 {
		rep, err := g.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range rep.Manifest.Disks {
			contents[d.Name+"/"+d.Point] = frozen[names[i]]
		}
		t.Logf("manifest %s: %d disks, deleted %d manifests", rep.Manifest.ID, len(rep.Manifest.Disks), len(rep.Deleted))
	}
	close(stop)
	<-done
	st := g.Status()
	if len(st.Manifests) != 2 || st.LastError != nil {
		t.Fatalf("group status: %d manifests, %v", len(st.Manifests), st.LastError)
	}
	for _, m := range st.Manifests {
		stamp := -1
		for i, d := range m.Disks {
			want := contents[d.Name+"/"+d.Point]
			pointEquals(t, ms[i].Target, d.Point, want)
			if stamp >= 0 && int(want[0]) != stamp {
				t.Fatalf("manifest %s: disk %s is at generation %d, another at %d", m.ID, d.Name, want[0], stamp)
			}
			stamp = int(want[0])
		}
	}
	// The points of the deleted manifest are gone; three per disk were
	// made, two kept.
	for i, d := range st.Disks {
		if len(d.Points) != 2 {
			t.Fatalf("disk %s keeps %d points", d.Disk, len(d.Points))
		}
		listed, _ := ms[i].Target.ListPoints(ctx)
		if len(listed) != 2 {
			t.Fatalf("disk %s has %d snapshots", d.Disk, len(listed))
		}
	}
}
