package localdisk

import (
	"context"
	"errors"

	"golang.org/x/sys/unix"
)

// CopyRange copies [off, off+n) of src into d at the same offset with
// copy_file_range(2): the kernel moves the bytes between the two files
// (one copy instead of a read and a write through this process, and a
// reflink where the filesystem shares blocks). It copies only between
// regular files, neither opened with Direct; otherwise, or when the kernel
// or filesystem cannot (EXDEV, EOPNOTSUPP, ENOSYS, EINVAL), it returns
// false with nothing copied and the caller reads and writes.
func (d *Disk) CopyRange(ctx context.Context, src any, off, n int64) (bool, error) {
	s, ok := src.(*Disk)
	if !ok || s.kind != RegularFile || d.kind != RegularFile || s.direct || d.direct || d.noCopyRange.Load() {
		return false, nil
	}
	if err := d.checkWrite("copy", off, n); err != nil {
		return false, err
	}
	if off > s.size.Load()-n {
		return false, nil
	}
	sfd, dfd := int(s.f.Fd()), int(d.f.Fd())
	for done := int64(0); done < n; {
		if err := ctx.Err(); err != nil {
			return true, err
		}
		ro, wo := off+done, off+done
		c, err := unix.CopyFileRange(sfd, &ro, dfd, &wo, int(min(n-done, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if done == 0 && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)) {
				d.noCopyRange.Store(true)
				return false, nil
			}
			return true, newError("copy", d.path, off+done, n-done, err)
		}
		if c == 0 {
			return true, newError("copy", d.path, off+done, n-done, errf(ErrOutOfRange, "source %s ended early", s.path))
		}
		done += int64(c)
	}
	return true, nil
}
