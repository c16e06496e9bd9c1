//go:build linux

package faultfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	var s [32]byte
	for i := range s {
		s[i] = byte(seed >> (i % 8 * 8))
	}
	rand.NewChaCha8(s).Read(b)
	return b
}

// setup mounts a fault fs over a backing folder holding name with old.
func setup(t *testing.T, keep bool, name string, old []byte) *FS {
	t.Helper()
	backing := t.TempDir()
	if err := os.WriteFile(filepath.Join(backing, name), old, 0o644); err != nil {
		t.Fatal(err)
	}
	return mount(t, backing, keep)
}

// buffered reads the file through the mount and the page cache, opened
// anew.
func buffered(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// direct reads n bytes of the file with O_DIRECT (n a multiple of 4096).
func direct(t *testing.T, p string, n int) []byte {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatalf("open O_DIRECT: %v", err)
	}
	defer f.Close()
	raw := make([]byte, n+pageSize)
	pad := int(-uintptr(unsafe.Pointer(&raw[0])) & (pageSize - 1))
	buf := raw[pad : pad+n]
	for done := 0; done < n; {
		m, err := unix.Pread(int(f.Fd()), buf[done:], int64(done))
		if err != nil {
			t.Fatalf("O_DIRECT read at %d: %v", done, err)
		}
		if m == 0 {
			t.Fatalf("O_DIRECT read: end of file at %d of %d", done, n)
		}
		done += m
	}
	return bytes.Clone(buf)
}

