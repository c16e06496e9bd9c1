package blockdiff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/disk"
)

// reference is the obvious sequential comparison the parallel engine must
// agree with: block by block (refined when asked), then merged.
func reference(src, dst []byte, bs, refine int, lo, hi int64) []disk.Extent {
	var out []disk.Extent
	add := func(e disk.Extent) {
		if n := len(out); n > 0 && out[n-1].Kind == e.Kind && out[n-1].End() == e.Off {
			out[n-1].Len += e.Len
			return
		}
		out = append(out, e)
	}
	ss, ds := int64(len(src)), int64(len(dst))
	allZero := func(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }
	unit := int64(bs)
	if refine > 0 {
		unit = int64(refine)
	}
	// Block boundaries are the absolute grid plus the two sizes.
	for b := lo; b < hi; {
		e := min((b/unit+1)*unit, hi)
		if b < ss && e > ss {
			e = ss
		}
		if b < ds && e > ds {
			e = ds
		}
		switch {
		case b >= ss:
			add(disk.Extent{Off: b, Len: e - b, Kind: disk.Excess})
		case b >= ds:
			k := disk.Data
			if allZero(src[b:e]) {
				k = disk.Zero
			}
			add(disk.Extent{Off: b, Len: e - b, Kind: k})
		case !bytes.Equal(src[b:e], dst[b:e]):
			k := disk.Data
			if allZero(src[b:e]) {
				k = disk.Zero
			}
			add(disk.Extent{Off: b, Len: e - b, Kind: k})
		}
		b = e
	}
	return out
}

// reportedBlocks expands extents to whole blocks when refinement is off:
// the engine reports whole blocks, the reference too, so they must match.

func randomImage(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	// Runs of zeros.
	for k := 0; k < 4 && n > 0; k++ {
		o := r.IntN(n)
		l := min(n-o, r.IntN(200<<10))
		clear(b[o : o+l])
	}
	return b
}

func mutate(r *rand.Rand, b []byte) {
	n := len(b)
	if n == 0 {
		return
	}
	for k := 0; k < 1+r.IntN(12); k++ {
		o := r.IntN(n)
		switch r.IntN(5) {
		case 0: // first block
			o = r.IntN(min(n, 4096))
		case 1: // last block
			o = max(0, n-1-r.IntN(min(n, 4096)))
		}
		l := min(n-o, 1+r.IntN(100<<10))
		if r.IntN(3) == 0 {
			clear(b[o : o+l])
		} else {
			for i := o; i < o+l; i++ {
				b[i] ^= byte(1 + r.IntN(255))
			}
		}
	}
}

func collect(t *testing.T, src, dst []byte, o *Options, viaFiles bool) ([]disk.Extent, Stats) {
	t.Helper()
	var sr, dr interface {
		ReadAt([]byte, int64) (int, error)
	} = bytes.NewReader(src), bytes.NewReader(dst)
	if viaFiles {
		dir := t.TempDir()
		sf, df := writeFile(t, filepath.Join(dir, "s"), src), writeFile(t, filepath.Join(dir, "d"), dst)
		sr, dr = sf, df
	}
	var got []disk.Extent
	st, err := Compare(context.Background(), sr, int64(len(src)), dr, int64(len(dst)), o, func(e disk.Extent) error {
		got = append(got, e)
		return nil
	})
	if err != nil {
		t.Fatalf("Compare: %v", err)
	}
	return got, st
}

