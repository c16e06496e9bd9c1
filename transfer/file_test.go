package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// fileDisk is a tiny adapter of a regular file to every contract, for
// tests: the real adapter is package localdisk's.
type fileDisk struct {
	f        *os.File
	seekMu   sync.Mutex // SEEK_DATA/SEEK_HOLE move the shared offset
	align    int64
	maxWrite int64
}

var (
	_ disk.Target           = (*fileDisk)(nil)
	_ disk.Zeroer           = (*fileDisk)(nil)
	_ disk.Flusher          = (*fileDisk)(nil)
	_ disk.Resizer          = (*fileDisk)(nil)
	_ disk.WriteLimits      = (*fileDisk)(nil)
	_ disk.Identifier       = (*fileDisk)(nil)
	_ disk.Versioner        = (*fileDisk)(nil)
	_ disk.CacheDropper     = (*fileDisk)(nil)
	_ disk.AllocationMapper = (*fileDisk)(nil)
	_ blockdiff.FileBacked  = (*fileDisk)(nil)
)

func openFileDisk(t testing.TB, path string, flag int) *fileDisk {
	t.Helper()
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &fileDisk{f: f, align: 512, maxWrite: 1 << 20}
}

func (d *fileDisk) ReadAt(p []byte, off int64) (int, error)  { return d.f.ReadAt(p, off) }
func (d *fileDisk) WriteAt(p []byte, off int64) (int, error) { return d.f.WriteAt(p, off) }
func (d *fileDisk) BackingFile() *os.File                    { return d.f }
func (d *fileDisk) WriteLimits() (int64, int64)              { return d.align, d.maxWrite }

func (d *fileDisk) stat() unix.Stat_t {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.f.Fd()), &st); err != nil {
		panic(err)
	}
	return st
}

func (d *fileDisk) Size() int64 { return d.stat().Size }

func (d *fileDisk) Identity() string {
	st := d.stat()
	return fmt.Sprintf("file:%d:%d", st.Dev, st.Ino)
}

func (d *fileDisk) Version(ctx context.Context) (string, error) {
	st := d.stat()
	return fmt.Sprintf("%d:%d.%d", st.Size, st.Mtim.Sec, st.Mtim.Nsec), ctx.Err()
}

func (d *fileDisk) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return unix.Fdatasync(int(d.f.Fd()))
}

func (d *fileDisk) Resize(ctx context.Context, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.f.Truncate(size)
}

func (d *fileDisk) ZeroRange(ctx context.Context, off, n int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func (d *fileDisk) DropCache(off, n int64) error {
	return unix.Fadvise(int(d.f.Fd()), off, n, unix.FADV_DONTNEED)
}

func (d *fileDisk) AllocatedRanges(ctx context.Context, off, n int64) ([]disk.Range, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.seekMu.Lock()
	defer d.seekMu.Unlock()
	fd := int(d.f.Fd())
	end := off + n
	var rs []disk.Range
	for pos := off; pos < end; {
		s, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) || (err == nil && s >= end) {
			break
		}
		if err != nil {
			return nil, err
		}
		h, err := unix.Seek(fd, s, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		rs = append(rs, disk.Range{Off: s, Len: min(h, end) - s})
		pos = h
	}
	return rs, nil
}

// writeSparse writes b to a new file at path, leaving holes for zero pages.
func writeSparse(t testing.TB, path string, b []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off := 0; off < len(b); off += allocPage {
		p := b[off:min(off+allocPage, len(b))]
		if isZeroBytes(p) {
			continue
		}
		if _, err := f.WriteAt(p, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(int64(len(b))); err != nil {
		t.Fatal(err)
	}
}

func TestFileSyncAndSeed(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 7))
	const bs = 16 << 10
	src := randImage(rng, 3<<20, bs)
	dst := mutate(rng, src, bs, 40)
	writeSparse(t, filepath.Join(dir, "src"), src)
	writeSparse(t, filepath.Join(dir, "dst"), dst)
	s := openFileDisk(t, filepath.Join(dir, "src"), os.O_RDONLY)
	d := openFileDisk(t, filepath.Join(dir, "dst"), os.O_RDWR)
	store := DirStore{Dir: filepath.Join(dir, "state")}
	opts := &Options{BlockSize: bs, Verify: true, Journal: store, JournalBytes: 256 << 10}

	for _, noMmap := range []bool{false, true} {
		opts.NoMmap = noMmap
		st, err := Sync(context.Background(), s, d, opts)
		if err != nil {
			t.Fatalf("Sync(NoMmap=%v): %v", noMmap, err)
		}
		got, _ := os.ReadFile(filepath.Join(dir, "dst"))
		if !bytes.Equal(got, src) {
			t.Fatalf("target differs from source after Sync")
		}
		if !st.Verified || !st.Journaled {
			t.Fatalf("stats %+v", st)
		}
		if noMmap && st.Written+st.Zeroed != 0 {
			t.Fatalf("second Sync wrote %d+%d bytes", st.Written, st.Zeroed)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "state")); len(ents) != 0 {
		t.Fatalf("journal left behind: %v", ents)
	}

	// Seed into a new, empty file.
	np := filepath.Join(dir, "new")
	n := openFileDisk(t, np, os.O_RDWR|os.O_CREATE|os.O_EXCL)
	st, err := Seed(context.Background(), s, n, &Options{BlockSize: bs, Verify: true, Journal: store})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(np)
	if !bytes.Equal(got, src) {
		t.Fatal("seeded file differs from source")
	}
	if !st.ProvenEmpty || st.Zeroed != 0 || st.ResizedFrom != 0 {
		t.Fatalf("seed stats %+v", st)
	}
	// The seeded file has holes where the source has zero blocks.
	rs, err := n.AllocatedRanges(context.Background(), 0, n.Size())
	if err != nil {
		t.Fatal(err)
	}
	var alloc int64
	for _, r := range rs {
		alloc += r.Len
	}
	if alloc >= int64(len(src)) {
		t.Fatalf("seeded file fully allocated (%d bytes): zero blocks were written", alloc)
	}
}
