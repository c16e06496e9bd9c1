//go:build darwin || freebsd

package blockdiff

// adviseWillNeed does nothing here: the kernel's own read-ahead serves
// the mapped windows (Linux's posix_fadvise is not in x/sys/unix for this
// system).
func adviseWillNeed(fd int, off, n int64) {}

// adviseDontNeed does nothing here: the cached pages stay until the
// kernel needs them.
func adviseDontNeed(fd int, off, n int64) {}

// canDropPages: adviseDontNeed drops nothing here.
const canDropPages = false
