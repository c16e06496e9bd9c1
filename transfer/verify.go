package transfer

import (
	"context"
	"fmt"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// verify proves the target equal to the source over the range by reading
// both again. The target was flushed; its cache is dropped first (when it
// is a CacheDropper) so the bytes read are the device's, not the pages the
// run just wrote. The target's excess is accepted when it is kept.
func (r *run) verify(ctx context.Context) error {
	if r.hi == r.lo {
		return nil
	}
	if cd, ok := r.dst.(disk.CacheDropper); ok {
		if err := cd.DropCache(r.lo, r.hi-r.lo); err != nil {
			return fmt.Errorf("transfer: verify: dropping the target's cache of [%d,+%d): %w", r.lo, r.hi-r.lo, err)
		}
	}
	bo := blockdiff.Options{
		BlockSize:   r.c.bs,
		Concurrency: r.c.compareConc,
		NoMmap:      r.c.NoMmap,
		Direct:      r.c.DirectReads,
		Offset:      r.lo,
		Length:      r.hi - r.lo,
		Progress:    r.rep.advance,
	}
	bst, err := r.diff(ctx, r.dst, r.dst.Size(), &bo, func(x disk.Extent) error {
		if x.Kind == disk.Excess && r.excessKept {
			return nil
		}
		return &VerifyError{Off: x.Off, Len: x.Len, Kind: x.Kind}
	})
	r.verSrcRead += bst.SourceRead
	r.verDstRead += bst.TargetRead
	return err
}
