//go:build linux

// Package faultfs is a test-only FUSE file system that fails a file's
// fsync the way a disk fails a write-back: the call returns EIO and the
// writes made to the file since its last successful fsync are lost on the
// "disk" (the backing file), while the kernel's page cache keeps them,
// clean, so buffered reads through the mount still return the new data
// and only an O_DIRECT read shows what the disk holds. A second fsync
// returns 0, as Linux reports a write-back error once per open file.
//
// It is a loopback file system over a backing directory (go-fuse's
// fs.NewLoopbackRoot) whose file handles are wrapped: before each change
// of a file (write, truncate, fallocate) the old bytes of the pages it
// touches are saved, the first time since the last successful fsync, and
// a failed fsync writes them back. A size is metadata, which a journaling
// file system keeps when data write-back fails: the file keeps the size
// the kernel knows, and what lies past its size at the last successful
// fsync reads as zeros (a hole).
//
// What the kernel does, and the options that give a real disk's
// semantics (checked on Linux 6.18 by this package's tests):
//   - Writes are write-through (no writeback cache): each write(2) reaches
//     the daemon at once and the pages it filled stay in the page cache,
//     clean and up to date. So there is no kernel write-back to fail, and
//     the failed "write-back" is the fsync this package fails. A write
//     that fills only part of a page that is not cached is sent without
//     the page being read first, and leaves it uncached, so a buffered
//     read of that page after a failure returns the disk's data (a local
//     file system would have read it in and kept the lost data); pages
//     written whole, as a sync writes them, stay cached like a disk's
//     (TestPartialPageUncached).
//   - Every open(2) of a FUSE file drops the inode's page cache unless the
//     daemon answers with FOPEN_KEEP_CACHE, which these handles do: the
//     lost data must still be there when another process opens the file,
//     as it is on a real disk (TestWithoutKeepCacheReopenDropsCache shows
//     the kernel otherwise invalidating).
//   - With the default CAP_AUTO_INVAL_DATA the kernel drops the cache
//     whenever it sees the file's mtime change, which the restore does;
//     the mount asks for explicit invalidation instead
//     (MountOptions.ExplicitDataCacheControl). (A size change would still
//     truncate the cached pages past the new size; a failed fsync here
//     changes no size.)
//   - O_DIRECT opens are accepted (FUSE has ->direct_IO): direct reads of
//     a file opened without FOPEN_DIRECT_IO bypass the page cache and go
//     to the daemon, so dd iflag=direct returns the backing file's truth.
//     The daemon opens the backing file without O_DIRECT (its buffers are
//     not aligned; the backing file's own page cache is the truth here).
//   - go-fuse registers a LoopbackFile for FUSE passthrough (the kernel
//     then reads and writes the backing file itself, as root on 6.9+);
//     the wrapped handles do not offer it, so every write is seen.
//   - copy_file_range into a file of the mount is answered ENOTSUP (the
//     loopback's own only works between its LoopbackFiles), and the
//     kernel falls back to splicing, which writes through the handles
//     (TestCopyFileRange).
//   - Locks stay local to the kernel (MountOptions.EnableLocks is off),
//     so flock and OFD locks behave as on a local file system.
package faultfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// pageSize is the granularity of the undo log.
const pageSize = 4096

// Available says why a fault file system cannot be mounted here, or nil:
// mounting one takes root (go-fuse calls mount(2) itself; no fusermount)
// and /dev/fuse.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("faultfs: not root (mounting FUSE with mount(2) takes CAP_SYS_ADMIN)")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("faultfs: no usable /dev/fuse: %w", err)
	}
	f.Close()
	return nil
}

// FS is a mounted fault file system.
type FS struct {
	t           testing.TB
	dir         string // the mount point
	backing     string
	server      *fuse.Server
	keep        bool // answer opens with FOPEN_KEEP_CACHE
	failures    atomic.Int64
	noDirect    atomic.Bool // refuse O_DIRECT opens with EINVAL
	unmountOnce sync.Once

	mu    sync.Mutex
	files map[fileKey]*fileState
	armed map[string]bool // names whose next fsync fails
}

// Mount mounts a fault file system over backingDir on a new temporary
// directory and unmounts it when the test ends. It skips the test when
// FUSE cannot be mounted here (not root, no /dev/fuse, mount refused).
func Mount(t testing.TB, backingDir string) *FS {
	t.Helper()
	return mount(t, backingDir, true)
}

