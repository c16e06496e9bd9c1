package disk

import "context"

// RangeCopier copies [off, off+n) of a source into the target at the same
// offset without the bytes passing through this process: copy_file_range
// between two local files, Put Page From URL between two page blobs. src
// is the run's Source, which the copier inspects (by type) to see whether
// it can copy from it. It returns false, having copied nothing, when it
// cannot copy from this source; the engine then reads and writes. It may
// be called concurrently on disjoint ranges. Fallback: read and write.
type RangeCopier interface {
	CopyRange(ctx context.Context, src any, off, n int64) (bool, error)
}
