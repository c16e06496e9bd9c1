//go:build linux

package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/disk"
)

// directDir returns a temporary folder on a file system that supports
// O_DIRECT, or skips the test.
func directDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "probe")
	if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Skipf("%s does not support O_DIRECT (%v): direct reads cannot be tested here", dir, err)
	}
	f.Close()
	return dir
}

// evict makes a file cold: written back, then its pages dropped.
func evict(t *testing.T, fs ...*os.File) {
	t.Helper()
	for _, f := range fs {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDirectColdPass: with DirectAuto, a comparison of two cold files
// reads them with O_DIRECT (exactly, and leaving the page cache as it
// was), hash mode too; DirectNever reads them through the page cache.
func TestDirectColdPass(t *testing.T) {
	dir := directDir(t)
	r := rand.New(rand.NewPCG(11, 12))
	src := randomImage(r, 24<<20+1536) // not a multiple of 4096
	dst := append([]byte(nil), src...)
	mutate(r, dst)
	want := reference(src, dst, DefaultBlockSize, 0, 0, int64(len(src)))
	sp, dp := filepath.Join(dir, "s"), filepath.Join(dir, "d")
	s, d := writeFile(t, sp, src), writeFile(t, dp, dst)
	for _, mode := range []DirectMode{DirectAuto, DirectNever} {
		for _, noMmap := range []bool{false, true} {
			name := fmt.Sprintf("direct=%d/noMmap=%v", mode, noMmap)
			evict(t, s, d)
			if in, _ := resident(t, sp); in > 0 {
				t.Skipf("%d pages still cached after FADV_DONTNEED: cannot make a file cold here", in)
			}
			var got []disk.Extent
			st, err := Compare(context.Background(), s, int64(len(src)), d, int64(len(dst)), &Options{Direct: mode, NoMmap: noMmap}, func(e disk.Extent) error {
				got = append(got, e)
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s: got %v\nwant %v", name, got, want)
			}
			if st.SourceRead != int64(len(src)) || st.TargetRead != int64(len(dst)) {
				t.Fatalf("%s: read %d/%d, want %d/%d", name, st.SourceRead, st.TargetRead, len(src), len(dst))
			}
			in, total := resident(t, sp)
			t.Logf("%s: %d of %d source pages cached after the comparison", name, in, total)
			if mode == DirectAuto && in > total/10 || mode == DirectNever && in < total/2 {
				t.Fatalf("%s: %d of %d pages cached afterwards", name, in, total)
			}
		}
	}
	// Hash mode reads its disk the same way.
	evict(t, d)
	key, _ := NewKey()
	var n int
	if err := HashBlocks(context.Background(), d, int64(len(dst)), Hasher{Alg: XXH3, Key: key}, &Options{Direct: DirectAuto}, func(BlockHash) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if in, total := resident(t, dp); in > total/10 || n != (len(dst)+DefaultBlockSize-1)/DefaultBlockSize {
		t.Fatalf("hash mode: %d blocks, %d of %d pages cached afterwards", n, in, total)
	}
}

// TestDirectPartlyCached: chunks mostly cached are mapped, the others read
// directly, and the result is exact either way.
func TestDirectPartlyCached(t *testing.T) {
	dir := directDir(t)
	r := rand.New(rand.NewPCG(13, 14))
	src := randomImage(r, 32<<20)
	dst := append([]byte(nil), src...)
	mutate(r, dst)
	s, d := writeFile(t, filepath.Join(dir, "s"), src), writeFile(t, filepath.Join(dir, "d"), dst)
	evict(t, s, d)
	// Warm every other 4 MiB chunk of the target, and one of the source.
	buf := make([]byte, 4<<20)
	for off := int64(0); off < int64(len(dst)); off += 8 << 20 {
		d.ReadAt(buf, off)
	}
	s.ReadAt(buf, 12<<20)
	got, _ := collectFiles(t, s, d, int64(len(src)), int64(len(dst)), &Options{Direct: DirectAuto})
	if want := reference(src, dst, DefaultBlockSize, 0, 0, int64(len(src))); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

func collectFiles(t *testing.T, s, d *os.File, ss, ds int64, o *Options) ([]disk.Extent, Stats) {
	t.Helper()
	var got []disk.Extent
	st, err := Compare(context.Background(), s, ss, d, ds, o, func(e disk.Extent) error {
		got = append(got, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, st
}

// allData is a file whose allocation map says everything holds data, so
// that its end-of-file hole is read, not known as zeros.
type allData struct{ *os.File }

func (a allData) BackingFile() *os.File { return a.File }
func (a allData) AllocatedRanges(_ context.Context, off, n int64) ([]disk.Range, error) {
	return []disk.Range{{Off: off, Len: n}}, nil
}

// TestDirectShortFile: a file shorter than the size it is compared at
// (truncated since) and said to hold data there is a read error naming
// the side: never a panic, never zeros taken for data.
func TestDirectShortFile(t *testing.T) {
	dir := directDir(t)
	const size = 8 << 20
	s := writeFile(t, filepath.Join(dir, "s"), bytes.Repeat([]byte{7}, size))
	d := writeFile(t, filepath.Join(dir, "d"), bytes.Repeat([]byte{7}, size-5000))
	evict(t, s, d)
	_, err := Compare(context.Background(), s, size, allData{d}, size, &Options{Direct: DirectAlways}, func(disk.Extent) error { return nil })
	var re *ReadError
	if !errors.As(err, &re) || re.Side != TargetSide {
		t.Fatalf("err = %v, want a ReadError on the target", err)
	}
	t.Logf("got: %v", err)
}

// TestDirectCancel: cancelling a cold comparison with reads in flight
// returns promptly and leaves no read running.
func TestDirectCancel(t *testing.T) {
	dir := directDir(t)
	r := rand.New(rand.NewPCG(15, 16))
	src := randomImage(r, 64<<20)
	s, d := writeFile(t, filepath.Join(dir, "s"), src), writeFile(t, filepath.Join(dir, "d"), src)
	evict(t, s, d)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err := Compare(ctx, s, int64(len(src)), d, int64(len(src)), &Options{Direct: DirectAuto, Progress: func(int64) {
		if n++; n == 2 {
			cancel()
		}
	}}, func(disk.Extent) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestDirectBadMode(t *testing.T) {
	_, err := Compare(context.Background(), bytes.NewReader(nil), 0, bytes.NewReader(nil), 0, &Options{Direct: 7}, func(disk.Extent) error { return nil })
	if !errors.Is(err, ErrBadOptions) {
		t.Fatalf("err = %v, want ErrBadOptions", err)
	}
}

// TestColdMincore: the fallback for kernels without cachestat tells a
// cold range from a cached one, and so does cachestat.
func TestColdMincore(t *testing.T) {
	dir := directDir(t)
	f := writeFile(t, filepath.Join(dir, "f"), bytes.Repeat([]byte{3}, 4<<20))
	x := openDirect(f, &config{Options: Options{Direct: DirectAuto}, chunk: 4 << 20, workers: 1})
	if x == nil {
		t.Fatal("no direct reader")
	}
	defer x.close()
	const n = 4 << 20
	pages := uint64(n / pageSize)
	evict(t, f)
	if !x.coldMincore(0, n, pages) || cached(f, 0, n) {
		t.Fatalf("evicted file: mincore says cached, or cachestat says all cached")
	}
	if _, err := f.ReadAt(make([]byte, n), 0); err != nil {
		t.Fatal(err)
	}
	if x.coldMincore(0, n, pages) || x.cold(0, n) {
		t.Fatalf("file just read: reported cold")
	}
	if _, err := cachestat(f, 0, n); err == nil && !cached(f, 0, n) {
		t.Fatalf("file just read: cachestat does not see it cached")
	}
}
