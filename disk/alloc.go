package disk

import "context"

// AllocationMapper is an optional capability of a disk (discovered on the
// io.ReaderAt by type assertion): it tells which parts of a range may hold
// data. Everything else reads as zeros and is neither read nor compared
// byte by byte: two unallocated ranges are equal at no cost, and a range
// unallocated on one side only needs the other side's bytes checked for
// zeros. *os.File gets this from SEEK_DATA/SEEK_HOLE without implementing it.
type AllocationMapper interface {
	// AllocatedRanges returns sorted, non-overlapping ranges inside
	// [off, off+n) that may hold data. It may be called concurrently.
	AllocatedRanges(ctx context.Context, off, n int64) ([]Range, error)
}
