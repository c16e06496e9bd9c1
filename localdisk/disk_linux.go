package localdisk

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Disk is a regular file or a block device opened as a source (read-only)
// or as a target (read-write, held exclusively). It implements
// disk.Source, disk.Target and their optional capabilities, and
// disk.AllocationMapper and blockdiff.FileBacked.
//
// All methods may be called concurrently; WriteAt and ZeroRange on
// disjoint ranges. Resize must not run concurrently with I/O beyond the
// new size. A zero Disk is not usable: open one with OpenSource or
// OpenTarget.
type Disk struct {
	f    *os.File
	rc   syscall.RawConn
	path string // as given
	abs  string // absolute, for Identity

	kind     Kind
	writable bool
	direct   bool
	zeroMode ZeroMode
	excl     bool // a block device held with O_EXCL
	locked   bool // a file held with flock

	size     atomic.Int64
	logical  int64 // logical sector size (512 for a file)
	physical int64 // physical sector size (filesystem block size for a file)
	dev, ino uint64
	rdev     uint64 // block devices

	stateDir string // TargetOptions.StateDir

	dioAlign int64 // with Direct: offsets and lengths of direct I/O are multiples of this
	memAlign int64 // with Direct: buffers of direct I/O start at a multiple of this

	noFallocate atomic.Bool // the filesystem refused our fallocate mode: write zeros
	noZeroout   atomic.Bool // the device refused BLKZEROOUT: write zeros
	noCopyRange atomic.Bool // copy_file_range refused: read and write

	rmw    sync.Mutex  // serialises read-modify-write of partial blocks (Direct)
	bounce chan []byte // pool of aligned bounce buffers (Direct)

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// maxWrite is what WriteLimits reports as the largest write. WriteAt takes
// any length; this only keeps the engine's buffers bounded.
const maxWrite = 64 << 20

// OpenSource opens a regular file or a block device read-only, as a
// source. It is never written: WriteAt, ZeroRange and Resize return
// ErrReadOnly.
//
// Unless opts.AllowLive, a live disk is refused: a block device mounted
// read-write (itself, a partition of it, or a device stacked on it)
// gives ErrMounted; a block device that cannot be held with O_EXCL
// and is not mounted read-only gives ErrLocked; a file locked by a
// deltasync target gives ErrLocked. A block device mounted read-only is
// read without O_EXCL (the mount holds it). Also refused: a disk whose
// storage is also a loop device (or a partition of one) mounted
// read-write, with ErrMounted, and one on which another process holds a
// fcntl write lock or QEMU's write-permission lock, with ErrLocked (see
// the package doc, # Aliases).
func OpenSource(path string, opts SourceOptions) (*Disk, error) {
	st, err := statPath(path)
	if err != nil {
		return nil, err
	}
	d := &Disk{path: path}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		f, err := openFile(path, unix.O_RDONLY|unix.O_NOATIME, 0, unix.S_IFREG)
		if errors.Is(err, unix.EPERM) { // O_NOATIME needs ownership or CAP_FOWNER
			f, err = openFile(path, unix.O_RDONLY, 0, unix.S_IFREG)
		}
		if err != nil {
			return nil, err
		}
		d.f = f
		if !opts.AllowLive {
			if err := d.flock(unix.LOCK_SH, "a deltasync target is writing it; pass AllowLive to read it anyway"); err != nil && !noLocks(err) {
				f.Close()
				return nil, err
			}
		}
	case unix.S_IFBLK:
		f, excl, err := openSourceDevice(path, uint64(st.Rdev), opts.AllowLive)
		if err != nil {
			return nil, err
		}
		d.f, d.excl = f, excl
	default:
		return nil, newError("open", path, -1, 0, errf(ErrNotBlockOrFile, "%s", typeName(st.Mode)))
	}
	if err := d.init(); err != nil {
		d.f.Close()
		return nil, err
	}
	if !opts.AllowLive {
		if err := d.checkInUse(false); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// openSourceDevice opens a block device read-only, with O_EXCL unless
// allowLive. See OpenSource.
func openSourceDevice(path string, rdev uint64, allowLive bool) (*os.File, bool, error) {
	if allowLive {
		f, err := openFile(path, unix.O_RDONLY, 0, unix.S_IFBLK)
		return f, false, err
	}
	if u := useOf(rdev); u.rw {
		return nil, false, newError("open", path, -1, 0, errf(ErrMounted, "read-write at %s; pass AllowLive for a crash-inconsistent copy", u))
	}
	f, err := openFile(path, unix.O_RDONLY|unix.O_EXCL, 0, unix.S_IFBLK)
	if err == nil {
		return f, true, nil
	}
	if !errors.Is(err, unix.EBUSY) {
		return nil, false, err
	}
	// Held: by a read-only mount (fine to read), by a mount that appeared
	// since the check, or by someone we cannot see.
	u := useOf(rdev)
	switch {
	case u.rw:
		return nil, false, newError("open", path, -1, 0, errf(ErrMounted, "read-write at %s; pass AllowLive for a crash-inconsistent copy", u))
	case u.mounted():
		f, err := openFile(path, unix.O_RDONLY, 0, unix.S_IFBLK)
		return f, false, err
	}
	return nil, false, newError("open", path, -1, 0, fmt.Errorf("%w: O_EXCL refused (%w)%s; pass AllowLive to read it anyway", ErrLocked, unix.EBUSY, heldBy(u)))
}

func heldBy(u deviceUse) string {
	if len(u.holders) > 0 {
		return fmt.Sprintf(": held by %v", u.holders)
	}
	return ": held by another program or by a mount in another mount namespace"
}

// OpenTarget opens a regular file or a block device read-write, as a
// target, and takes its exclusive hold: an exclusive flock (LOCK_EX|LOCK_NB)
// on a file, O_EXCL on a device. A second opener gets ErrLocked; a mounted
// device gives ErrMounted; a target that cannot be written (read-only
// mount, read-only device, immutable file, no permission) gives
// ErrReadOnly. A target whose storage is also a mounted loop device (or
// a partition of one), such as the image file of a mounted loop device,
// gives ErrMounted; one on which another process holds a fcntl lock (OFD
// or POSIX, as QEMU holds on a running VM's image) gives ErrLocked; the
// target then holds an OFD write lock over the whole of it until Close
// (see the package doc, # Aliases). With opts.Create a missing path is
// created as an empty regular file (grow it with Resize).
func OpenTarget(path string, opts TargetOptions) (*Disk, error) {
	if opts.ZeroMode < PunchHoleMode || opts.ZeroMode > WriteZerosMode {
		return nil, newError("open", path, -1, 0, fmt.Errorf("%w: zero mode %d", fs.ErrInvalid, int(opts.ZeroMode)))
	}
	d := &Disk{path: path, writable: true, direct: opts.Direct, zeroMode: opts.ZeroMode, stateDir: opts.StateDir}
	flags := unix.O_RDWR
	if opts.Direct {
		flags |= unix.O_DIRECT
	}
	st, err := statPath(path)
	if err != nil && opts.Create && errors.Is(err, fs.ErrNotExist) {
		st.Mode = unix.S_IFREG
		flags |= unix.O_CREAT
		err = nil
	}
	if err != nil {
		return nil, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		f, err := openFile(path, flags, 0o644, unix.S_IFREG)
		if err != nil {
			return nil, err
		}
		d.f = f
		if err := d.flock(unix.LOCK_EX, "another deltasync target or source has it open"); err != nil {
			f.Close()
			return nil, err
		}
	case unix.S_IFBLK:
		f, err := openFile(path, flags|unix.O_EXCL, 0, unix.S_IFBLK)
		if errors.Is(err, unix.EBUSY) {
			u := useOf(uint64(st.Rdev))
			if u.mounted() {
				return nil, newError("open", path, -1, 0, errf(ErrMounted, "at %s", u))
			}
			return nil, newError("open", path, -1, 0, fmt.Errorf("%w: O_EXCL refused (%w)%s", ErrLocked, unix.EBUSY, heldBy(u)))
		}
		if err != nil {
			return nil, err
		}
		d.f, d.excl = f, true
	default:
		return nil, newError("open", path, -1, 0, errf(ErrNotBlockOrFile, "%s", typeName(st.Mode)))
	}
	if err := d.init(); err != nil {
		d.f.Close()
		return nil, err
	}
	if err := d.checkInUse(true); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// statPath stats path (following symlinks) so that the open flags can be
// chosen: O_EXCL means something only for a block device.
func statPath(path string) (unix.Stat_t, error) {
	var st unix.Stat_t
	for {
		err := unix.Stat(path, &st)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return st, newError("open", path, -1, 0, err)
		}
		return st, nil
	}
}

// openFile opens path with O_NONBLOCK (so that a FIFO swapped in after
// the stat cannot block the open), checks that it is a regular file or a
// block device, then clears O_NONBLOCK.
// want is the file type the earlier stat found (unix.S_IFREG or
// unix.S_IFBLK): the flags were chosen for it, so a path that changed type
// in between is refused.
func openFile(path string, flags int, mode uint32, want uint32) (*os.File, error) {
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, flags|unix.O_CLOEXEC|unix.O_NONBLOCK, mode)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		switch {
		case errors.Is(err, unix.EROFS), errors.Is(err, unix.EACCES) && flags&unix.O_ACCMODE != unix.O_RDONLY,
			errors.Is(err, unix.EPERM) && flags&unix.O_ACCMODE != unix.O_RDONLY:
			err = fmt.Errorf("%w: cannot open for writing: %w", ErrReadOnly, err)
		case errors.Is(err, unix.EINVAL) && flags&unix.O_DIRECT != 0:
			err = fmt.Errorf("%w: %w", ErrDirectIO, err)
		}
		return nil, newError("open", path, -1, 0, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, newError("open", path, -1, 0, err)
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFBLK {
		unix.Close(fd)
		return nil, newError("open", path, -1, 0, errf(ErrNotBlockOrFile, "%s", typeName(st.Mode)))
	} else if t != want {
		unix.Close(fd)
		return nil, newError("open", path, -1, 0, fmt.Errorf("the path changed from %s to %s while being opened", typeName(want), typeName(t)))
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
	}
	if err != nil {
		unix.Close(fd)
		return nil, newError("open", path, -1, 0, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return fmt.Sprintf("file type %#o", mode&unix.S_IFMT)
}

// flock takes a non-blocking flock of the given kind; why explains a
// conflict.
func (d *Disk) flock(how int, why string) error {
	err := d.control(func(fd int) error {
		for {
			err := unix.Flock(fd, how|unix.LOCK_NB)
			if err != unix.EINTR {
				return err
			}
		}
	})
	if errors.Is(err, unix.EWOULDBLOCK) {
		return newError("open", d.path, -1, 0, fmt.Errorf("%w: flock refused (%w): %s", ErrLocked, err, why))
	}
	if err != nil {
		return newError("open", d.path, -1, 0, fmt.Errorf("flock: %w", err))
	}
	d.locked = true
	return nil
}

// noLocks reports a filesystem without flock: a source is then read
// without its shared lock (a target is refused).
func noLocks(err error) bool {
	return errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
}

// init fills in what is learnt from the open descriptor.
func (d *Disk) init() error {
	rc, err := d.f.SyscallConn()
	if err != nil {
		return newError("open", d.path, -1, 0, err)
	}
	d.rc = rc
	if d.abs, err = filepath.Abs(d.path); err != nil {
		d.abs = d.path
	}
	var st unix.Stat_t
	if err := d.control(func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		return newError("open", d.path, -1, 0, err)
	}
	d.dev, d.ino = uint64(st.Dev), st.Ino
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		d.kind = RegularFile
		d.size.Store(st.Size)
		d.logical = 512
		d.physical = max(int64(st.Blksize), 512)
	case unix.S_IFBLK:
		d.kind = BlockDevice
		d.rdev = uint64(st.Rdev)
		if err := d.control(func(fd int) error {
			size, err := ioctlUint64(fd, unix.BLKGETSIZE64)
			if err != nil {
				return fmt.Errorf("BLKGETSIZE64: %w", err)
			}
			ls, err := unix.IoctlGetUint32(fd, unix.BLKSSZGET)
			if err != nil {
				return fmt.Errorf("BLKSSZGET: %w", err)
			}
			ps, err := unix.IoctlGetUint32(fd, unix.BLKPBSZGET)
			if err != nil {
				return fmt.Errorf("BLKPBSZGET: %w", err)
			}
			d.size.Store(int64(size))
			d.logical, d.physical = int64(ls), max(int64(ps), int64(ls))
			if d.writable {
				if ro, err := unix.IoctlGetUint32(fd, unix.BLKROGET); err == nil && ro != 0 {
					return fmt.Errorf("%w: the device is set read-only (BLKROGET)", ErrReadOnly)
				}
			}
			return nil
		}); err != nil {
			return newError("open", d.path, -1, 0, err)
		}
	}
	if d.direct {
		if err := d.initDirect(); err != nil {
			return newError("open", d.path, -1, 0, err)
		}
	}
	return nil
}

// initDirect learns the alignment O_DIRECT needs (statx STATX_DIOALIGN,
// Linux 6.1 and later) or assumes it: the logical sector size of a
// device, 4096 for a file (a safe upper bound on common filesystems).
func (d *Disk) initDirect() error {
	d.dioAlign, d.memAlign = d.logical, d.logical
	if d.kind == RegularFile {
		d.dioAlign, d.memAlign = 4096, 4096
	}
	var sx unix.Statx_t
	err := d.control(func(fd int) error {
		return unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &sx)
	})
	if err == nil && sx.Mask&unix.STATX_DIOALIGN != 0 {
		if sx.Dio_offset_align == 0 {
			return fmt.Errorf("%w (statx reports no direct I/O alignment)", ErrDirectIO)
		}
		d.dioAlign, d.memAlign = int64(sx.Dio_offset_align), max(int64(sx.Dio_mem_align), 1)
	}
	if d.dioAlign&(d.dioAlign-1) != 0 || d.memAlign&(d.memAlign-1) != 0 {
		return fmt.Errorf("%w: alignment %d/%d is not a power of two", ErrDirectIO, d.dioAlign, d.memAlign)
	}
	d.bounce = make(chan []byte, 4)
	return nil
}

// control runs fn on the descriptor, holding a reference so that a
// concurrent Close cannot recycle it underneath.
func (d *Disk) control(fn func(fd int) error) error {
	rc := d.rc
	if rc == nil { // during open, before init
		var err error
		if rc, err = d.f.SyscallConn(); err != nil {
			return err
		}
	}
	if d.closed.Load() {
		return fs.ErrClosed
	}
	var opErr error
	if err := rc.Control(func(fd uintptr) { opErr = fn(int(fd)) }); err != nil {
		if d.closed.Load() {
			return fs.ErrClosed
		}
		return err
	}
	return opErr
}

// Close releases the exclusive hold (flock or O_EXCL, and a target's OFD
// lock) and closes the descriptor. It does not flush: call Flush first
// for durability. Calls after the first return the first call's result.
// Other methods called after Close return an error wrapping fs.ErrClosed.
func (d *Disk) Close() error {
	d.closeOnce.Do(func() {
		if d.locked {
			// Unlock explicitly: a memory mapping of BackingFile would keep
			// the open file description, and the lock, alive.
			_ = d.control(func(fd int) error { return unix.Flock(fd, unix.LOCK_UN) })
		}
		d.fcntlUnlock()
		d.closed.Store(true)
		if err := d.f.Close(); err != nil {
			d.closeErr = newError("close", d.path, -1, 0, err)
		}
	})
	return d.closeErr
}

// Size returns the size in bytes: a file's size (at open, then as set by
// Resize), a device's size (BLKGETSIZE64). A file's size need not be a
// multiple of 512; the last sector is then partial.
func (d *Disk) Size() int64 { return d.size.Load() }

// Path returns the path as given to OpenSource or OpenTarget.
func (d *Disk) Path() string { return d.path }

// Kind tells whether the disk is a regular file or a block device.
func (d *Disk) Kind() Kind { return d.kind }

// Writable reports whether the disk was opened as a target.
func (d *Disk) Writable() bool { return d.writable }

// Exclusive reports whether the disk holds an exclusive hold: O_EXCL on a
// device (a target always; a source unless AllowLive or mounted
// read-only), an exclusive flock on a file (a target).
func (d *Disk) Exclusive() bool { return d.excl || (d.locked && d.writable) }

// Direct reports whether the disk was opened with O_DIRECT.
func (d *Disk) Direct() bool { return d.direct }

// LogicalSectorSize is a device's logical sector size (BLKSSZGET), the
// unit of its addressing; 512 for a file.
func (d *Disk) LogicalSectorSize() int64 { return d.logical }

// PhysicalSectorSize is a device's physical sector size (BLKPBSZGET), the
// unit it writes without read-modify-write; a file's filesystem block size
// (st_blksize).
func (d *Disk) PhysicalSectorSize() int64 { return d.physical }

// WriteLimits reports the alignment writes should have and the largest
// write the engine should issue. Align is the logical sector size of a
// device and 512 for a file; with Direct, the direct I/O alignment if
// larger (unaligned writes still work, through read-modify-write).
// maxWrite is 64 MiB; WriteAt itself accepts any length.
func (d *Disk) WriteLimits() (align, maxWriteBytes int64) {
	return max(d.logical, d.dioAlign), maxWrite
}

// BackingFile returns the open file, for blockdiff to read through memory
// mappings; nil with Direct (a mapping would go through the page cache
// that Direct avoids). The caller must not close it, nor use it after
// Close.
func (d *Disk) BackingFile() *os.File {
	if d.direct {
		return nil
	}
	return d.f
}

func ioctlUint64(fd int, req uint) (uint64, error) {
	var v uint64
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&v)))
	if e != 0 {
		return 0, e
	}
	return v, nil
}