func writeFile(t *testing.T, p string, b []byte) *os.File {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestCompareMatchesReference(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	iters := 60
	if testing.Short() {
		iters = 15
	}
	for it := 0; it < iters; it++ {
		bs := 512 * (1 << r.IntN(8)) // 512 B .. 64 KiB
		if r.IntN(4) == 0 {
			bs = 512 * (1 + r.IntN(300)) // not a power of two
		}
		refine := 0
		if r.IntN(3) == 0 && bs > 512 && bs%1024 == 0 {
			refine = 512
		}
		n := r.IntN(3 << 20)
		if r.IntN(4) == 0 {
			n = n / 512 * 512
		}
		src := randomImage(r, n)
		dst := append([]byte(nil), src...)
		mutate(r, dst)
		switch r.IntN(4) {
		case 0:
			dst = dst[:r.IntN(len(dst)+1)]
		case 1:
			dst = append(dst, randomImage(r, r.IntN(300<<10))...)
		}
		o := &Options{BlockSize: bs, RefineSize: refine, ChunkSize: bs * (1 + r.IntN(40)), Concurrency: 1 + r.IntN(6)}
		hi := int64(max(len(src), len(dst)))
		lo := int64(0)
		if r.IntN(3) == 0 && hi > 1024 {
			lo = r.Int64N(hi/2) / 512 * 512
			o.Offset = lo
			o.Length = r.Int64N(hi-lo) + 1
			hi = lo + o.Length
		}
		want := reference(src, dst, bs, refine, lo, hi)
		// In memory; files read through mappings; files read with
		// O_DIRECT (unaligned sizes, offsets and block sizes included).
		for _, files := range []DirectMode{-1, DirectNever, DirectAlways} {
			o.Direct = max(files, DirectNever)
			got, st := collect(t, src, dst, o, files >= 0)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("iter %d files/direct=%v bs=%d refine=%d sizes %d/%d range [%d,%d) opts %+v\n got %v\nwant %v", it, files, bs, refine, len(src), len(dst), lo, hi, o, got, want)
			}
			if st.Compared != hi-lo {
				t.Fatalf("compared %d, want %d", st.Compared, hi-lo)
			}
		}
	}
}

func TestCompareSparseFiles(t *testing.T) {
	// Holes on either side are zeros and must not hide a difference.
	dir := t.TempDir()
	const size = 8 << 20
	mk := func(name string, data map[int64][]byte) *os.File {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		for off, b := range data {
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		f, _ = os.Open(p)
		t.Cleanup(func() { f.Close() })
		return f
	}
	ones := bytes.Repeat([]byte{1}, 64<<10)
	zs := make([]byte, 64<<10)
	s := mk("s", map[int64][]byte{0: ones, 1 << 20: ones, 3 << 20: zs})
	d := mk("d", map[int64][]byte{0: ones, 2 << 20: ones, 3 << 20: zs})
	var got []disk.Extent
	st, err := Compare(context.Background(), s, size, d, size, nil, func(e disk.Extent) error { got = append(got, e); return nil })
	if err != nil {
		t.Fatal(err)
	}
	want := []disk.Extent{{Off: 1 << 20, Len: 64 << 10, Kind: disk.Data}, {Off: 2 << 20, Len: 64 << 10, Kind: disk.Zero}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v want %v", got, want)
	}
	// Holes are neither read nor counted: 3 x 64 KiB allocated per side.
	if st.SourceRead > 256<<10 || st.TargetRead > 256<<10 {
		t.Fatalf("read %d/%d bytes of sparse files with 192 KiB of data each", st.SourceRead, st.TargetRead)
	}
	t.Logf("stats %+v", st)
}

func TestCompareHintsLimitWork(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	src := randomImage(r, 4<<20)
	dst := append([]byte(nil), src...)
	dst[100] ^= 1     // outside hints: must not be seen
	dst[2<<20+5] ^= 1 // inside
	o := &Options{Hints: []disk.Range{{Off: 2<<20 + 1, Len: 10}}}
	got, st := collect(t, src, dst, o, false)
	want := []disk.Extent{{Off: 2 << 20, Len: 64 << 10, Kind: disk.Data}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v want %v", got, want)
	}
	if st.SourceRead > 64<<10 || st.Compared != 64<<10 {
		t.Fatalf("read %d bytes, compared %d: hints not honoured", st.SourceRead, st.Compared)
	}
	got, _ = collect(t, src, dst, &Options{Hints: []disk.Range{}}, false)
	if len(got) != 0 {
		t.Fatalf("empty hints compared something: %v", got)
	}
}

func TestCompareBadOptions(t *testing.T) {
	b := bytes.NewReader(make([]byte, 4096))
	for _, o := range []Options{
		{BlockSize: 1000}, {BlockSize: 8 << 20}, {BlockSize: -512},
		{RefineSize: 1000}, {BlockSize: 4096, RefineSize: 4096}, {BlockSize: 4096, RefineSize: 1536},
		{Offset: 100}, {Offset: -512}, {Length: -1}, {Concurrency: -1},
		{Offset: 1 << 40, Length: math.MaxInt64 - 1<<39}, // Offset+Length overflows
		{Hints: []disk.Range{{Off: -1, Len: 5}}},
	} {
		_, err := Compare(context.Background(), b, 4096, b, 4096, &o, func(disk.Extent) error { return nil })
		if !errors.Is(err, ErrBadOptions) {
			t.Errorf("options %+v: err %v, want ErrBadOptions", o, err)
		}
	}
	if _, err := Compare(context.Background(), nil, 0, b, 4096, nil, func(disk.Extent) error { return nil }); !errors.Is(err, ErrBadOptions) {
		t.Errorf("nil reader: %v", err)
	}
}

type slowReader struct{ n int64 }

func (s slowReader) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(2 * time.Millisecond)
	clear(p)
	if off == 0 && len(p) > 0 {
		p[0] = 1
	}
	return len(p), nil
}