// ddDirect is the SHA-256 of the file read by dd iflag=direct.
func ddDirect(t *testing.T, p string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", "dd if='"+p+"' iflag=direct bs=1M status=none | sha256sum").CombinedOutput()
	if err != nil {
		t.Fatalf("dd iflag=direct: %v: %s", err, out)
	}
	return strings.Fields(string(out))[0]
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// cachedPages is how many pages of p's first n bytes are in the page cache.
func cachedPages(t *testing.T, p string, n int64) uint64 {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cs unix.Cachestat_t
	r := unix.CachestatRange{Off: 0, Len: uint64(n)}
	if err := unix.Cachestat(uint(f.Fd()), &r, &cs, 0); err != nil {
		t.Skipf("cachestat: %v", err)
	}
	return cs.Cache
}

const size = 1 << 20

// TestFailedFsync: a write, an fsync that fails with EIO; buffered reads
// (a new open, another process) still return the new data, O_DIRECT reads
// and the backing file the old; the next fsync returns 0 and the lost
// writes stay lost.
func TestFailedFsync(t *testing.T) {
	old := randomBytes(1, size)
	f := setup(t, true, "disk.img", old)
	p := f.Path("disk.img")

	// Writes on the page grid and off it, one past the first 4 KiB.
	neu := bytes.Clone(old)
	patches := []struct{ off, n int }{{0, 64 << 10}, {200 << 10, 4096}, {513<<10 + 100, 3000}, {size - 8192, 8192}}
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	// The pages of the unaligned write are read first: FUSE writes through
	// without reading a page it fills only in part, and such a page, if
	// not cached already, is not cached after (TestPartialPageUncached).
	if _, err := fh.ReadAt(make([]byte, 2*pageSize), 512<<10); err != nil {
		t.Fatal(err)
	}
	for i, pt := range patches {
		b := randomBytes(uint64(100+i), pt.n)
		copy(neu[pt.off:], b)
		if _, err := fh.WriteAt(b, int64(pt.off)); err != nil {
			t.Fatal(err)
		}
	}
	f.FailNextFsync("disk.img")
	err = unix.Fdatasync(int(fh.Fd()))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("fdatasync: %v, want EIO", err)
	}
	if f.Failures() != 1 || f.Armed("disk.img") {
		t.Fatalf("failures %d, armed %v", f.Failures(), f.Armed("disk.img"))
	}
	if err := unix.Fdatasync(int(fh.Fd())); err != nil {
		t.Fatalf("second fdatasync: %v, want 0 (the error is reported once)", err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatalf("fsync after: %v", err)
	}
	fh.Close()

	back, err := os.ReadFile(filepath.Join(f.Backing(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, old) {
		t.Fatal("the backing file kept writes of the failed fsync")
	}
	if got := buffered(t, p); !bytes.Equal(got, neu) {
		for i := 0; i < size; i += pageSize {
			if !bytes.Equal(got[i:i+pageSize], neu[i:i+pageSize]) {
				t.Logf("page %d differs from the new data; equal to the old: %v", i/pageSize, bytes.Equal(got[i:i+pageSize], old[i:i+pageSize]))
			}
		}
		t.Fatalf("a buffered read after the failure returns the old data: the page cache was dropped (equal to old: %v)", bytes.Equal(got, old))
	}
	if got := cachedPages(t, p, size); got != size/pageSize {
		t.Errorf("%d of %d pages cached", got, size/pageSize)
	}
	if out, err := exec.Command("sha256sum", p).Output(); err != nil || strings.Fields(string(out))[0] != sha(neu) {
		t.Errorf("another process's buffered read does not see the lost data (%v): %s", err, out)
	}
	if got := direct(t, p, size); !bytes.Equal(got, old) {
		t.Fatalf("an O_DIRECT read returns the lost data (equal to new: %v)", bytes.Equal(got, neu))
	}
	if got := ddDirect(t, p); got != sha(old) {
		t.Fatalf("dd iflag=direct: %s, want the old data's %s (new: %s)", got, sha(old), sha(neu))
	}
	// Still cached, still wrong, after the direct reads and the fsyncs.
	if got := buffered(t, p); !bytes.Equal(got, neu) {
		t.Fatal("the direct reads dropped the page cache")
	}

	// posix_fadvise DONTNEED drops the clean pages: buffered reads tell
	// the truth again (what a reader unable to use O_DIRECT can do).
	fh2, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(fh2.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	fh2.Close()
	if got := buffered(t, p); !bytes.Equal(got, old) {
		t.Fatal("after FADV_DONTNEED a buffered read still returns the lost data")
	}
}

// TestFsyncKeeps: without a fault, an fsync keeps the writes; a fault
// loses only what came after the last successful fsync.
func TestFsyncKeeps(t *testing.T) {
	old := randomBytes(2, size)
	f := setup(t, true, "disk.img", old)
	p := f.Path("disk.img")
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	kept := bytes.Clone(old)
	a := randomBytes(3, 64<<10)
	copy(kept[4096:], a)
	if _, err := fh.WriteAt(a, 4096); err != nil {
		t.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	// Written again after the good fsync, in part over the same pages.
	b := randomBytes(4, 128<<10)
	if _, err := fh.WriteAt(b, 32<<10); err != nil {
		t.Fatal(err)
	}
	f.FailNextFsync("disk.img")
	if err := fh.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync: %v, want EIO", err)
	}
	if got := direct(t, p, size); !bytes.Equal(got, kept) {
		t.Fatal("the failed fsync did not leave the file as the good one made it")
	}
	// A write after the failure, then a good fsync: that one is kept.
	c := randomBytes(5, 4096)
	copy(kept[size-4096:], c)
	if _, err := fh.WriteAt(c, size-4096); err != nil {
		t.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := direct(t, p, size); !bytes.Equal(got, kept) {
		t.Fatal("the write after the failure, fsynced, is not on the disk")
	}
}

// TestFailedFsyncSizes: sizes are metadata and stay; the data is as at
// the last good fsync: bytes past the old size read as zeros, bytes a
// truncate took and a regrowth gave back are the old ones.
func TestFailedFsyncSizes(t *testing.T) {
	old := randomBytes(6, size)
	f := setup(t, true, "disk.img", old)
	p := f.Path("disk.img")
	if err := os.Truncate(p, 4096+10); err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteAt(randomBytes(7, 8192), size); err != nil { // past the old end
		t.Fatal(err)
	}
	f.FailNextFsync("disk.img")
	if err := fh.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync: %v, want EIO", err)
	}
	want := append(bytes.Clone(old), make([]byte, 8192)...)
	if got := direct(t, p, size+8192); !bytes.Equal(got, want) {
		t.Fatal("after the failed fsync the file is not the old data followed by zeros")
	}

	// A new file: nothing of it was ever fsynced.
	q := f.Path("new.img")
	nf, err := os.Create(q)
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	if _, err := nf.WriteAt(randomBytes(8, size), 0); err != nil {
		t.Fatal(err)
	}
	f.FailNextFsync("new.img")
	if err := nf.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync of the new file: %v, want EIO", err)
	}
	if got := direct(t, q, size); !bytes.Equal(got, make([]byte, size)) {
		t.Fatal("the new file's lost data is not zeros")
	}
	if fi, err := os.Stat(q); err != nil || fi.Size() != size {
		t.Fatalf("the new file's size changed: %v %v", fi.Size(), err)
	}
}

// TestFailedFsyncFallocate: a hole punched since the last fsync comes back.
func TestFailedFsyncFallocate(t *testing.T) {
	old := randomBytes(8, size)
	f := setup(t, true, "disk.img", old)
	p := f.Path("disk.img")
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := unix.Fallocate(int(fh.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 64<<10, 256<<10); err != nil {
		t.Skipf("fallocate through FUSE: %v", err)
	}
	f.FailNextFsync("disk.img")
	if err := fh.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync: %v, want EIO", err)
	}
	if got := direct(t, p, size); !bytes.Equal(got, old) {
		t.Fatal("the punched hole was not undone")
	}
}

// TestWithoutKeepCacheReopenDropsCache shows why the handles answer with
// FOPEN_KEEP_CACHE: without it the kernel drops a FUSE file's page cache
// at every open, so the lost data would vanish from buffered reads as
// soon as another process (the rerun) opens the file, which a real disk's
// page cache does not do.
func TestWithoutKeepCacheReopenDropsCache(t *testing.T) {
	old := randomBytes(9, size)
	f := setup(t, false, "disk.img", old)
	p := f.Path("disk.img")
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	neu := randomBytes(10, size)
	if _, err := fh.WriteAt(neu, 0); err != nil {
		t.Fatal(err)
	}
	f.FailNextFsync("disk.img")
	if err := fh.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync: %v, want EIO", err)
	}
	// Read through the open handle: the cache is there.
	got := make([]byte, size)
	if _, err := fh.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, neu) {
		t.Fatal("through the writer's handle the cache is gone already")
	}
	// A new open drops it.
	if got := buffered(t, p); !bytes.Equal(got, old) {
		t.Fatalf("without FOPEN_KEEP_CACHE a new open kept the cache (new data: %v); the kernel changed", bytes.Equal(got, neu))
	}
}

// TestPartialPageUncached documents where FUSE differs from a disk file
// system: a write that fills part of a page that is not cached goes to the
// daemon without the page being read first, and the page is not cached
// after; so after a failed fsync a buffered read of it returns what the
// disk holds (a local file system reads the page in first, and keeps the
// lost data there). Pages written whole, as a sync writes them, are
// cached like a disk's.
func TestPartialPageUncached(t *testing.T) {
	old := randomBytes(11, size)
	f := setup(t, true, "disk.img", old)
	p := f.Path("disk.img")
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	neu := bytes.Clone(old)
	whole, part := randomBytes(12, pageSize), randomBytes(13, 100)
	copy(neu[8*pageSize:], whole)
	copy(neu[16*pageSize+10:], part)
	if _, err := fh.WriteAt(whole, 8*pageSize); err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt(part, 16*pageSize+10); err != nil {
		t.Fatal(err)
	}
	f.FailNextFsync("disk.img")
	if err := fh.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync: %v, want EIO", err)
	}
	got := buffered(t, p)
	if !bytes.Equal(got[8*pageSize:9*pageSize], neu[8*pageSize:9*pageSize]) {
		t.Error("the page written whole is not cached with the lost data")
	}
	if !bytes.Equal(got[16*pageSize:17*pageSize], old[16*pageSize:17*pageSize]) {
		t.Error("the page written in part was cached: FUSE now reads it first; update the package doc and TestFailedFsync")
	}
}

