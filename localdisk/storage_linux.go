package localdisk

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// One storage, two names: see the package doc, # Aliases.

// ErrOverlap: the source and the target (or the two disks of a
// verification) are names of one storage, and their byte ranges on it
// overlap: a loop device and its backing file, two loop devices over one
// file, a whole disk and one of its partitions. Writing the target would
// change the source. CheckSides returns it, inside an *Error whose Err is
// an *OverlapError.
var ErrOverlap = errors.New("localdisk: source and target share storage")

// StorageKind is what stores a run of a disk's bytes.
type StorageKind int

const (
	// StorageFile is a regular file, named by its filesystem's device
	// number (st_dev) and its inode number.
	StorageFile StorageKind = iota + 1
	// StorageDevice is a whole block device that is not itself a view of
	// another one (not a partition, a loop device, a device-mapper or md
	// device), named by its device number.
	StorageDevice
)

func (k StorageKind) String() string {
	switch k {
	case StorageFile:
		return "file"
	case StorageDevice:
		return "device"
	}
	return "StorageKind(invalid)"
}

// StorageRef names one underlying storage by number, never by path: two
// refs are equal if and only if they name the same file or device.
type StorageRef struct {
	Kind StorageKind
	// Dev is, for a file, the device number of its filesystem (st_dev);
	// for a device, its own device number (major:minor, unix.Mkdev).
	Dev uint64
	// Ino is a file's inode number; 0 for a device.
	Ino uint64
}

func (r StorageRef) String() string {
	if r.Kind == StorageFile {
		return fmt.Sprintf("inode %d on device %d:%d", r.Ino, unix.Major(r.Dev), unix.Minor(r.Dev))
	}
	return fmt.Sprintf("block device %d:%d", unix.Major(r.Dev), unix.Minor(r.Dev))
}

// StorageRange is a run of a disk's bytes and where it is stored: the
// disk's bytes [DiskOff, DiskOff+Len) are the bytes [Off, Off+Len) of Ref.
type StorageRange struct {
	Ref StorageRef
	// Name is a path of the storage, for messages only (it is never
	// compared): the disk's own path, a loop device's backing file as
	// sysfs shows it, or /dev/NAME of a device. It may be empty or stale.
	Name string
	Off  int64
	Len  int64
	// DiskOff is where the run starts in the disk; -1 when Inexact.
	DiskOff int64
	// Inexact: the run was found through device-mapper or md (sysfs
	// slaves), whose mapping is not read: Off and Len cover the whole
	// member, wherever the disk's bytes are in it.
	Inexact bool
	// Via says how the run was found, for messages: "/dev/loop1 is a
	// loop device over /img at byte 1048576" and the like, "; "-separated.
	Via string
}

// End is Off+Len, saturated at math.MaxInt64.
func (r StorageRange) End() int64 { return satAdd(r.Off, r.Len) }

// Storage is a disk resolved to the storage beneath it, through loop
// devices, partitions and (best effort) device-mapper and md.
type Storage struct {
	Path   string         // the disk's path, as opened
	Ranges []StorageRange // in the disk's order where exact; empty for a disk of size 0
}

// wholeFile is the length of a regular file's range: the whole inode,
// whatever its size, since a target file may be grown.
const wholeFile = math.MaxInt64

// maxStack bounds the depth of devices stacked on one another.
const maxStack = 16

// sysRoot is where sysfs is mounted; tests point it at a fake tree.
var sysRoot = "/sys"