func mount(t testing.TB, backingDir string, keepCache bool) *FS {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
	backing, err := filepath.Abs(backingDir)
	if err != nil {
		t.Fatal(err)
	}
	f := &FS{t: t, dir: t.TempDir(), backing: backing, keep: keepCache, files: map[fileKey]*fileState{}, armed: map[string]bool{}}
	lr, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		t.Fatalf("faultfs: %v", err)
	}
	ln := lr.(*fs.LoopbackNode)
	root := &node{LoopbackNode: ln, fs: f}
	ln.RootData.RootNode = root
	server, err := fs.Mount(f.dir, root, &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:                   "faultfs:" + backing,
			Name:                     "faultfs",
			DirectMountStrict:        true,
			ExplicitDataCacheControl: true,
		},
	})
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("faultfs: mount refused: %v", err)
	}
	if err != nil {
		t.Fatalf("faultfs: mounting %s on %s: %v", backing, f.dir, err)
	}
	f.server = server
	t.Cleanup(f.Unmount)
	return f
}

// Unmount unmounts the file system now (the test's cleanup does it
// otherwise); a second call does nothing.
func (f *FS) Unmount() { f.unmountOnce.Do(f.unmount) }

func (f *FS) unmount() {
	var err error
	for i := 0; i < 50; i++ {
		if err = f.server.Unmount(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		// Still busy (a process left behind): detach it, so the test's
		// folders can go.
		f.t.Logf("faultfs: unmounting %s: %v; detaching", f.dir, err)
		_ = unix.Unmount(f.dir, unix.MNT_DETACH)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.files {
		if s.rw != nil {
			s.rw.Close()
		}
	}
}

// Dir is the mount point.
func (f *FS) Dir() string { return f.dir }

// Backing is the backing directory.
func (f *FS) Backing() string { return f.backing }

// Path is name's path under the mount point.
func (f *FS) Path(name string) string { return filepath.Join(f.dir, name) }

// FailNextFsync makes the next fsync or fdatasync of the file name
// (relative to the mount point; it need not exist yet) fail with EIO,
// losing the writes made to it since its last successful fsync.
func (f *FS) FailNextFsync(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed[filepath.Clean(name)] = true
}

// Armed reports whether name's next fsync is still set to fail.
func (f *FS) Armed(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.armed[filepath.Clean(name)]
}

// Disarm cancels a FailNextFsync that has not happened.
func (f *FS) Disarm(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.armed, filepath.Clean(name))
}

// RefuseDirect makes opens with O_DIRECT fail with EINVAL from now on (on
// or off), as on a file system without direct I/O: tmpfs, or a FUSE
// daemon that opens its backing file with the caller's flags over one.
func (f *FS) RefuseDirect(on bool) { f.noDirect.Store(on) }

// Failures is the number of fsyncs failed so far.
func (f *FS) Failures() int { return int(f.failures.Load()) }

// fire reports whether name's fsync is to fail now, and disarms it.
func (f *FS) fire(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.armed[name] {
		return false
	}
	delete(f.armed, name)
	return true
}

// fileKey names a backing file: device, inode and birth time (an inode
// number reused for a new file is another file).
type fileKey struct {
	dev, ino uint64
	btime    int64
}

func keyOf(fd int, path string, flags int) (fileKey, error) {
	var x unix.Statx_t
	if err := unix.Statx(fd, path, flags, unix.STATX_INO|unix.STATX_BTIME, &x); err != nil {
		return fileKey{}, fmt.Errorf("statx %s: %w", path, err)
	}
	return fileKey{
		dev:   unix.Mkdev(x.Dev_major, x.Dev_minor),
		ino:   x.Ino,
		btime: x.Btime.Sec*1e9 + int64(x.Btime.Nsec),
	}, nil
}

func keyOfFd(fd int) (fileKey, error) { return keyOf(fd, "", unix.AT_EMPTY_PATH) }

func (f *FS) state(k fileKey) *fileState {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.files[k]
	if s == nil {
		s = &fileState{fs: f}
		f.files[k] = s
	}
	return s
}

// fileState is one backing file's undo log: what it held at its last
// successful fsync, for the pages changed since.
type fileState struct {
	fs *FS
	mu sync.Mutex
	rw *os.File // the backing file, read-write, for saving and restoring

	dirty bool             // changed since the last successful fsync
	size  int64            // its size then
	pages map[int64][]byte // page index → its bytes then (short at the old end)
}

// begin starts the undo log at the first change since a successful fsync.
// fd is a descriptor of the backing file (any access mode). s.mu is held.
func (s *fileState) begin(fd int) syscall.Errno {
	if s.rw == nil {
		rw, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDWR, 0)
		if err != nil {
			return fs.ToErrno(err)
		}
		s.rw = rw
	}
	if s.dirty {
		return 0
	}
	fi, err := s.rw.Stat()
	if err != nil {
		return fs.ToErrno(err)
	}
	s.dirty, s.size, s.pages = true, fi.Size(), map[int64][]byte{}
	return 0
}

