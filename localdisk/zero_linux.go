package localdisk

import (
	"context"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	fallocChunk  = 1 << 30  // bytes per fallocate call; ctx is checked between calls
	zerooutChunk = 64 << 20 // bytes per BLKZEROOUT call (the device writes them)
)

// ZeroRange makes [off, off+n) read as zeros without sending zeros. A
// file uses fallocate: PUNCH_HOLE|KEEP_SIZE by default, ZERO_RANGE|KEEP_SIZE
// with ZeroRangeMode. A device uses BLKZEROOUT on its whole logical
// sectors (never BLKDISCARD, which does not promise zeros), and writes
// the partial sectors at either end. When the filesystem or the device
// refuses (EOPNOTSUPP), zeros are written in pieces of 1 MiB from a shared
// zero buffer, and are written from then on without asking again. The
// range must lie inside [0, Size). ctx is checked between pieces; a piece
// already started runs to its end.
func (d *Disk) ZeroRange(ctx context.Context, off, n int64) error {
	if err := d.checkWrite("zero", off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if d.kind == BlockDevice {
		return d.zeroDevice(ctx, off, n)
	}
	return d.zeroFile(ctx, off, n)
}

func (d *Disk) zeroFile(ctx context.Context, off, n int64) error {
	if d.zeroMode == WriteZerosMode || d.noFallocate.Load() {
		return d.writeZeros(ctx, off, n)
	}
	mode := uint32(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE)
	if d.zeroMode == ZeroRangeMode {
		mode = unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE
	}
	for pos, end := off, off+n; pos < end; {
		if err := ctx.Err(); err != nil {
			return newError("zero", d.path, pos, end-pos, err)
		}
		c := min(end-pos, fallocChunk)
		err := d.control(func(fd int) error {
			return retryEINTR(func() error { return unix.Fallocate(fd, mode, pos, c) })
		})
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
			d.noFallocate.Store(true)
			return d.writeZeros(ctx, pos, end-pos)
		}
		if err != nil {
			return newError("zero", d.path, pos, end-pos, fmt.Errorf("fallocate %s: %w", d.zeroMode, err))
		}
		pos += c
	}
	return nil
}

func (d *Disk) zeroDevice(ctx context.Context, off, n int64) error {
	end := off + n
	s, e := alignUp(off, d.logical), alignDown(end, d.logical)
	if s >= e {
		return d.writeZeros(ctx, off, n)
	}
	for pos := s; pos < e; {
		if err := ctx.Err(); err != nil {
			return newError("zero", d.path, pos, e-pos, err)
		}
		if d.noZeroout.Load() {
			if err := d.writeZeros(ctx, pos, e-pos); err != nil {
				return err
			}
			break
		}
		c := min(e-pos, zerooutChunk)
		r := [2]uint64{uint64(pos), uint64(c)}
		err := d.control(func(fd int) error {
			return retryEINTR(func() error {
				_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r)))
				if e != 0 {
					return e
				}
				return nil
			})
		})
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) {
			d.noZeroout.Store(true)
			continue
		}
		if err != nil {
			return newError("zero", d.path, pos, e-pos, fmt.Errorf("BLKZEROOUT: %w", err))
		}
		pos += c
	}
	if off < s {
		if err := d.writeZeros(ctx, off, s-off); err != nil {
			return err
		}
	}
	if e < end {
		return d.writeZeros(ctx, e, end-e)
	}
	return nil
}

// writeZeros writes zeros over [off, off+n) in pieces of the zero buffer.
func (d *Disk) writeZeros(ctx context.Context, off, n int64) error {
	z := zeroBuf()
	for pos, end := off, off+n; pos < end; {
		if err := ctx.Err(); err != nil {
			return newError("zero", d.path, pos, end-pos, err)
		}
		c := min(end-pos, int64(len(z)))
		w, err := d.writeAt(z[:c], pos)
		if err != nil {
			return newError("zero", d.path, pos+int64(w), end-pos-int64(w), fmt.Errorf("writing zeros: %w", err))
		}
		pos += c
	}
	return nil
}
