package disk

import (
	"context"
	"io"
)

// ReaderAtContext is a disk whose reads stop when their context is
// cancelled, a read in flight included (a ranged GET of a page blob, a
// request to an agent). Engines prefer it to io.ReaderAt, whose calls
// cannot be interrupted, so that a cancelled run returns promptly even
// when the service stopped answering. Same contract as io.ReaderAt
// otherwise; on cancellation the error wraps ctx.Err().
type ReaderAtContext interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// WriterAtContext is a disk whose writes stop when their context is
// cancelled, a write in flight included (a Put Page). A cancelled write
// may or may not have reached the disk. Same contract as io.WriterAt
// otherwise; on cancellation the error wraps ctx.Err().
type WriterAtContext interface {
	WriteAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// ReadAt reads p at off from r under ctx: through ReadAtContext when r has
// it, else through ReadAt after checking ctx.
func ReadAt(ctx context.Context, r io.ReaderAt, p []byte, off int64) (int, error) {
	if rc, ok := r.(ReaderAtContext); ok {
		return rc.ReadAtContext(ctx, p, off)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return r.ReadAt(p, off)
}

// WriteAt writes p at off to w under ctx: through WriteAtContext when w
// has it, else through WriteAt after checking ctx.
func WriteAt(ctx context.Context, w io.WriterAt, p []byte, off int64) (int, error) {
	if wc, ok := w.(WriterAtContext); ok {
		return wc.WriteAtContext(ctx, p, off)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return w.WriteAt(p, off)
}
