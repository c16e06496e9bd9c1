package transfer

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/deltasync/deltasync/disk"
)

// TestSyncHints: with hints, only the hinted ranges are compared and
// written; a change outside them is (by the caller's promise) not seen.
func TestSyncHints(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	const bs = 4096
	src := randImage(rng, 1<<20, bs)
	old := bytes.Clone(src)
	old[10] ^= 1          // outside the hints: left alone
	old[512<<10+100] ^= 1 // inside
	d := newMemDisk(old, "dst")
	st, err := Sync(context.Background(), newMemDisk(bytes.Clone(src), "src"), d,
		&Options{BlockSize: bs, Hints: []disk.Range{{Off: 512 << 10, Len: 4096}}, Journal: &MemStore{}})
	if err != nil {
		t.Fatal(err)
	}
	got := d.Bytes()
	if got[512<<10+100] != src[512<<10+100] || got[10] == src[10] {
		t.Fatalf("hinted byte fixed: %v; unhinted byte left: %v", got[512<<10+100] == src[512<<10+100], got[10] != src[10])
	}
	if st.Compared != 4096 || st.Written+st.Zeroed != 4096 {
		t.Fatalf("stats %+v", st)
	}
}
