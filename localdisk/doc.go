// Package localdisk opens local image files and block devices as the
// sources and targets of a sync (disk.Source, disk.Target and
// their optional capabilities). It is Linux-only.
//
//	src, err := localdisk.OpenSource("/dev/vg0/snap", localdisk.SourceOptions{})
//	if err != nil { // mounted read-write, aliased, locked: refused, saying why
//		return err
//	}
//	defer src.Close()
//	dst, err := localdisk.OpenTarget("disk.img", localdisk.TargetOptions{Create: true})
//	...
//	st, err := transfer.Sync(ctx, src, dst, nil)
//
// # Words
//
//   - disk: a regular file (an image) or a block device, opened as a *Disk.
//   - source: a disk opened read-only by OpenSource. It is never written;
//     WriteAt, ZeroRange and Resize on it fail with ErrReadOnly.
//   - target: a disk opened read-write by OpenTarget, under its exclusive
//     hold.
//   - exclusive hold: what keeps other writers out while a target is
//     written: an exclusive flock (LOCK_EX|LOCK_NB) on a file, O_EXCL on a
//     block device. A second opener gets ErrLocked. Both are released by
//     Close. flock is advisory: it stops other deltasync runs, not a
//     program that ignores it.
//   - live disk: a source that may be written while it is read (a block
//     device mounted read-write, a file being written by a deltasync
//     target). It is refused unless SourceOptions.AllowLive, which accepts
//     a crash-inconsistent copy.
//   - family of a device: the device, the whole disk of a partition, the
//     partitions of a disk, and the devices stacked on any of them
//     (/sys/.../holders: device-mapper, md), recursively. A device counts
//     as mounted when a member of its family is mounted or is active swap.
//   - bounce buffer: an aligned buffer through which Direct I/O of
//     unaligned buffers, offsets or lengths passes.
//
// # Sources
//
// A source file is opened O_RDONLY (with O_NOATIME when allowed) and, unless
// AllowLive, holds a shared flock: a file a deltasync target is writing is
// refused with ErrLocked, and no target can take it while it is read (on a
// filesystem without flock the source is read unlocked). Unless
// AllowLive, a file (or device) that is also a loop device mounted
// read-write, or that another process holds a fcntl write lock on, or
// QEMU's write-permission lock, is refused (# Aliases); Version catches
// other writes that change its mtime.
//
// A source device is checked against /proc/self/mountinfo and /proc/swaps
// for its family: mounted read-write gives ErrMounted. It is then opened
// O_RDONLY|O_EXCL. O_EXCL does not stop other readers or plain writers
// (dd, a VM), but it stops mounts, mkfs and other exclusive openers, such
// as a deltasync target, for as long as the source is open, and it is
// kernel-wide, so it also sees holders the mount table cannot show (a
// mount in another mount namespace, device-mapper, md). When O_EXCL is
// refused (EBUSY): a family mounted only read-only is read without O_EXCL
// (the mount holds it; a later remount read-write shows in Version), and
// anything else gives ErrLocked. With AllowLive, none of this is done.
//
// # Targets
//
// A target file is opened O_RDWR (O_CREAT with mode 0644 when
// TargetOptions.Create; a new target is empty and stays sparse as it is
// grown by Resize) and takes an exclusive flock. A target device is opened
// O_RDWR|O_EXCL: a mounted device gives ErrMounted, another exclusive
// holder ErrLocked, a device set read-only (BLKROGET) ErrReadOnly. EROFS,
// and EACCES or EPERM when opening for writing (an immutable file, no
// permission), give ErrReadOnly.
//
// A target is also refused when its storage is in use under another name
// or locked by another program (# Aliases).
//
// A write never grows a disk: writes past Size fail with ErrOutOfRange,
// and a target is grown with Resize, so that a size mismatch is never
// hidden.
//
// # Aliases
//
// One storage may have several names: a loop device and its backing
// file, two loop devices over one file, a disk and its partitions, a
// partition of a loop device and the file beneath. Storage resolves a
// disk to what stores its bytes, by number, never by path: a regular file
// is its st_dev and inode (the whole file, whatever its size); a loop
// device is its backing file or device from lo_offset for the loop
// device's size (bounded by lo_sizelimit), from LOOP_GET_STATUS64 (sysfs
// loop/offset and the inode of loop/backing_file when the ioctl is not
// allowed); a partition is its range of its disk
// (/sys/dev/block/M:m/{start,size}); a device-mapper or md device is each
// of its members (/sys/.../slaves), whole (Inexact: their tables are not
// read, so a device-mapper device overlaps anything on its members'
// ranges, even an unrelated logical volume of the same physical volume);
// any other block device is itself.
//
// CheckSides refuses a source and a target whose ranges share a byte,
// with ErrOverlap (an *OverlapError naming both paths, the storage and
// the shared bytes); AllowLive does not lift it. Disjoint ranges of one
// storage pass: two partitions, loop devices over disjoint
// --offset/--sizelimit ranges. The deltasync command calls it for every
// seed, sync and verify between local disks, before anything is written.
//
// OpenTarget and (unless AllowLive) OpenSource check every bound loop
// device and each of its partitions whose storage overlaps the disk's:
// mounted (or active swap, or under a mounted device-mapper or md device)
// gives ErrMounted for a target, mounted read-write for a source. So the
// image file of a mounted loop device is refused as a target, as the
// loop device itself is.
//
// They also deal with fcntl byte-range locks (OFD and POSIX), which do
// not conflict with flock: QEMU holds OFD locks on the images of a
// running VM (a shared lock on byte 100 plus each permission it holds,
// 101 for writing). A target takes an OFD write lock over its whole file
// or device node (F_OFD_SETLK); any lock another process or open file
// description holds, on any byte, refuses it with ErrLocked, naming the
// lock and its holder (a process ID for a POSIX lock), and while the
// target is open nobody else can take one, so a VM cannot start on it.
// A source asks (F_OFD_GETLK) for a write lock anywhere, or any lock on
// byte 101 (a VM writing the image), and is refused with ErrLocked. A
// filesystem without such locks is not checked.
//
// Not seen: a loop device in use without being mounted (a VM on
// /dev/loopN directly shows only through its fcntl locks on that node),
// a file under another name in another mount namespace whose sysfs path
// cannot be reached when LOOP_GET_STATUS64 is refused, a target file on a
// filesystem mounted from the source device, and one page blob under two
// URLs (pageblob's business).
//
// # Sizes and alignment
//
// A device's size is BLKGETSIZE64, its logical and physical sector sizes
// BLKSSZGET and BLKPBSZGET. A file's size need not be a multiple of 512:
// such a file is accepted, its last sector is partial, and the last write
// or zeroing ends at Size. WriteLimits reports the logical sector size of
// a device and 512 for a file (with Direct, the direct I/O alignment if
// larger), and 64 MiB as the largest write (WriteAt itself takes any
// length).
//
// # Direct I/O
//
// TargetOptions.Direct opens with O_DIRECT. The alignment it needs comes
// from statx(STATX_DIOALIGN), or is assumed: the logical sector size of a
// device, 4096 for a file. Aligned buffers go straight to the kernel;
// others move through a pool of aligned 1 MiB bounce buffers, and a write
// that covers part of a block reads that block first (read-modify-write,
// serialised between unaligned writes). The partial last block of a file
// whose size is not aligned is written whole and the file is then cut back
// to its size. With Direct, BackingFile returns nil and blockdiff reads
// through ReadAt.
//
// # Zeroing
//
// ZeroRange on a file punches a hole (fallocate PUNCH_HOLE|KEEP_SIZE,
// PunchHoleMode, the default) or, for thick-provisioned images that must
// keep their blocks, marks the range as zeros in place (ZERO_RANGE,
// ZeroRangeMode). Linux zeroes the partial filesystem blocks at either end
// itself. On a device it is BLKZEROOUT over whole logical sectors and
// written zeros for partial ones; never BLKDISCARD, which does not promise
// that the range reads as zeros. When the filesystem or device answers
// EOPNOTSUPP, zeros are written instead (WriteZerosMode does that always).
//
// # Allocation
//
// AllocatedRanges of a file uses SEEK_DATA/SEEK_HOLE, so that holes are
// known zeros and are not read. A device reports its whole range as
// allocated (one range), which blockdiff treats as "no map".
//
// # Durability and cache
//
// Flush is fdatasync. Close does not flush. DropCache is posix_fadvise
// DONTNEED; dirty pages are not dropped, so verification calls Flush, then
// DropCache, then reads.
//
// # Identity and version
//
// Identity is "file:<st_dev>:<inode>:<absolute path>" or
// "blockdev:<major>:<minor>:<absolute path>": stable across processes,
// and it changes (so a journal refuses to resume) when the file is
// replaced or a device gets another number. Version is size, mtime and
// inode for a file; for a device its size and, from sysfs, its media
// sequence number and write, discard and in-flight counters, so that a
// source device written during a run is noticed once the writes reach it.
//
// # Errors
//
// Every error is an *Error with the operation, the path, and the offset
// and length where it applies; it unwraps to a sentinel (ErrLocked,
// ErrMounted, ErrNotBlockOrFile, ErrReadOnly, ErrOutOfRange,
// ErrCannotResize, ErrDirectIO, ErrOverlap), an errno, or a context
// error. ReadAt
// returns a bare io.EOF at Size, as io.ReaderAt does.
//
// # Concurrency
//
// Every method of a *Disk may be called concurrently (WriteAt and
// ZeroRange on disjoint ranges), except that Resize must not race I/O
// beyond the new size. Methods called after Close fail with an error
// wrapping fs.ErrClosed.
package localdisk
