package transfer

import (
	"context"

	"github.com/deltasync/deltasync/disk"
)

// Sync makes an existing target identical to the source over the range of
// opts, writing only what differs. Both disks are compared (blockdiff) and
// the differing extents are written while the comparison goes on, in one
// pass: Data extents are copied from the source, Zero extents cleared.
//
// Before anything is written, a target smaller than the source is grown
// (Resizer) or the run fails with ErrTargetTooSmall; a longer target keeps
// its excess unless Options.TruncateExcess. A journaled run (both disks
// Identifiers) that was interrupted resumes from its watermark. With
// Options.Verify the result is proven by reading both sides again.
//
// Stats describe what was done, also when an error is returned. Errors
// are *ReadError, *WriteError, *VerifyError, *JournalError, the context's
// error, or wrap ErrTargetTooSmall, ErrSourceChanged, ErrSameDisk or
// ErrBadOptions.
func Sync(ctx context.Context, src disk.Source, dst disk.Target, opts *Options) (Stats, error) {
	return execute(ctx, modeSync, src, dst, opts)
}