// TestRefuseDirect: with RefuseDirect an O_DIRECT open fails with EINVAL,
// as on tmpfs; buffered opens still work.
func TestRefuseDirect(t *testing.T) {
	f := setup(t, true, "disk.img", randomBytes(14, size))
	p := f.Path("disk.img")
	f.RefuseDirect(true)
	if _, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("O_DIRECT open: %v, want EINVAL", err)
	}
	buffered(t, p)
	f.RefuseDirect(false)
	direct(t, p, size)
}

// TestCopyFileRange: copy_file_range between two files of the mount goes
// through the wrapped handles (the kernel splices when the daemon says
// ENOTSUP), so a failed fsync loses it too.
func TestCopyFileRange(t *testing.T) {
	old := randomBytes(15, size)
	f := setup(t, true, "b.img", old)
	a := randomBytes(16, size)
	if err := os.WriteFile(f.Path("a.img"), a, 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(f.Path("a.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(f.Path("b.img"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var ro, wo int64
	for wo < size {
		n, err := unix.CopyFileRange(int(in.Fd()), &ro, int(out.Fd()), &wo, size-int(wo), 0)
		if err != nil {
			t.Skipf("copy_file_range: %v", err)
		}
		if n == 0 {
			t.Fatal("copy_file_range: copied nothing")
		}
	}
	f.FailNextFsync("b.img")
	if err := out.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync: %v, want EIO", err)
	}
	if got := direct(t, f.Path("b.img"), size); !bytes.Equal(got, old) {
		t.Fatalf("the copied data survived the failed fsync (equal to the copy: %v): copy_file_range bypassed the handles", bytes.Equal(got, a))
	}
	if got := buffered(t, f.Path("b.img")); !bytes.Equal(got, a) {
		t.Error("the copied data is not in the page cache after the failure")
	}
}
