//go:build linux

package localdisk_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/localdisk"
)

// *Disk offers every contract and capability a local disk can.
var (
	_ disk.Source           = (*localdisk.Disk)(nil)
	_ disk.Target           = (*localdisk.Disk)(nil)
	_ disk.Zeroer           = (*localdisk.Disk)(nil)
	_ disk.Flusher          = (*localdisk.Disk)(nil)
	_ disk.Resizer          = (*localdisk.Disk)(nil)
	_ disk.WriteLimits      = (*localdisk.Disk)(nil)
	_ disk.Identifier       = (*localdisk.Disk)(nil)
	_ disk.Versioner        = (*localdisk.Disk)(nil)
	_ disk.CacheDropper     = (*localdisk.Disk)(nil)
	_ disk.AllocationMapper = (*localdisk.Disk)(nil)
	_ disk.AllocationMapper = (*localdisk.Disk)(nil)
	_ blockdiff.FileBacked  = (*localdisk.Disk)(nil)
)

const MiB = 1 << 20

var ctx = context.Background()

// randomBytes returns n bytes none of which is zero, so zeroing shows.
func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64()|0x0101010101010101)
	}
	return b[:n:n]
}

func newRNG(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, 0))
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func openTarget(t *testing.T, path string, opts localdisk.TargetOptions) *localdisk.Disk {
	t.Helper()
	d, err := localdisk.OpenTarget(path, opts)
	if err != nil {
		t.Fatalf("OpenTarget: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func openSource(t *testing.T, path string, opts localdisk.SourceOptions) *localdisk.Disk {
	t.Helper()
	d, err := localdisk.OpenSource(path, opts)
	if err != nil {
		t.Fatalf("OpenSource: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func readAll(t *testing.T, d *localdisk.Disk) []byte {
	t.Helper()
	b := make([]byte, d.Size())
	if n, err := d.ReadAt(b, 0); err != nil && !(err == io.EOF && n == len(b)) {
		t.Fatalf("ReadAt whole disk: n=%d: %v", n, err)
	}
	return b
}

// mustEqual compares two disk images and reports the first difference.
func mustEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	if bytes.Equal(got, want) {
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: first difference at offset %d: %#x, want %#x", what, i, got[i], want[i])
		}
	}
}

func wantErr(t *testing.T, err, target error, path string) *localdisk.Error {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got %v, want %v", err, target)
	}
	var e *localdisk.Error
	if !errors.As(err, &e) {
		t.Fatalf("%v is not a *localdisk.Error", err)
	}
	t.Logf("expected error: %v", err)
	if path != "" && (e.Path != path || !strings.Contains(err.Error(), path)) {
		t.Fatalf("error %q does not name %s", err, path)
	}
	return e
}

func blocks(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

func TestFileSource(t *testing.T) {
	rng := newRNG(t)
	path := filepath.Join(t.TempDir(), "src.img")
	data := randomBytes(rng, 1000) // not a multiple of 512: accepted
	writeFile(t, path, data)
	d := openSource(t, path, localdisk.SourceOptions{})

	if d.Size() != 1000 || d.Kind() != localdisk.RegularFile || d.Writable() || d.LogicalSectorSize() != 512 {
		t.Fatalf("size %d kind %v writable %v logical %d", d.Size(), d.Kind(), d.Writable(), d.LogicalSectorSize())
	}
	if a, m := d.WriteLimits(); a != 512 || m != 64*MiB {
		t.Fatalf("WriteLimits = %d, %d", a, m)
	}
	mustEqual(t, "read", readAll(t, d), data)
	buf := make([]byte, 100)
	if n, err := d.ReadAt(buf, 950); n != 50 || err != io.EOF || !bytes.Equal(buf[:50], data[950:]) {
		t.Fatalf("ReadAt across the end: n=%d err=%v", n, err)
	}
	if n, err := d.ReadAt(buf, 1000); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt at the end: n=%d err=%v", n, err)
	}
	if _, err := d.ReadAt(buf, -1); !errors.Is(err, localdisk.ErrOutOfRange) {
		t.Fatalf("ReadAt(-1): %v", err)
	}

	abs, _ := filepath.Abs(path)
	var st unix.Stat_t
	unix.Stat(path, &st)
	if want := fmt.Sprintf("file:%d:%d:%s", st.Dev, st.Ino, abs); d.Identity() != want {
		t.Fatalf("Identity = %q, want %q", d.Identity(), want)
	}

	// Never written: every write path refuses, and the descriptor itself is read-only.
	_, err := d.WriteAt([]byte{1}, 0)
	if e := wantErr(t, err, localdisk.ErrReadOnly, path); e.Op != "write" || e.Off != 0 {
		t.Fatalf("error %+v", e)
	}
	wantErr(t, d.ZeroRange(ctx, 0, 512), localdisk.ErrReadOnly, path)
	wantErr(t, d.Resize(ctx, 4096), localdisk.ErrReadOnly, path)
	if err := d.Flush(ctx); err != nil {
		t.Fatalf("Flush of a source: %v", err)
	}
	f := d.BackingFile()
	if f == nil {
		t.Fatal("BackingFile is nil")
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_ACCMODE != unix.O_RDONLY {
		t.Fatalf("source descriptor flags %#x, %v: not O_RDONLY", fl, err)
	}
	if _, err := f.WriteAt([]byte{1}, 0); err == nil {
		t.Fatal("writing the source's backing file succeeded")
	}
	got, _ := os.ReadFile(path)
	mustEqual(t, "file after refused writes", got, data)
}

func TestTargetCreateSparse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.img")
	if _, err := localdisk.OpenTarget(path, localdisk.TargetOptions{}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing target without Create: %v", err)
	}
	d := openTarget(t, path, localdisk.TargetOptions{Create: true})
	if d.Size() != 0 || !d.Writable() {
		t.Fatalf("new target: size %d writable %v", d.Size(), d.Writable())
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644&^umask() {
		t.Fatalf("mode %v", st.Mode())
	}
	if err := d.Resize(ctx, 4*MiB); err != nil {
		t.Fatal(err)
	}
	if rs, err := d.AllocatedRanges(ctx, 0, 4*MiB); err != nil || len(rs) != 0 {
		t.Fatalf("grown target allocated %v, %v; want none", rs, err)
	}
	if b := blocks(t, path); b != 0 {
		t.Fatalf("grown target has %d blocks", b)
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{7}, 4096), MiB); err != nil {
		t.Fatal(err)
	}
	rs, err := d.AllocatedRanges(ctx, 0, 4*MiB)
	if err != nil || len(rs) != 1 || rs[0] != (disk.Range{Off: MiB, Len: 4096}) {
		t.Fatalf("allocated %v, %v; want [1MiB,+4096)", rs, err)
	}
}

func rg(off, n int64) disk.Range { return disk.Range{Off: off, Len: n} }

func umask() os.FileMode {
	m := unix.Umask(0)
	unix.Umask(m)
	return os.FileMode(m)
}

func TestAllocatedRanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "holes.img")
	f, _ := os.Create(path)
	f.Truncate(8 * MiB)
	for _, r := range []disk.Range{rg(0, 64<<10), rg(MiB, 8<<10), rg(5*MiB, 4<<10)} {
		f.WriteAt(bytes.Repeat([]byte{1}, int(r.Len)), r.Off)
	}
	f.Close()
	d := openSource(t, path, localdisk.SourceOptions{})
	for _, tc := range []struct {
		off, n int64
		want   []disk.Range
	}{
		{0, 8 * MiB, []disk.Range{rg(0, 64<<10), rg(MiB, 8<<10), rg(5*MiB, 4<<10)}},
		{4096, MiB + 2048 - 4096, []disk.Range{rg(4096, 60<<10), rg(MiB, 2048)}},
		{64 << 10, MiB - 64<<10, nil},                        // a hole
		{5 * MiB, 100 * MiB, []disk.Range{rg(5*MiB, 4<<10)}}, // clipped at Size
		{8 * MiB, MiB, nil},
	} {
		rs, err := d.AllocatedRanges(ctx, tc.off, tc.n)
		if err != nil || fmt.Sprint(rs) != fmt.Sprint(tc.want) {
			t.Errorf("AllocatedRanges(%d, %d) = %v, %v; want %v", tc.off, tc.n, rs, err, tc.want)
		}
	}
	if _, err := d.AllocatedRanges(ctx, -1, 10); !errors.Is(err, localdisk.ErrOutOfRange) {
		t.Errorf("negative offset: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.AllocatedRanges(cctx, 0, 8*MiB); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// TestZeroRangeFile zeroes aligned and unaligned ranges of a file whose
// size is not a multiple of 512, in each mode, and checks that the range
// reads as zeros, that its neighbours are untouched, and what happened to
// the blocks.
func TestZeroRangeFile(t *testing.T) {
	const size = MiB + 700
	ranges := []struct{ off, n int64 }{
		{128 << 10, 64 << 10}, // whole filesystem blocks
		{1000, 10000},         // partial blocks at both ends
		{5000, 100},           // inside one block
		{size - 300, 300},     // the partial last sector
		{0, 1},
	}
	for _, mode := range []localdisk.ZeroMode{localdisk.PunchHoleMode, localdisk.ZeroRangeMode, localdisk.WriteZerosMode} {
		for _, direct := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/direct=%v", mode, direct), func(t *testing.T) {
				rng := newRNG(t)
				path := filepath.Join(t.TempDir(), "z.img")
				model := randomBytes(rng, size)
				writeFile(t, path, model)
				d := openTarget(t, path, localdisk.TargetOptions{ZeroMode: mode, Direct: direct})
				for _, r := range ranges {
					before := blocks(t, path)
					if err := d.ZeroRange(ctx, r.off, r.n); err != nil {
						t.Fatalf("ZeroRange(%d, %d): %v", r.off, r.n, err)
					}
					clear(model[r.off : r.off+r.n])
					mustEqual(t, fmt.Sprintf("after ZeroRange(%d, %d)", r.off, r.n), readAll(t, d), model)
					if fallocate, _ := localdisk.ZeroFallbacks(d); fallocate && mode != localdisk.WriteZerosMode {
						t.Logf("the filesystem refused fallocate %v: zeros were written", mode)
					}
					if r.n == 64<<10 {
						d.Flush(ctx)
						after := blocks(t, path)
						switch {
						case mode == localdisk.PunchHoleMode && after >= before:
							t.Errorf("punch hole kept the blocks: %d -> %d", before, after)
						case mode != localdisk.PunchHoleMode && after < before:
							t.Errorf("%v freed blocks: %d -> %d", mode, before, after)
						}
					}
				}
				if d.Size() != size {
					t.Fatalf("size %d", d.Size())
				}
				got, _ := os.ReadFile(path)
				mustEqual(t, "file", got, model)
				if err := d.ZeroRange(ctx, size-10, 11); !errors.Is(err, localdisk.ErrOutOfRange) {
					t.Fatalf("ZeroRange past the end: %v", err)
				}
				cctx, cancel := context.WithCancel(ctx)
				cancel()
				if err := d.ZeroRange(cctx, 0, 4096); !errors.Is(err, context.Canceled) {
					t.Fatalf("cancelled ZeroRange: %v", err)
				}
			})
		}
	}
}

