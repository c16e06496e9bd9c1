package pageblob

import (
	"bytes"
	"context"
	"sync"
	"testing"
)

// KeepPrior snapshots a blob that existed just before its first change,
// once however many writers start at the same time, and never a blob it
// created or one it does not change; RecoveryPoint marks its snapshot,
// and ListSnapshots tells the kinds apart.
func TestSnapshotKeepPriorAndRecoveryPoint(t *testing.T) {
	const size = 1 << 20
	ctx := context.Background()
	o, rec := testOptions(t)
	o.CreateSize, o.KeepPrior = size, true
	name := blobName(t)
	b, err := OpenTarget(ctx, az.BlobURL(testContainer, name), o)
	if err != nil {
		t.Fatal(err)
	}
	before := randBytes(size)
	if _, err := b.WriteAt(before, 0); err != nil {
		t.Fatal(err)
	}
	if id := b.PriorSnapshot(); id != "" || rec.Count("snapshot") != 0 {
		t.Fatalf("a blob OpenTarget created got a prior snapshot %q", id)
	}
	b.Close()

	// Opened again, unchanged: no snapshot.
	o2, rec2 := testOptions(t)
	o2.KeepPrior = true
	b, err = OpenTarget(ctx, az.BlobURL(testContainer, name), o2)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.AllocatedRanges(ctx, 0, size); err != nil {
		t.Fatal(err)
	}
	if b.PriorSnapshot() != "" || rec2.Count("snapshot") != 0 {
		t.Fatal("a snapshot was taken before any change")
	}
	// Eight writers at once: one snapshot, taken before any write.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.WriteAt(randBytes(64<<10), int64(i)*64<<10); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	prior := b.PriorSnapshot()
	if prior == "" || rec2.Count("snapshot") != 1 {
		t.Fatalf("prior snapshot %q after %d snapshot requests", prior, rec2.Count("snapshot"))
	}
	if err := b.ZeroRange(ctx, 0, 4096); err != nil || rec2.Count("snapshot") != 1 {
		t.Fatalf("a later change took another snapshot (%v)", err)
	}
	s, err := b.OpenSnapshot(ctx, prior)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := readAll(t, s, size); !bytes.Equal(got, before) {
		t.Fatal("the prior snapshot does not hold the blob as it was")
	}
	rp, err := b.RecoveryPoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := b.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, err := b.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, x := range list {
		kinds[x.ID] = x.Kind
	}
	if len(list) != 3 || kinds[prior] != KindPrior || kinds[rp] != KindRecoveryPoint || kinds[plain] != "" {
		t.Fatalf("snapshots %+v", list)
	}
}
