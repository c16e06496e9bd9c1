package disk

// CacheDropper drops cached pages of a range so the next read comes from
// the device (posix_fadvise DONTNEED after a flush), for verification and
// to keep a sync from evicting the host's working set.
type CacheDropper interface {
	DropCache(off, n int64) error
}