func TestCompareCancel(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	const size = 1 << 40 // 1 TiB of slow reads: only cancellation ends it
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := Compare(ctx, slowReader{}, size, slowReader{}, size, &Options{Concurrency: 4}, func(disk.Extent) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v to stop", d)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines left (before %d)", n, before)
	}
}

func TestCompareCallbackErrorStops(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	src := randomImage(r, 8<<20)
	dst := randomImage(r, 8<<20)
	stop := errors.New("stop")
	calls := 0
	_, err := Compare(context.Background(), bytes.NewReader(src), int64(len(src)), bytes.NewReader(dst), int64(len(dst)),
		&Options{BlockSize: 512, ChunkSize: 512}, func(disk.Extent) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Fatalf("err %v after %d calls; want stop after 1", err, calls)
	}
}

type failReader struct {
	at int64
}

func (f failReader) ReadAt(p []byte, off int64) (int, error) {
	if off <= f.at && f.at < off+int64(len(p)) {
		return 0, errors.New("disk on fire")
	}
	clear(p)
	return len(p), nil
}

func TestCompareReadErrorNamesSideAndOffset(t *testing.T) {
	const size = 16 << 20
	_, err := Compare(context.Background(), failReader{-1}, size, failReader{9 << 20}, size, &Options{NoMmap: true}, func(disk.Extent) error { return nil })
	var re *ReadError
	if !errors.As(err, &re) || re.Side != TargetSide || re.Off > 9<<20 || re.Off+re.Len <= 9<<20 {
		t.Fatalf("err %v (%#v), want ReadError on target around offset %d", err, re, 9<<20)
	}
}

// TestCompareFaultIsError truncates a mapped file under the comparison: the
// SIGBUS must come back as a FaultError, not kill the process.
func TestCompareFaultIsError(t *testing.T) {
	dir := t.TempDir()
	const size = 64 << 20
	src := writeFile(t, filepath.Join(dir, "s"), bytes.Repeat([]byte{7}, size))
	dp := filepath.Join(dir, "d")
	dst := writeFile(t, dp, bytes.Repeat([]byte{7}, size))
	// The size given is the size before truncation: the mapping then
	// covers pages the file no longer has.
	if err := os.Truncate(dp, 4096); err != nil {
		t.Fatal(err)
	}
	_, err := Compare(context.Background(), src, size, dst, size, nil, func(disk.Extent) error { return nil })
	var fe *FaultError
	if !errors.As(err, &fe) || !errors.Is(err, ErrFault) {
		t.Fatalf("err = %v, want FaultError", err)
	}
	if fe.Side != TargetSide {
		t.Fatalf("fault blamed on %s, want target", fe.Side)
	}
	t.Logf("got: %v", err)
}

func TestHashModeMatchesExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, alg := range []HashAlgorithm{XXH3, BLAKE3} {
		for it := 0; it < 10; it++ {
			src := randomImage(r, r.IntN(1<<20))
			dst := append([]byte(nil), src...)
			mutate(r, dst)
			if it%3 == 1 {
				dst = dst[:r.IntN(len(dst)+1)]
			} else if it%3 == 2 {
				dst = append(dst, randomImage(r, r.IntN(100<<10))...)
			}
			o := &Options{BlockSize: 4096 * (1 + r.IntN(16))}
			exact, _ := collect(t, src, dst, o, false)
			key, err := NewKey()
			if err != nil {
				t.Fatal(err)
			}
			h := Hasher{Alg: alg, Key: key}
			it := &sliceIter{}
			if err := HashBlocks(context.Background(), bytes.NewReader(dst), int64(len(dst)), h, o, func(b BlockHash) error {
				it.hs = append(it.hs, b)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			var got []disk.Extent
			if _, err := CompareHashes(context.Background(), bytes.NewReader(src), int64(len(src)), h, it, int64(len(dst)), o, func(e disk.Extent) error {
				got = append(got, e)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			// Hash mode may also report the source's last partial block
			// when the target's block runs past the source's end (no
			// hash covers that part alone); otherwise it equals exact.
			slack := int64(-1)
			if bs := int64(o.BlockSize); len(dst) > len(src) && int64(len(src))%bs != 0 {
				slack = int64(len(src)) / bs * bs
			}
			if !sameBytes(got, exact, slack) {
				t.Fatalf("%v: hash mode %v\nexact %v", alg, got, exact)
			}
		}
	}
}

func TestHashKeyMatters(t *testing.T) {
	b := bytes.Repeat([]byte("deltasync"), 1000)
	k1, _ := NewKey()
	k2, _ := NewKey()
	for _, alg := range []HashAlgorithm{XXH3, BLAKE3} {
		if (Hasher{alg, k1}).Sum(b) == (Hasher{alg, k2}).Sum(b) {
			t.Fatalf("%v: two keys gave the same hash", alg)
		}
		if (Hasher{alg, k1}).Sum(b) != (Hasher{alg, k1}).Sum(b) {
			t.Fatalf("%v: not deterministic", alg)
		}
	}
}

type sliceIter struct {
	hs []BlockHash
	i  int
}

func (s *sliceIter) Next() (BlockHash, error) {
	if s.i >= len(s.hs) {
		return BlockHash{}, io.EOF
	}
	s.i++
	return s.hs[s.i-1], nil
}

// sameBytes reports whether a and b mark every byte with the same kind,
// except bytes at or past slack (when >= 0) that a alone may mark.
func sameBytes(a, b []disk.Extent, slack int64) bool {
	kinds := func(es []disk.Extent) map[int64]disk.Kind {
		m := map[int64]disk.Kind{}
		for _, e := range es {
			for o := e.Off; o < e.End(); o++ {
				m[o] = e.Kind
			}
		}
		return m
	}
	ma, mb := kinds(a), kinds(b)
	for o, k := range mb {
		if ka, ok := ma[o]; !ok || ka != k {
			return false
		}
	}
	for o := range ma {
		if _, ok := mb[o]; !ok && (slack < 0 || o < slack) {
			return false
		}
	}
	return true
}

// resident counts the pages of path in the page cache (mincore).
func resident(t *testing.T, path string) (in, total int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	b, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	vec := make([]byte, (len(b)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	for _, v := range vec {
		if v&1 != 0 {
			in++
		}
	}
	return in, len(vec)
}

// TestDropBehind: with DropBehind, the pages a comparison read are not
// left in the page cache; without it they are.
func TestDropBehind(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(9, 9))
	data := randomImage(r, 16<<20)
	for _, drop := range []bool{false, true} {
		for _, noMmap := range []bool{false, true} {
			sp, dp := filepath.Join(dir, "s"), filepath.Join(dir, "d")
			s, d := writeFile(t, sp, data), writeFile(t, dp, data)
			s.Sync()
			d.Sync()
			_, err := Compare(context.Background(), s, int64(len(data)), d, int64(len(data)), &Options{DropBehind: drop, NoMmap: noMmap}, func(disk.Extent) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			in, total := resident(t, sp)
			t.Logf("drop=%v noMmap=%v: %d of %d pages resident", drop, noMmap, in, total)
			if drop && in > total/10 || !drop && in < total/2 {
				t.Fatalf("drop=%v noMmap=%v: %d of %d pages resident", drop, noMmap, in, total)
			}
		}
	}
}

// noMapReader has an AllocationMapper that finds it has no allocation map
// (as SEEK_DATA does on some file systems).
type noMapReader struct{ *bytes.Reader }

func (noMapReader) AllocatedRanges(context.Context, int64, int64) ([]disk.Range, error) {
	return nil, errNoAllocationMap
}

// TestCompareNoAllocationMap: a mapper without a map means everything may
// hold data; workers finding that out at once do not race (-race).
func TestCompareNoAllocationMap(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	src := randomImage(r, 8<<20)
	dst := append([]byte(nil), src...)
	mutate(r, dst)
	var got []disk.Extent
	_, err := Compare(context.Background(), noMapReader{bytes.NewReader(src)}, int64(len(src)), noMapReader{bytes.NewReader(dst)}, int64(len(dst)),
		&Options{Concurrency: 6, ChunkSize: 256 << 10}, func(e disk.Extent) error { got = append(got, e); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if want := reference(src, dst, DefaultBlockSize, 0, 0, int64(len(src))); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}