// Storage resolves the disk to its underlying storage and byte ranges:
//   - a regular file is its whole inode (st_dev and inode), from byte 0
//     on, at any size;
//   - a loop device is its backing file (or device), from lo_offset, for
//     the loop device's size (which lo_sizelimit bounds), as
//     LOOP_GET_STATUS64 reports them (numbers, not the path it was set up
//     with); when the ioctl is not allowed, sysfs's loop/offset and the
//     inode of loop/backing_file are used instead;
//   - a partition is its range of the parent disk
//     (/sys/dev/block/M:m/{start,size}, in 512-byte sectors), resolved in
//     turn (a partition of a loop device is a range of its backing file);
//   - a device-mapper or md device is each of its members
//     (/sys/.../slaves), whole, marked Inexact: their tables are not read;
//   - any other block device is itself, whole.
//
// An error means a loop device on the way could not be resolved.
func (d *Disk) Storage() (Storage, error) {
	s := Storage{Path: d.path}
	if d.kind == RegularFile {
		s.Ranges = []StorageRange{{
			Ref:  StorageRef{Kind: StorageFile, Dev: d.dev, Ino: d.ino},
			Name: d.abs, Off: 0, Len: wholeFile, DiskOff: 0, Via: d.path + " is a regular file",
		}}
		return s, nil
	}
	var rs []StorageRange
	err := d.control(func(fd int) error {
		var err error
		rs, err = resolveDevice(d.rdev, fd, 0)
		return err
	})
	if err != nil {
		return s, fmt.Errorf("resolving %s to its storage: %w", d.path, err)
	}
	s.Ranges = rs
	return s, nil
}

// resolveDevice resolves the block device rdev; fd, when not -1, is an
// open descriptor of it (used for LOOP_GET_STATUS64).
func resolveDevice(rdev uint64, fd, depth int) ([]StorageRange, error) {
	if depth > maxStack {
		return nil, fmt.Errorf("devices stacked more than %d deep", maxStack)
	}
	dir := sysBlockDir(rdev)
	name := devName(rdev)
	size, ok := readInt(filepath.Join(dir, "size"))
	if ok {
		size *= 512 // sysfs sizes are in 512-byte sectors, whatever the device's
	} else {
		size = wholeFile
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		start, ok := readInt(filepath.Join(dir, "start"))
		parent, pok := parentDisk(dir)
		if !ok || !pok {
			return nil, fmt.Errorf("partition %s: sysfs does not give its start and disk", name)
		}
		start *= 512
		prs, err := resolveDevice(parent, -1, depth+1)
		if err != nil {
			return nil, err
		}
		step := fmt.Sprintf("%s is a partition of %s from byte %d", name, devName(parent), start)
		return subRanges(prs, start, size, step), nil
	}
	if _, err := os.Stat(filepath.Join(dir, "loop")); err == nil {
		li, err := loopBacking(rdev, dir, fd)
		if err != nil {
			return nil, fmt.Errorf("loop device %s: %w", name, err)
		}
		if li.rdev != 0 { // over a block device
			brs, err := resolveDevice(li.rdev, -1, depth+1)
			if err != nil {
				return nil, err
			}
			step := fmt.Sprintf("%s is a loop device over %s from byte %d", name, devName(li.rdev), li.off)
			return subRanges(brs, li.off, size, step), nil
		}
		if size == 0 {
			return nil, nil
		}
		return []StorageRange{{
			Ref:  StorageRef{Kind: StorageFile, Dev: li.dev, Ino: li.ino},
			Name: li.name, Off: li.off, Len: size, DiskOff: 0,
			Via: fmt.Sprintf("%s is a loop device over %s from byte %d%s", name, li.name, li.off, li.how),
		}}, nil
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "slaves")); err == nil && len(ents) > 0 {
		kind := "a stacked device"
		if _, err := os.Stat(filepath.Join(dir, "dm")); err == nil {
			kind = "a device-mapper device"
		} else if _, err := os.Stat(filepath.Join(dir, "md")); err == nil {
			kind = "an md device"
		}
		var out []StorageRange
		for _, e := range ents {
			srdev, ok := readDev(filepath.Join(sysRoot, "class", "block", e.Name(), "dev"))
			if !ok {
				continue
			}
			srs, err := resolveDevice(srdev, -1, depth+1)
			if err != nil {
				return nil, err
			}
			for _, r := range srs {
				r.Inexact, r.DiskOff = true, -1
				r.Via = fmt.Sprintf("%s is %s over %s (its table is not read: all of it is assumed); %s", name, kind, devName(srdev), r.Via)
				out = append(out, r)
			}
		}
		return out, nil
	}
	if size == 0 {
		return nil, nil
	}
	return []StorageRange{{
		Ref:  StorageRef{Kind: StorageDevice, Dev: rdev},
		Name: name, Off: 0, Len: size, DiskOff: 0, Via: name + " is a whole disk",
	}}, nil
}

