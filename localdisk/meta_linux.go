package localdisk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/disk"
)

// Flush makes every completed write durable (fdatasync; on a device this
// also flushes its volatile write cache). A source has nothing to flush.
// ctx is checked before the call; fdatasync itself cannot be interrupted.
func (d *Disk) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return newError("flush", d.path, -1, 0, err)
	}
	if !d.writable {
		return nil
	}
	if err := d.control(func(fd int) error { return retryEINTR(func() error { return unix.Fdatasync(fd) }) }); err != nil {
		// Pages whose write-back failed may stay cached, clean, holding
		// what the disk lost: drop them (a loop device's backing file's
		// too), so that what is read next comes from the disk.
		_ = d.DropCache(0, d.size.Load())
		return newError("flush", d.path, -1, 0, fmt.Errorf("fdatasync: %w", err))
	}
	return nil
}

// dropLoopBacking drops the cached pages of the file backing the loop
// device rdev, if it is one: the device's reads come from that file's
// page cache, which a failed write-back leaves holding what the disk
// lost.
func dropLoopBacking(rdev uint64) {
	b, err := os.ReadFile(filepath.Join(sysDir(rdev), "loop", "backing_file"))
	if err != nil {
		return
	}
	f, err := os.OpenFile(strings.TrimSpace(string(b)), os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	f.Close()
}

// Resize sets the size of a target. A file is truncated or extended
// (ftruncate: growth is sparse, shrinking discards the tail; the engine
// decides which it wants). A block device cannot change size: asking for
// its own size succeeds, any other size fails with ErrCannotResize. Resize
// must not run concurrently with I/O beyond the smaller of the two sizes.
func (d *Disk) Resize(ctx context.Context, size int64) error {
	if err := ctx.Err(); err != nil {
		return newError("resize", d.path, -1, 0, err)
	}
	if !d.writable {
		return newError("resize", d.path, -1, 0, errf(ErrReadOnly, "opened as a source"))
	}
	if size < 0 {
		return newError("resize", d.path, -1, 0, errf(ErrOutOfRange, "negative size %d", size))
	}
	if d.kind == BlockDevice {
		if cur := d.size.Load(); size != cur {
			return newError("resize", d.path, -1, 0, errf(ErrCannotResize, "the device has %d bytes, %d were asked", cur, size))
		}
		return nil
	}
	if err := d.control(func(fd int) error { return retryEINTR(func() error { return unix.Ftruncate(fd, size) }) }); err != nil {
		return newError("resize", d.path, -1, 0, fmt.Errorf("ftruncate to %d: %w", size, err))
	}
	d.size.Store(size)
	return nil
}

// DropCache asks the kernel to drop the cached pages of [off, off+n)
// (posix_fadvise DONTNEED), so the next read comes from the device. Dirty
// pages are not dropped: call Flush first. n == 0 drops nothing.
func (d *Disk) DropCache(off, n int64) error {
	if off < 0 || n < 0 {
		return newError("drop cache", d.path, off, n, errf(ErrOutOfRange, "negative offset or length"))
	}
	if n == 0 {
		return nil // fadvise would read 0 as "to the end"
	}
	if err := d.control(func(fd int) error { return unix.Fadvise(fd, off, n, unix.FADV_DONTNEED) }); err != nil {
		return newError("drop cache", d.path, off, n, fmt.Errorf("posix_fadvise DONTNEED: %w", err))
	}
	if d.kind == BlockDevice {
		dropLoopBacking(d.rdev)
	}
	return nil
}

// AllocatedRanges returns the sorted, non-overlapping ranges inside
// [off, off+n) ∩ [0, Size) that may hold data; the rest reads as zeros.
// A file is mapped with SEEK_DATA/SEEK_HOLE (a filesystem that cannot say
// reports everything as data). A block device reports the whole range: it
// has no holes that the kernel can list. It may be called concurrently.
func (d *Disk) AllocatedRanges(ctx context.Context, off, n int64) ([]disk.Range, error) {
	if off < 0 || n < 0 {
		return nil, newError("allocated ranges", d.path, off, n, errf(ErrOutOfRange, "negative offset or length"))
	}
	end := min(off+n, d.size.Load())
	if off >= end {
		return nil, nil
	}
	if d.kind == BlockDevice {
		return []disk.Range{{Off: off, Len: end - off}}, nil
	}
	var rs []disk.Range
	for pos := off; pos < end; {
		if err := ctx.Err(); err != nil {
			return nil, newError("allocated ranges", d.path, pos, end-pos, err)
		}
		var data, hole int64
		err := d.control(func(fd int) error {
			var err error
			if data, err = unix.Seek(fd, pos, unix.SEEK_DATA); err != nil {
				return err
			}
			if data >= end {
				return nil
			}
			hole, err = unix.Seek(fd, data, unix.SEEK_HOLE)
			return err
		})
		switch {
		case errors.Is(err, unix.ENXIO): // no data from pos to the end of the file
			return rs, nil
		case err != nil && pos == off && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)):
			return []disk.Range{{Off: off, Len: end - off}}, nil // no map: all may be data
		case err != nil:
			return nil, newError("allocated ranges", d.path, pos, end-pos, fmt.Errorf("SEEK_DATA/SEEK_HOLE: %w", err))
		case data >= end:
			return rs, nil
		}
		hole = min(hole, end)
		rs = append(rs, disk.Range{Off: data, Len: hole - data})
		pos = hole
	}
	return rs, nil
}

