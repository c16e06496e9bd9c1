package blockdiff

import "golang.org/x/sys/unix"

// adviseWillNeed starts reading [off,off+n) into the page cache.
func adviseWillNeed(fd int, off, n int64) { _ = unix.Fadvise(fd, off, n, unix.FADV_WILLNEED) }

// adviseDontNeed drops the clean cached pages of [off,off+n).
func adviseDontNeed(fd int, off, n int64) { _ = unix.Fadvise(fd, off, n, unix.FADV_DONTNEED) }

// canDropPages: adviseDontNeed drops clean cached pages here, so a read
// after it comes from the device.
const canDropPages = true