// subRanges restricts the ranges of a disk to its bytes [start,
// start+n), renumbered from 0, and prefixes step to their Via. Inexact
// ranges are kept whole.
func subRanges(rs []StorageRange, start, n int64, step string) []StorageRange {
	var out []StorageRange
	end := satAdd(start, n)
	for _, r := range rs {
		r.Via = step + "; " + r.Via
		if r.Inexact {
			out = append(out, r)
			continue
		}
		lo, hi := max(r.DiskOff, start), min(satAdd(r.DiskOff, r.Len), end)
		if lo >= hi {
			continue
		}
		r.Off += lo - r.DiskOff
		r.Len = hi - lo
		r.DiskOff = lo - start
		out = append(out, r)
	}
	return out
}

// loopInfo is what a loop device is over.
type loopInfo struct {
	dev, ino uint64 // the backing file's st_dev and inode
	rdev     uint64 // the backing device, when it is one (then dev, ino are its node's)
	off      int64  // lo_offset
	name     string // the backing file's path, for messages
	how      string // "" from LOOP_GET_STATUS64, else how it was found
}

// loopBacking asks LOOP_GET_STATUS64 (on fd, or on the device's node
// when fd is -1) what the loop device rdev is over, and falls back on
// sysfs (loop/offset and the inode of loop/backing_file) when the node
// cannot be opened or the ioctl is refused.
func loopBacking(rdev uint64, dir string, fd int) (loopInfo, error) {
	name := readTrim(filepath.Join(dir, "loop", "backing_file"))
	var ioErr error
	if fd < 0 {
		nfd, err := openDevNode(rdev)
		if err == nil {
			defer unix.Close(nfd)
			fd = nfd
		}
		ioErr = err
	}
	if fd >= 0 {
		info, err := unix.IoctlLoopGetStatus64(fd)
		if err == nil {
			if name == "" {
				name = unix.ByteSliceToString(info.File_name[:])
			}
			return loopInfo{dev: info.Device, ino: info.Inode, rdev: info.Rdevice, off: int64(info.Offset), name: name}, nil
		}
		ioErr = fmt.Errorf("LOOP_GET_STATUS64: %w", err)
	}
	off, ok := readInt(filepath.Join(dir, "loop", "offset"))
	if !ok || name == "" || strings.HasSuffix(name, " (deleted)") {
		return loopInfo{}, fmt.Errorf("%v, and sysfs does not name a backing file that exists", ioErr)
	}
	var st unix.Stat_t
	if err := unix.Stat(name, &st); err != nil {
		return loopInfo{}, fmt.Errorf("%v, and the backing file sysfs names: %w", ioErr, err)
	}
	li := loopInfo{dev: uint64(st.Dev), ino: st.Ino, off: off, name: name, how: fmt.Sprintf(" (from sysfs: %v)", ioErr)}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		li.rdev = uint64(st.Rdev)
	}
	return li, nil
}

// openDevNode opens a node of the block device rdev read-only, without
// O_EXCL: /dev/NAME (sysfs uevent's DEVNAME), else /dev/block/M:m, checked
// to be that device.
func openDevNode(rdev uint64) (int, error) {
	var last error = fmt.Errorf("no device node found for %d:%d", unix.Major(rdev), unix.Minor(rdev))
	for _, p := range []string{devName(rdev), fmt.Sprintf("/dev/block/%d:%d", unix.Major(rdev), unix.Minor(rdev))} {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			last = fmt.Errorf("open %s: %w", p, err)
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || uint64(st.Rdev) != rdev {
			unix.Close(fd)
			last = fmt.Errorf("%s is not device %d:%d", p, unix.Major(rdev), unix.Minor(rdev))
			continue
		}
		return fd, nil
	}
	return -1, last
}

func sysBlockDir(rdev uint64) string {
	return filepath.Join(sysRoot, "dev", "block", fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev)))
}

