package disk

import "context"

// The optional capabilities of a Source or Target are discovered by type
// assertion. A capability a disk lacks has a documented fallback.

// Zeroer clears a range so that it reads as zeros, without sending zeros
// (fallocate PUNCH_HOLE or ZERO_RANGE, BLKZEROOUT, Clear Pages).
// Fallback: zeros are written. ZeroRange may be called concurrently with
// WriteAt and other ZeroRange calls on disjoint ranges.
type Zeroer interface {
	ZeroRange(ctx context.Context, off, n int64) error
}
