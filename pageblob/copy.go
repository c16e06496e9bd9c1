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
	return b.copyFromURL(ctx, srcURL, "", off, n)
}

// copyFromURL sends the Put Page From URL requests of [off, off+n), the
// range already checked; authz, when not "", is the value of
// x-ms-copy-source-authorization (a bearer token for the source).
func (b *Blob) copyFromURL(ctx context.Context, srcURL, authz string, off, n int64) error {
	if err := b.beforeChange(ctx); err != nil {
		return err
	}
	ctx, done := b.opCtx(ctx)
	defer done()
	var o pageblob.UploadPagesFromURLOptions
	if authz != "" {
		o.CopySourceAuthorization = &authz
	}
	for p := off; p < off+n; p += MaxPut {
		cnt := min(int64(MaxPut), off+n-p)
		if err := b.cl.limiter.Acquire(ctx); err != nil {
			return b.wrap("copy", p, cnt, err)
		}
		o.SequenceNumberAccessConditions = b.seqCond()
		o.AccessConditions = b.leaseCond()
		_, err := b.pb.UploadPagesFromURL(ctx, srcURL, p, p, cnt, &o)
		b.cl.limiter.Release()
		b.cache.wrote(p, cnt)
		if err != nil {
			return b.wrap("copy", p, cnt, err)
		}
		b.cl.limiter.Success()
	}
	return nil
}