// devName is /dev/NAME of the device rdev (its kernel name), or M:m.
func devName(rdev uint64) string {
	dir := sysBlockDir(rdev)
	for _, line := range strings.Split(readTrim(filepath.Join(dir, "uevent")), "\n") {
		if v, ok := strings.CutPrefix(line, "DEVNAME="); ok && v != "" {
			return "/dev/" + v
		}
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		return "/dev/" + filepath.Base(real)
	}
	return fmt.Sprintf("device %d:%d", unix.Major(rdev), unix.Minor(rdev))
}

// parentDisk is the disk a partition's sysfs directory belongs to.
func parentDisk(dir string) (uint64, bool) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return 0, false
	}
	return readDev(filepath.Join(filepath.Dir(real), "dev"))
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readInt(path string) (int64, bool) {
	v, err := strconv.ParseInt(readTrim(path), 10, 64)
	return v, err == nil && v >= 0
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// overlap is where two resolved disks share storage.
type overlap struct {
	a, b   StorageRange
	lo, hi int64 // the shared bytes of the storage
}

// firstOverlap finds the first bytes of storage that x and y share.
func firstOverlap(x, y Storage) (overlap, bool) {
	for _, a := range x.Ranges {
		for _, b := range y.Ranges {
			if a.Ref != b.Ref {
				continue
			}
			if lo, hi := max(a.Off, b.Off), min(a.End(), b.End()); lo < hi {
				return overlap{a: a, b: b, lo: lo, hi: hi}, true
			}
		}
	}
	return overlap{}, false
}

// OverlapError is the detail of ErrOverlap: which bytes of which storage
// both disks are, and where those bytes are in each disk.
type OverlapError struct {
	Source, Target string // the two paths
	// Storage names the shared storage; StorageName is a path of it, for
	// messages.
	Storage     StorageRef
	StorageName string
	// Off and Len are the shared bytes of the storage.
	Off, Len int64
	// SourceOff and TargetOff are where the shared bytes start in the
	// source and in the target; -1 when not known (device-mapper, md).
	SourceOff, TargetOff int64
	// SourceVia and TargetVia say how each path was resolved.
	SourceVia, TargetVia string
}

func (e *OverlapError) Error() string {
	where := func(off int64) string {
		if off < 0 {
			return "somewhere"
		}
		return "at byte " + strconv.FormatInt(off, 10)
	}
	name := e.StorageName
	if name == "" {
		name = e.Storage.String()
	} else {
		name += " (" + e.Storage.String() + ")"
	}
	return fmt.Sprintf("%v: source %s and target %s are one storage: bytes %s of %s are the source %s and the target %s (%s; %s); "+
		"writing the target would change the source. Choose a target on other storage, or make the two ranges disjoint "+
		"(loop devices with other --offset/--sizelimit, partitions that do not overlap)",
		ErrOverlap, e.Source, e.Target, byteRange(e.Off, e.Len), name, where(e.SourceOff), where(e.TargetOff), e.SourceVia, e.TargetVia)
}

func (e *OverlapError) Unwrap() error { return ErrOverlap }

// byteRange prints [off, off+n), or [off, end of file) for a whole file.
func byteRange(off, n int64) string {
	if satAdd(off, n) == math.MaxInt64 {
		return fmt.Sprintf("[%d, end of file)", off)
	}
	return fmt.Sprintf("[%d, %d)", off, off+n)
}

// CheckSides refuses a source and a target (or the two disks of a
// verification) that share storage: both are resolved with Storage, and
// when some byte of a file or whole device is in both, CheckSides
// returns an *Error (Op "check sides", Path the target's) wrapping an
// *OverlapError, which unwraps to ErrOverlap; its message names both
// paths, the storage, the shared byte range and how to fix it. Ranges
// that only touch do not overlap: two loop devices over disjoint ranges
// of one file, or two partitions of one disk, pass. A disk whose storage
// cannot be resolved is refused with that error (Op "check sides").
//
// Call it after opening both sides and before writing anything. It does
// not check for mounts and locks: OpenSource and OpenTarget do that.
func CheckSides(src, dst *Disk) error {
	if src == nil || dst == nil {
		return &Error{Op: "check sides", Off: -1, Err: errors.New("a nil disk")}
	}
	ss, err := src.Storage()
	if err != nil {
		return newError("check sides", src.path, -1, 0, err)
	}
	ds, err := dst.Storage()
	if err != nil {
		return newError("check sides", dst.path, -1, 0, err)
	}
	o, ok := firstOverlap(ss, ds)
	if !ok {
		return nil
	}
	at := func(r StorageRange) int64 {
		if r.Inexact {
			return -1
		}
		return r.DiskOff + (o.lo - r.Off)
	}
	return newError("check sides", dst.path, -1, 0, &OverlapError{
		Source: src.path, Target: dst.path,
		Storage: o.a.Ref, StorageName: firstNonEmpty(o.a.Name, o.b.Name),
		Off: o.lo, Len: o.hi - o.lo,
		SourceOff: at(o.a), TargetOff: at(o.b),
		SourceVia: o.a.Via, TargetVia: o.b.Via,
	})
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// checkInUse refuses a disk that is in use under another name: for a
// target, a fcntl lock (OFD or POSIX) another opener holds on it, or an
// alias of its storage (a loop device over it, or over a range of it, or
// a partition of such a loop device) that is mounted; for a source, a
// write lock or a lock on QEMU's write-permission byte, or an alias
// mounted read-write. A target then holds an OFD write lock over the
// whole file until Close. See the package doc, # Aliases.
func (d *Disk) checkInUse(target bool) error {
	if err := d.fcntlLock(target); err != nil {
		return err
	}
	st, err := d.Storage()
	if err != nil {
		return newError("open", d.path, -1, 0, err)
	}
	if len(st.Ranges) == 0 {
		return nil
	}
	for _, a := range loopAliases() {
		if d.kind == BlockDevice && a == d.rdev {
			continue // its own mounts are checked with O_EXCL and useOf
		}
		ars, err := resolveDevice(a, -1, 0)
		if err != nil {
			continue // detached meanwhile, or unreadable: not ours to judge
		}
		o, ok := firstOverlap(st, Storage{Ranges: ars})
		if !ok {
			continue
		}
		u := directUse(a)
		if !(target && u.mounted() || u.rw) {
			continue
		}
		name, loop := devName(a), a
		if p, ok := parentDisk(sysBlockDir(a)); ok {
			if _, err := os.Stat(filepath.Join(sysBlockDir(a), "partition")); err == nil {
				loop = p
			}
		}
		fix := fmt.Sprintf("unmount it (umount) and detach the loop device (losetup -d %s) first", devName(loop))
		if !target {
			fix += ", or pass AllowLive (-allow-live) for a crash-inconsistent copy"
		}
		return newError("open", d.path, -1, 0, errf(ErrMounted, "bytes %s of %s are also %s, mounted at %s (%s); %s",
			byteRange(o.lo, o.hi-o.lo), firstNonEmpty(o.a.Name, o.a.Ref.String()), name, u, o.b.Via, fix))
	}
	return nil
}

// loopAliases lists the bound loop devices and their partitions.
func loopAliases() []uint64 {
	ents, err := os.ReadDir(filepath.Join(sysRoot, "class", "block"))
	if err != nil {
		return nil
	}
	var out []uint64
	for _, e := range ents {
		dir := filepath.Join(sysRoot, "class", "block", e.Name())
		loop := filepath.Join(dir, "loop")
		if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
			if real, err := filepath.EvalSymlinks(dir); err == nil {
				loop = filepath.Join(filepath.Dir(real), "loop")
			}
		}
		if _, err := os.Stat(loop); err != nil {
			continue
		}
		if rdev, ok := readDev(filepath.Join(dir, "dev")); ok {
			out = append(out, rdev)
		}
	}
	return out
}

// directUse is the use of exactly the device rdev and of the devices
// stacked on it (holders, recursively), not of its partitions or its
// parent disk, which are aliases of their own.
func directUse(rdev uint64) deviceUse {
	fam := map[uint64]bool{}
	var u deviceUse
	var walk func(uint64, int)
	walk = func(dev uint64, depth int) {
		if fam[dev] || depth > maxStack {
			return
		}
		fam[dev] = true
		ents, _ := os.ReadDir(filepath.Join(sysBlockDir(dev), "holders"))
		for _, e := range ents {
			u.holders = append(u.holders, e.Name())
			if h, ok := readDev(filepath.Join(sysRoot, "class", "block", e.Name(), "dev")); ok {
				walk(h, depth+1)
			}
		}
	}
	walk(rdev, 0)
	mountsOf(fam, &u)
	swapsOf(fam, &u)
	return u
}

// qemuWriteByte is the byte QEMU locks (a shared lock at 100 plus the
// permission's bit) while it holds the write permission on an image:
// the image of a running VM.
const qemuWriteByte = 101

// fcntlLock deals with fcntl byte-range locks (OFD and POSIX, which do
// not conflict with flock). A target takes an OFD write lock over the
// whole file (F_OFD_SETLK), which fails while any other open file
// description or process holds a lock on any byte of it; it is kept
// until Close, so that a VM cannot start on the image while it is
// written. A source only asks (F_OFD_GETLK) whether another holds a
// write lock anywhere, or any lock on QEMU's write-permission byte.
// Filesystems without such locks are not checked.
func (d *Disk) fcntlLock(target bool) error {
	if target {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
		err := d.control(func(fd int) error {
			return retryEINTR(func() error { return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk) })
		})
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EACCES):
			held := d.lockHolder(unix.F_WRLCK, 0, 0)
			if held == "" {
				held = fmt.Sprintf("a lock held by another opener (F_OFD_SETLK: %v)", err)
			}
			return newError("open", d.path, -1, 0, errf(ErrLocked, "fcntl lock: %s; stop the program that uses it (a running VM?) or choose another target", held))
		case noLocks(err):
			return nil
		default:
			return newError("open", d.path, -1, 0, fmt.Errorf("F_OFD_SETLK: %w", err))
		}
	}
	for _, q := range []struct {
		typ        int16
		start, len int64
	}{{unix.F_RDLCK, 0, 0}, {unix.F_WRLCK, qemuWriteByte, 1}} {
		if held := d.lockHolder(q.typ, q.start, q.len); held != "" {
			return newError("open", d.path, -1, 0, errf(ErrLocked, "fcntl lock: %s; pass AllowLive (-allow-live) to read it anyway (crash-inconsistent)", held))
		}
	}
	return nil
}

