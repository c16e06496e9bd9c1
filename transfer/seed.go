package transfer

import (
	"context"

	"github.com/deltasync/deltasync/disk"
)

// Seed fills a new target with the source's data: blocks of zeros are not
// written at all. A source that is an AllocationMapper has its holes
// skipped without being read, and blocks read as zeros are recognised and
// skipped.
//
// A target is never assumed empty. Seed proves the target empty from its
// allocation map (an AllocationMapper reporting no data in the range), and
// then reads only the source. A target it cannot prove empty (no
// allocation map, or some data) is handled as Sync handles it: it is
// compared, read only where its allocation map says it may hold data, and
// every range that differs is written or cleared, so stale data never
// survives. Sizing, journaling, resuming and verification are those of
// Sync, and a seed interrupted can be resumed by Seed or by Sync.
func Seed(ctx context.Context, src disk.Source, dst disk.Target, opts *Options) (Stats, error) {
	return execute(ctx, modeSeed, src, dst, opts)
}