// save keeps the old bytes of the pages of [off, off+n) that were not
// saved since the last successful fsync. Pages wholly past the size of
// then need nothing: the restore zeros them. s.mu is held.
func (s *fileState) save(fd int, off, n int64) syscall.Errno {
	if n <= 0 {
		return 0
	}
	if e := s.begin(fd); e != 0 {
		return e
	}
	for p := off / pageSize; p <= (off+n-1)/pageSize && p*pageSize < s.size; p++ {
		if _, ok := s.pages[p]; ok {
			continue
		}
		b := make([]byte, min(pageSize, s.size-p*pageSize))
		m, err := s.rw.ReadAt(b, p*pageSize)
		if err != nil && m < len(b) {
			// Shorter now than then: not through this mount (a
			// truncate here saves what it removes first).
			b = b[:m]
		}
		s.pages[p] = b
	}
	return 0
}

// discard puts the data of the backing file back as it was at its last
// successful fsync, keeping its size: the saved pages get their old bytes
// back, what lies past the old size becomes a hole. s.mu is held.
func (s *fileState) discard() error {
	if !s.dirty {
		return nil
	}
	fi, err := s.rw.Stat()
	if err != nil {
		return err
	}
	cur := fi.Size()
	var errs []error
	if cur > s.size {
		if err := zero(s.rw, s.size, cur-s.size); err != nil {
			errs = append(errs, err)
		}
	}
	for p, b := range s.pages {
		if p*pageSize >= cur {
			continue // truncated since: the size stays
		}
		b = b[:min(int64(len(b)), cur-p*pageSize)]
		if _, err := s.rw.WriteAt(b, p*pageSize); err != nil {
			errs = append(errs, err)
		}
	}
	s.clean()
	return errors.Join(errs...)
}

// zero makes [off, off+n) of f read as zeros, keeping its size.
func zero(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	z := make([]byte, min(n, 1<<20))
	for done := int64(0); done < n; {
		m, err := f.WriteAt(z[:min(int64(len(z)), n-done)], off+done)
		if err != nil {
			return err
		}
		done += int64(m)
	}
	return nil
}

func (s *fileState) clean() { s.dirty, s.pages = false, nil }

// node is a loopback node whose files are opened with wrapped handles.
type node struct {
	*fs.LoopbackNode
	fs *FS
}

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
	_ fs.NodeSetattrer   = (*node)(nil)
)

func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), fs: n.fs}
}

func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(n.Root()))
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_DIRECT != 0 && n.fs.noDirect.Load() {
		return nil, 0, syscall.EINVAL
	}
	if flags&syscall.O_TRUNC != 0 {
		if e := n.truncating(0); e != 0 {
			return nil, 0, e
		}
	}
	// The kernel does O_DIRECT on its side (it sends the reads here,
	// past its page cache); the backing file needs none.
	fh, _, errno := n.LoopbackNode.Open(ctx, flags&^syscall.O_DIRECT)
	if errno != 0 {
		return nil, 0, errno
	}
	h, errno := n.fs.wrap(fh, n.Path(n.Root()))
	if errno != 0 {
		return nil, 0, errno
	}
	return h, h.openFlags(), 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_DIRECT != 0 && n.fs.noDirect.Load() {
		return nil, nil, 0, syscall.EINVAL
	}
	ch, fh, _, errno := n.LoopbackNode.Create(ctx, name, flags&^syscall.O_DIRECT, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	h, errno := n.fs.wrap(fh, filepath.Join(n.Path(n.Root()), name))
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, h, h.openFlags(), 0
}

