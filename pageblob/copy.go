package pageblob

import (
	"context"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"
)

// CopyRangeFromURL copies [off, off+n) of the blob at srcURL into the
// same range of this blob with Put Page From URL: Azure reads the source
// itself, so the bytes do not pass through this process (blob to blob,
// even across accounts). srcURL must be readable by URL: a SAS with read
// permission, or public. Ranges over 4 MiB are split; off and n must be
// multiples of 512 inside the disk (refused before any request). Each
// request carries the lease ID and the run's sequence number like a
// write. Azurite does not implement Put Page From URL (501:
// ErrNotSupported).
func (b *Blob) CopyRangeFromURL(ctx context.Context, srcURL string, off, n int64) error {
	if err := b.writable("copy", off, n); err != nil {
		return err
	}
	if _, err := ParseURL(srcURL); err != nil {
		return b.wrap("copy", off, n, err)
	}
	ctx, done := b.opCtx(ctx)
	defer done()
	for o := off; o < off+n; o += MaxPut {
		cnt := min(int64(MaxPut), off+n-o)
		if err := b.cl.limiter.Acquire(ctx); err != nil {
			return b.wrap("copy", o, cnt, err)
		}
		_, err := b.pb.UploadPagesFromURL(ctx, srcURL, o, o, cnt, &pageblob.UploadPagesFromURLOptions{
			SequenceNumberAccessConditions: b.seqCond(),
			AccessConditions:               b.leaseCond(),
		})
		b.cl.limiter.Release()
		b.cache.wrote(o, cnt)
		if err != nil {
			return b.wrap("copy", o, cnt, err)
		}
		b.cl.limiter.Success()
	}
	return nil
}