// TestZeroRangeFallback: tmpfs has no FALLOC_FL_ZERO_RANGE, so zeros are written.
func TestZeroRangeFallback(t *testing.T) {
	var sfs unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &sfs); err != nil || sfs.Type != unix.TMPFS_MAGIC {
		t.Skip("no tmpfs at /dev/shm")
	}
	dir, err := os.MkdirTemp("/dev/shm", "localdisk-test")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	rng := newRNG(t)
	path := filepath.Join(dir, "z.img")
	model := randomBytes(rng, 3*MiB)
	writeFile(t, path, model)
	d := openTarget(t, path, localdisk.TargetOptions{ZeroMode: localdisk.ZeroRangeMode})
	for _, r := range []struct{ off, n int64 }{{100, 2*MiB + 5}, {2*MiB + 200, 4096}} {
		if err := d.ZeroRange(ctx, r.off, r.n); err != nil {
			t.Fatal(err)
		}
		clear(model[r.off : r.off+r.n])
	}
	mustEqual(t, "after fallback zeroing", readAll(t, d), model)
	if fallocate, _ := localdisk.ZeroFallbacks(d); !fallocate {
		t.Error("tmpfs took FALLOC_FL_ZERO_RANGE: the fallback was not exercised")
	}
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.img")
	writeFile(t, path, make([]byte, 4096))
	d, err := localdisk.OpenTarget(path, localdisk.TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = localdisk.OpenTarget(path, localdisk.TargetOptions{})
	wantErr(t, err, localdisk.ErrLocked, path)
	_, err = localdisk.OpenSource(path, localdisk.SourceOptions{})
	wantErr(t, err, localdisk.ErrLocked, path)
	s := openSource(t, path, localdisk.SourceOptions{AllowLive: true})
	s.Close()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := d.ReadAt(make([]byte, 1), 0); !errors.Is(err, fs.ErrClosed) {
		t.Fatalf("ReadAt after Close: %v", err)
	}
	if err := d.Flush(ctx); !errors.Is(err, fs.ErrClosed) {
		t.Fatalf("Flush after Close: %v", err)
	}
	// Close released the lock.
	s = openSource(t, path, localdisk.SourceOptions{})
	// A source being read keeps targets out.
	_, err = localdisk.OpenTarget(path, localdisk.TargetOptions{})
	wantErr(t, err, localdisk.ErrLocked, path)
	s.Close()
	openTarget(t, path, localdisk.TargetOptions{})
}

func TestNotBlockOrFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, fifo, "/dev/null"} {
		_, err := localdisk.OpenSource(p, localdisk.SourceOptions{})
		wantErr(t, err, localdisk.ErrNotBlockOrFile, p)
		_, err = localdisk.OpenTarget(p, localdisk.TargetOptions{})
		wantErr(t, err, localdisk.ErrNotBlockOrFile, p)
	}
}

func TestReadOnlyTargetImmutable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.img")
	writeFile(t, path, make([]byte, 4096))
	if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", path).Run() })
	_, err := localdisk.OpenTarget(path, localdisk.TargetOptions{})
	wantErr(t, err, localdisk.ErrReadOnly, path)
	openSource(t, path, localdisk.SourceOptions{})
}

func TestResizeAndBounds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.img")
	writeFile(t, path, bytes.Repeat([]byte{9}, 1000))
	d := openTarget(t, path, localdisk.TargetOptions{})
	_, err := d.WriteAt(make([]byte, 100), 950)
	if e := wantErr(t, err, localdisk.ErrOutOfRange, path); e.Off != 950 || e.Len != 100 || !strings.Contains(err.Error(), "offset 950") {
		t.Fatalf("error %q: %+v", err, e)
	}
	if err := d.Resize(ctx, 3*MiB+5); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte{1, 2, 3, 4, 5}, 3*MiB); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != 3*MiB+5 || d.Size() != 3*MiB+5 {
		t.Fatalf("size %d / %d", st.Size(), d.Size())
	}
	if err := d.Resize(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, d); !bytes.Equal(got, bytes.Repeat([]byte{9}, 10)) {
		t.Fatalf("after shrink: %v", got)
	}
	wantErr(t, d.Resize(ctx, -1), localdisk.ErrOutOfRange, path)
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.DropCache(0, 10); err != nil {
		t.Fatal(err)
	}
	if err := d.DropCache(0, 0); err != nil {
		t.Fatal(err)
	}
}

func TestVersionFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.img")
	writeFile(t, path, make([]byte, 64<<10))
	time.Sleep(20 * time.Millisecond) // beyond one tick of a coarse clock
	tgt := openTarget(t, path, localdisk.TargetOptions{})
	src := openSource(t, path, localdisk.SourceOptions{AllowLive: true})
	v1, err := src.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := src.Version(ctx); v != v1 {
		t.Fatalf("version changed without a write: %q, %q", v1, v)
	}
	if _, err := tgt.WriteAt([]byte{1}, 4096); err != nil {
		t.Fatal(err)
	}
	v2, _ := src.Version(ctx)
	if v2 == v1 {
		t.Fatalf("version %q unchanged after a write", v1)
	}
	time.Sleep(20 * time.Millisecond)
	tgt.Resize(ctx, 128<<10)
	if v3, _ := tgt.Version(ctx); v3 == v2 {
		t.Fatalf("version %q unchanged after a resize", v2)
	}
}

// TestDirectFile writes and reads unaligned buffers at unaligned offsets
// through O_DIRECT on a file whose size is not a multiple of the block.
func TestDirectFile(t *testing.T) {
	rng := newRNG(t)
	const size = 2*MiB + 300
	path := filepath.Join(t.TempDir(), "d.img")
	model := randomBytes(rng, size)
	writeFile(t, path, model)
	d, err := localdisk.OpenTarget(path, localdisk.TargetOptions{Direct: true})
	if errors.Is(err, localdisk.ErrDirectIO) {
		t.Skipf("no O_DIRECT here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.BackingFile() != nil {
		t.Fatal("BackingFile with Direct")
	}
	if a, _ := d.WriteLimits(); a < 512 || a&(a-1) != 0 {
		t.Fatalf("align %d", a)
	}
	directRoundTrip(t, rng, d, model)
	if st, _ := os.Stat(path); st.Size() != size {
		t.Fatalf("file size %d after writes to its last block, want %d", st.Size(), size)
	}
	got, _ := os.ReadFile(path)
	mustEqual(t, "file read back buffered", got, model)
}

// directRoundTrip writes random pieces (odd offsets, odd lengths, odd
// buffer addresses, the last bytes) and reads them back the same way.
func directRoundTrip(t *testing.T, rng *rand.Rand, d *localdisk.Disk, model []byte) {
	t.Helper()
	size := int64(len(model))
	pieces := []struct{ off, n int64 }{{size - 1, 1}, {size - 5000, 5000}, {0, 1}, {4095, 2}, {1, 3 * 4096}, {MiB - 17, MiB + 33}}
	for range 8 {
		n := rng.Int64N(100_000) + 1
		pieces = append(pieces, struct{ off, n int64 }{rng.Int64N(size - n), n})
	}
	for _, p := range pieces {
		raw := randomBytes(rng, int(p.n)+1)
		buf := raw[1:] // not aligned in memory
		if _, err := d.WriteAt(buf, p.off); err != nil {
			t.Fatalf("WriteAt(%d, %d): %v", p.off, p.n, err)
		}
		copy(model[p.off:], buf)
		back := make([]byte, p.n+3)[3:]
		if _, err := d.ReadAt(back, p.off); err != nil {
			t.Fatalf("ReadAt(%d, %d): %v", p.off, p.n, err)
		}
		mustEqual(t, fmt.Sprintf("piece [%d,+%d)", p.off, p.n), back, buf)
	}
	// Aligned buffers and offsets go straight through.
	al, _ := d.WriteLimits()
	abuf := make([]byte, 64<<10+int(al))
	abuf = abuf[int(al)-int(uintptrOf(abuf)%uint64(al)):][:64<<10]
	copy(abuf, randomBytes(rng, len(abuf)))
	if _, err := d.WriteAt(abuf, 4*al); err != nil {
		t.Fatal(err)
	}
	copy(model[4*al:], abuf)
	if err := d.ZeroRange(ctx, 3*al-7, al+100); err != nil {
		t.Fatal(err)
	}
	clear(model[3*al-7 : 4*al+93])
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "whole disk", readAll(t, d), model)
}

// TestConcurrentUnalignedWrites has many goroutines write disjoint ranges
// that share blocks, with and without Direct (read-modify-write must not
// lose a neighbour's bytes).
func TestConcurrentUnalignedWrites(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			rng := newRNG(t)
			const piece, pieces = 1000, 256
			path := filepath.Join(t.TempDir(), "c.img")
			writeFile(t, path, make([]byte, piece*pieces))
			d := openTarget(t, path, localdisk.TargetOptions{Direct: direct})
			model := randomBytes(rng, piece*pieces)
			var wg sync.WaitGroup
			errs := make(chan error, pieces)
			for w := range 8 {
				wg.Go(func() {
					for i := w; i < pieces; i += 8 {
						if _, err := d.WriteAt(model[i*piece:(i+1)*piece], int64(i*piece)); err != nil {
							errs <- err
						}
						b := make([]byte, piece)
						if _, err := d.ReadAt(b, int64(i*piece)); err != nil {
							errs <- err
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			mustEqual(t, "after concurrent writes", readAll(t, d), model)
		})
	}
}