// Setattr saves what a truncate takes away, then lets the loopback do it
// (through the handle, when there is one).
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	sz, ok := in.GetSize()
	if !ok {
		return n.LoopbackNode.Setattr(ctx, f, in, out)
	}
	var s *fileState
	var fd int
	if h, ok := f.(*handle); ok {
		s, fd = h.st, h.fd
	} else {
		bf, err := os.Open(n.backingPath())
		if err != nil {
			return fs.ToErrno(err)
		}
		defer bf.Close()
		k, err := keyOfFd(int(bf.Fd()))
		if err != nil {
			return fs.ToErrno(err)
		}
		s, fd = n.fs.state(k), int(bf.Fd())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.truncate(fd, int64(sz)); e != 0 {
		return e
	}
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

// truncating saves what truncating the node's backing file to size takes.
func (n *node) truncating(size int64) syscall.Errno {
	bf, err := os.Open(n.backingPath())
	if err != nil {
		return fs.ToErrno(err)
	}
	defer bf.Close()
	k, err := keyOfFd(int(bf.Fd()))
	if err != nil {
		return fs.ToErrno(err)
	}
	s := n.fs.state(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.truncate(int(bf.Fd()), size)
}

// truncate saves the bytes a truncate to size removes. s.mu is held.
func (s *fileState) truncate(fd int, size int64) syscall.Errno {
	if e := s.begin(fd); e != 0 {
		return e
	}
	fi, err := s.rw.Stat()
	if err != nil {
		return fs.ToErrno(err)
	}
	if size < fi.Size() {
		return s.save(fd, size, fi.Size()-size)
	}
	return 0
}

// handle wraps a loopback file handle: changes go through the undo log,
// fsync may fail. It does not offer FUSE passthrough (the kernel would
// then write the backing file itself).
type handle struct {
	inner fs.FileHandle // a *fs.LoopbackFile
	fd    int           // its descriptor, valid until Release
	name  string        // the file's path under the mount point, at open
	st    *fileState
	keep  bool
}

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileFsyncer   = (*handle)(nil)
	_ fs.FileFlusher   = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileGetattrer = (*handle)(nil)
	_ fs.FileStatxer   = (*handle)(nil)
	_ fs.FileSetattrer = (*handle)(nil)
	_ fs.FileAllocater = (*handle)(nil)
	_ fs.FileLseeker   = (*handle)(nil)
)

func (f *FS) wrap(fh fs.FileHandle, name string) (*handle, syscall.Errno) {
	lf, ok := fh.(*fs.LoopbackFile)
	if !ok {
		return nil, syscall.EIO
	}
	fd, ok := lf.PassthroughFd() // just its descriptor; passthrough is not offered
	if !ok {
		lf.Release(context.Background())
		return nil, syscall.EBADF
	}
	k, err := keyOfFd(fd)
	if err != nil {
		lf.Release(context.Background())
		return nil, fs.ToErrno(err)
	}
	return &handle{inner: lf, fd: fd, name: name, st: f.state(k), keep: f.keep}, 0
}

func (h *handle) openFlags() uint32 {
	if h.keep {
		return fuse.FOPEN_KEEP_CACHE
	}
	return 0
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return h.inner.(fs.FileReader).Read(ctx, dest, off)
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	if e := h.st.save(h.fd, off, int64(len(data))); e != 0 {
		return 0, e
	}
	return h.inner.(fs.FileWriter).Write(ctx, data, off)
}

func (h *handle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	if e := h.st.save(h.fd, int64(off), int64(size)); e != 0 {
		return e
	}
	return h.inner.(fs.FileAllocater).Allocate(ctx, off, size, mode)
}

// Fsync fails when armed: the changes since the last successful fsync
// are undone in the backing file, the kernel's page cache is left alone.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	s := h.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fs.fire(h.name) {
		s.fs.failures.Add(1)
		if err := s.discard(); err != nil {
			s.fs.t.Errorf("faultfs: undoing the writes of a failed fsync: %v", err)
		}
		return syscall.EIO
	}
	if e := h.inner.(fs.FileFsyncer).Fsync(ctx, flags); e != 0 {
		return e
	}
	s.clean()
	return 0
}

func (h *handle) Flush(ctx context.Context) syscall.Errno {
	return h.inner.(fs.FileFlusher).Flush(ctx)
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	return h.inner.(fs.FileReleaser).Release(ctx)
}

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.inner.(fs.FileGetattrer).Getattr(ctx, out)
}

func (h *handle) Statx(ctx context.Context, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return h.inner.(fs.FileStatxer).Statx(ctx, flags, mask, out)
}

// Setattr: node.Setattr saved what a truncate removes before calling it.
func (h *handle) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return h.inner.(fs.FileSetattrer).Setattr(ctx, in, out)
}

func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return h.inner.(fs.FileLseeker).Lseek(ctx, off, whence)
}