// lockHolder describes the first lock another holds that conflicts with
// a lock of type typ over [start, start+n) (n == 0: to the end), or
// returns "" when there is none or the filesystem cannot say.
func (d *Disk) lockHolder(typ int16, start, n int64) string {
	lk := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: start, Len: n}
	if err := d.control(func(fd int) error {
		return retryEINTR(func() error { return unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk) })
	}); err != nil || lk.Type == unix.F_UNLCK {
		return ""
	}
	kind := "a write lock"
	if lk.Type == unix.F_RDLCK {
		kind = "a read lock"
	}
	rng := fmt.Sprintf("bytes [%d, %d)", lk.Start, lk.Start+lk.Len)
	if lk.Len == 0 {
		rng = fmt.Sprintf("bytes [%d, end of file)", lk.Start)
	}
	who := "an open file description (an OFD lock, as QEMU holds on a running VM's image)"
	if lk.Pid > 0 {
		who = fmt.Sprintf("process %d", lk.Pid)
		if comm := readTrim(fmt.Sprintf("/proc/%d/comm", lk.Pid)); comm != "" {
			who += " (" + comm + ")"
		}
		who += " (a POSIX lock)"
	}
	return fmt.Sprintf("%s on %s held by %s", kind, rng, who)
}

// fcntlUnlock releases the OFD lock of a target (Close): a memory mapping
// of BackingFile would keep the open file description, and the lock,
// alive. Unlocking what is not locked does nothing.
func (d *Disk) fcntlUnlock() {
	if !d.writable {
		return
	}
	lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: io.SeekStart}
	_ = d.control(func(fd int) error { return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk) })
}
