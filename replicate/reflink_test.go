package replicate

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/internal/xfstest"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// xfsDir is xfstest.Dir with room for two 256 MiB images.
func xfsDir(t testing.TB) string { return xfstest.Dir(t, 2<<30) }

// TestReflinkFreezer replicates an image on XFS frozen by reflink
// copies, to a FileTarget on the same filesystem (whose points are
// reflinks too), writing the source between cycles: each view holds the
// source as it was at its freeze, released views are deleted, and the
// target ends identical.
func TestReflinkFreezer(t *testing.T) {
	ctx := context.Background()
	dir := xfsDir(t)
	rng := rand.New(rand.NewPCG(41, 42))
	sp := filepath.Join(dir, "vm1.img")
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(sp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fr, err := NewReflinkFreezer(sp, "")
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()

	// A view does not see writes made after its freeze.
	v, err := fr.Freeze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(sp, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteAt(bytes.Repeat([]byte{0xAB}, 4096), 1<<20)
	got := make([]byte, 4096)
	if _, err := v.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data[1<<20:1<<20+4096]) {
		t.Fatalf("the view sees a write made after its freeze (%v)", err)
	}
	if err := v.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if views, _ := filepath.Glob(filepath.Join(dir, ".vm1.img.view-*")); len(views) != 0 {
		t.Fatalf("a released view is left: %v", views)
	}

	d, err := localdisk.OpenTarget(filepath.Join(dir, "replica.img"), localdisk.TargetOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r, err := New(Config{Source: fr, Target: &FileTarget{Disk: d}, Policy: Policy{KeepLast: 2, KeepHourly: -1}, StateFile: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, err := f.WriteAt(bytes.Repeat([]byte{byte(i)}, 8192), int64(i)<<20+512); err != nil {
			t.Fatal(err)
		}
		rep, err := r.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("cycle %d: view %s, sent %d", rep.Cycle, rep.View, rep.Bytes())
		s, _ := os.ReadFile(sp)
		tg, _ := os.ReadFile(d.Path())
		if !bytes.Equal(s, tg) {
			t.Fatalf("cycle %d: the target differs from the source", rep.Cycle)
		}
	}
	// The base view of the next cycle is kept; the others are gone.
	if views, _ := filepath.Glob(filepath.Join(dir, ".vm1.img.view-*")); len(views) != 1 {
		t.Fatalf("views left: %v, want the base only", views)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestReflinkRefusedWithoutReflinks: on a filesystem without reflinks
// (ext4, tmpfs) the freezer says so, and no trial copy is left.
func TestReflinkRefusedWithoutReflinks(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.XFS_SUPER_MAGIC || st.Type == unix.BTRFS_SUPER_MAGIC {
		t.Skip("the temporary folder's filesystem has reflinks")
	}
	sp := filepath.Join(dir, "vm1.img")
	os.WriteFile(sp, make([]byte, 1<<20), 0o644)
	_, err := NewReflinkFreezer(sp, "")
	if !errors.Is(err, ErrNoReflink) || !strings.Contains(err.Error(), "XFS") {
		t.Fatalf("got %v, want ErrNoReflink saying what to use", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".vm1.img.view-*")); len(left) != 0 {
		t.Fatalf("left %v", left)
	}
}

// TestReflinkChangeHints: cycles after the first are hinted by the two
// views' extent maps: only the blocks written since are compared and
// sent, every write is covered (random writes, checked against the
// ranges written), and the target ends identical; a scrub still
// compares everything.
func TestReflinkChangeHints(t *testing.T) {
	ctx := context.Background()
	dir := xfsDir(t)
	rng := rand.New(rand.NewPCG(43, 44))
	sp := filepath.Join(dir, "vm1.img")
	const size = 32 << 20
	data := make([]byte, size)
	for i := range data[:size/2] { // half data, half a hole
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(sp, data[:size/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(sp, size); err != nil {
		t.Fatal(err)
	}
	fr, err := NewReflinkFreezer(sp, "")
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	d, err := localdisk.OpenTarget(filepath.Join(dir, "replica.img"), localdisk.TargetOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sigs := filepath.Join(t.TempDir(), "sigs")
	ft := &FileTarget{Disk: d, Dir: t.TempDir()}
	r, err := New(Config{Source: fr, Target: ft, Policy: Policy{KeepLast: 2, KeepHourly: -1, ScrubEvery: 5},
		Transfer: &transfer.Options{BlockSize: 4096}, SignatureDir: sigs})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := r.Cycle(ctx); err != nil || !rep.Full {
		t.Fatalf("first cycle: %v full=%v", err, rep.Full)
	}
	f, err := os.OpenFile(sp, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for c := 2; c <= 6; c++ {
		var wrote []disk.Range
		for range 1 + rng.IntN(6) {
			off, n := rng.Int64N(size-70000), 1+rng.Int64N(70000)
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			if _, err := f.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			wrote = append(wrote, disk.Range{Off: off, Len: n})
		}
		rep, err := r.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("cycle %d: full=%v (%s), hinted %d, compared %d, sent %d", rep.Cycle, rep.Full, rep.Reason, rep.Hinted, rep.Stats.Compared, rep.Bytes())
		if c == 6 != rep.Full { // ScrubEvery 5: the sixth cycle compares everything
			t.Fatalf("cycle %d: full %v (%s)", c, rep.Full, rep.Reason)
		}
		if !rep.Full {
			var w int64
			for _, x := range disk.Normalize(wrote) {
				w += x.Len
			}
			// Hints are whole filesystem blocks around what was written (XFS may
			// copy on write a little more: its cowextsize, 128 KiB by default).
			if rep.Hinted < w || rep.Hinted > w+int64(len(wrote))*512<<10 {
				t.Fatalf("cycle %d: hinted %d bytes for %d written", c, rep.Hinted, w)
			}
		}
		s, _ := os.ReadFile(sp)
		tg, _ := os.ReadFile(d.Path())
		if !bytes.Equal(s, tg) {
			t.Fatalf("cycle %d: the target differs from the source", c)
		}
		// The point's signature (built on the last one's, hashing only
		// the hinted blocks) proves the point holds the source.
		ps, err := ft.OpenPoint(ctx, rep.Point.ID)
		if err != nil {
			t.Fatal(err)
		}
		differ, err := VerifyPoint(ctx, ps, SignaturePath(sigs, rep.Point.ID))
		ps.Close()
		if err != nil || differ != 0 {
			t.Fatalf("cycle %d: point %s against its signature: %d bytes differ, %v", c, rep.Point.ID, differ, err)
		}
	}
	// Retention deleted the signatures of the points it deleted.
	if left, _ := filepath.Glob(filepath.Join(sigs, "*.sig")); len(left) != 2 {
		t.Fatalf("signatures left: %v, want the 2 kept points'", left)
	}
	// A point changed after the fact no longer matches.
	pts, _ := ft.ListPoints(ctx)
	last := pts[len(pts)-1]
	pf, err := os.OpenFile(ft.pointPath(last.ID), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	pf.WriteAt([]byte("rot"), 12345)
	pf.Close()
	ps, _ := ft.OpenPoint(ctx, last.ID)
	differ, err := VerifyPoint(ctx, ps, SignaturePath(sigs, last.ID))
	ps.Close()
	if err != nil || differ == 0 {
		t.Fatalf("a changed point against its signature: %d bytes differ, %v", differ, err)
	}
	r.Close(ctx)
}

// TestExtentDiff checks the comparison of extent maps on its own: equal
// mappings and common holes are unchanged; moved, added or removed
// extents, opaque ones and a size change are listed.
func TestExtentDiff(t *testing.T) {
	old := []extent{{0, 1000, 4096, 0}, {8192, 5000, 8192, 0}, {32768, 9000, 4096, fiemapExtentLast}}
	now := []extent{{0, 1000, 4096, 0}, {8192, 5000, 4096, 0}, {12288, 7000, 4096, 0}, {20480, 8000, 4096, 0x4}, {32768, 9000, 4096, 0}}
	got := extentDiff(old, now, 36864, 40960)
	want := []disk.Range{{Off: 12288, Len: 4096}, {Off: 20480, Len: 4096}, {Off: 36864, Len: 4096}}
	if !slices.Equal(got, want) {
		t.Fatalf("diff %v, want %v", got, want)
	}
	if got := extentDiff(old, old, 36864, 36864); len(got) != 0 {
		t.Fatalf("a file against itself: %v", got)
	}
}

// TestReflinkEdges: a stale trial file does not stop the freezer, views a
// killed process left are deleted at the first cycle (the base a state
// names is kept), and an image replaced by a rename is the one frozen.
func TestReflinkEdges(t *testing.T) {
	ctx := context.Background()
	dir := xfsDir(t)
	rng := rand.New(rand.NewPCG(45, 46))
	sp := filepath.Join(dir, "vm1.img")
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	os.WriteFile(sp, data, 0o644)
	os.WriteFile(filepath.Join(dir, ".vm1.img.view-trial"), []byte("left by an old version"), 0o600)
	os.WriteFile(filepath.Join(dir, ".vm1.img.vm1.view-123"), []byte("left by a killed process"), 0o600)
	fr, err := NewReflinkFreezer(sp, "")
	if err != nil {
		t.Fatalf("a stale trial file stopped the freezer: %v", err)
	}
	defer fr.Close()
	fr.Tag = "vm1"
	d, err := localdisk.OpenTarget(filepath.Join(dir, "replica.img"), localdisk.TargetOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r, err := New(Config{Source: fr, Target: &FileTarget{Disk: d, Dir: t.TempDir()}, Policy: Policy{KeepLast: 3, KeepHourly: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	if _, err := r.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".vm1.img.vm1.view-123")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the view a killed process left is still there: %v", err)
	}
	if views, _ := filepath.Glob(filepath.Join(dir, ".vm1.img.vm1.view-*")); len(views) != 1 {
		t.Fatalf("views %v, want the base only", views)
	}
	// The image is replaced by a rename: the new file is replicated.
	for i := range data[:1<<20] {
		data[i] = byte(rng.Uint32())
	}
	tmp := filepath.Join(dir, "vm1.img.new")
	os.WriteFile(tmp, data, 0o644)
	if err := os.Rename(tmp, sp); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(d.Path())
	if !bytes.Equal(got, data) {
		t.Fatal("the target is not the image that replaced the old one")
	}
}

// TestReflinkSharedFreezer: two replicators sharing one freezer (two
// targets of one image) do not delete each other's base views.
func TestReflinkSharedFreezer(t *testing.T) {
	ctx := context.Background()
	dir := xfsDir(t)
	sp := filepath.Join(dir, "vm1.img")
	os.WriteFile(sp, bytes.Repeat([]byte("abcdefgh"), 1<<17), 0o644)
	fr, err := NewReflinkFreezer(sp, "")
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	var rs []*Replicator
	for _, n := range []string{"a", "b"} {
		d, err := localdisk.OpenTarget(filepath.Join(dir, n+".img"), localdisk.TargetOptions{Create: true})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		r, err := New(Config{Name: n, Source: fr, Target: &FileTarget{Disk: d}, Policy: Policy{KeepLast: 1, KeepHourly: -1}})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(ctx)
		rs = append(rs, r)
	}
	for round := range 3 {
		for i, r := range rs {
			rep, err := r.Cycle(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if round > 0 && rep.Full {
				t.Fatalf("round %d, replicator %d compared everything: %s", round, i, rep.Reason)
			}
		}
	}
}