// Identity names the disk stably across processes, without secrets:
// "file:<st_dev>:<inode>:<absolute path>" or
// "blockdev:<major>:<minor>:<absolute path>". The path is absolute but
// not resolved through symbolic links.
func (d *Disk) Identity() string {
	if d.kind == BlockDevice {
		return fmt.Sprintf("blockdev:%d:%d:%s", unix.Major(d.rdev), unix.Minor(d.rdev), d.abs)
	}
	return fmt.Sprintf("file:%d:%d:%s", d.dev, d.ino, d.abs)
}

// Version returns a token that changes when the disk's content may have
// changed. A file: "file:size=<bytes>:mtime=<ns>:ctime=<ns>:ino=<inode>"
// and, where the filesystem keeps one, ":birth=<s.ns>" (fstat, statx):
// the change time moves with any write, truncation or metadata change,
// even when the writer restores the mtime (touch -d); on kernels before
// 6.13 a write within one tick of the kernel's coarse clock after the
// previous change may keep both times.
// A device: "blockdev:size=<bytes>" (BLKGETSIZE64), followed, when sysfs
// is readable, by ":diskseq=<n>:writes=<n>:discards=<n>:inflight=<n>", the
// device's media sequence number, completed write and discard requests,
// and writes in flight (/sys/dev/block/M:m/{diskseq,stat,inflight}).
// Those counters move when anything writes to the device, but only once a
// buffered write reaches it (writeback): Version flushes the device first
// (fdatasync, which writes back others' dirty pages of it and changes no
// data), so that a write made through the page cache moves them. Writes
// made to a loop device's backing file directly do not move them (its
// times cannot stand in: a sibling loop device over another range of the
// same file moves them too).
func (d *Disk) Version(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", newError("version", d.path, -1, 0, err)
	}
	if d.kind == RegularFile {
		var st unix.Stat_t
		if err := d.control(func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
			return "", newError("version", d.path, -1, 0, err)
		}
		v := fmt.Sprintf("file:size=%d:mtime=%d:ctime=%d:ino=%d", st.Size, st.Mtim.Nano(), st.Ctim.Nano(), st.Ino)
		if e, err := d.current(); err == nil && e.Birth != "" {
			v += ":birth=" + e.Birth
		}
		return v, nil
	}
	var size uint64
	if err := d.control(func(fd int) error {
		var err error
		size, err = ioctlUint64(fd, unix.BLKGETSIZE64)
		return err
	}); err != nil {
		return "", newError("version", d.path, -1, 0, fmt.Errorf("BLKGETSIZE64: %w", err))
	}
	if err := d.control(func(fd int) error { return retryEINTR(func() error { return unix.Fdatasync(fd) }) }); err != nil {
		return "", newError("version", d.path, -1, 0, fmt.Errorf("fdatasync, so that buffered writes reach the counters: %w", err))
	}
	v := fmt.Sprintf("blockdev:size=%d", size)
	if c, ok := deviceCounters(d.rdev); ok {
		v += ":" + c
	}
	return v, nil
}

// deviceCounters reads the sysfs counters described at Version.
func deviceCounters(rdev uint64) (string, bool) {
	dir := sysDir(rdev)
	stat, err1 := os.ReadFile(filepath.Join(dir, "stat"))
	infl, err2 := os.ReadFile(filepath.Join(dir, "inflight"))
	if err1 != nil || err2 != nil {
		return "", false
	}
	sf, inf := strings.Fields(string(stat)), strings.Fields(string(infl))
	// stat: read I/Os, merges, sectors, ticks; write I/Os (4), ...; discard I/Os (11), ...
	if len(sf) < 5 || len(inf) < 2 {
		return "", false
	}
	discards := "0"
	if len(sf) >= 12 {
		discards = sf[11]
	}
	seq := "none"
	if b, err := os.ReadFile(filepath.Join(dir, "diskseq")); err == nil {
		seq = strings.TrimSpace(string(b))
	} else if real, err := filepath.EvalSymlinks(dir); err == nil {
		// A partition has no diskseq of its own: take its disk's.
		if b, err := os.ReadFile(filepath.Join(filepath.Dir(real), "diskseq")); err == nil {
			seq = strings.TrimSpace(string(b))
		}
	}
	if _, err := strconv.ParseUint(sf[4], 10, 64); err != nil {
		return "", false
	}
	return fmt.Sprintf("diskseq=%s:writes=%s:discards=%s:inflight=%s", seq, sf[4], discards, inf[1]), true
}
