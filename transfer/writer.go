package transfer

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// A Writer is the write path of Seed and Sync, for callers that bring
// their own bytes (patch.Apply): it reads the target's capabilities once,
// and then writes, clears, resizes and flushes it the way they do. Writes
// are split into pieces of at most WriteSize; a range is cleared with the
// target's ZeroRange (disk.Zeroer) in pieces of at most ZeroSize, or by
// writing zeros; a short write is an error; a failed write, zeroing,
// resize or flush of the target is a *WriteError (Resize also says
// ErrTargetTooSmall or ErrBadOptions when the target cannot take the
// size). The order of resizes and flushes, which is what makes a
// run durable, is the caller's: the methods do what they say and no more.
//
// The offsets and lengths given must be multiples of Alignment, except
// where a range ends at the target's end. A Writer may be used by several
// goroutines at once, on ranges that do not overlap.
type Writer struct {
	dst     disk.Target
	align   int64
	size    int64 // largest single write
	zsize   int64 // largest single ZeroRange; 0 without a Zeroer
	zeroer  disk.Zeroer
	flusher disk.Flusher
	resizer disk.Resizer

	zbuf  []byte // zeros for a target without Zeroer, allocated on first use
	zonce sync.Once

	flushNanos atomic.Int64
}

// WriterOptions tune NewWriter. The zero value means the documented
// defaults; a nil *WriterOptions is the zero value.
type WriterOptions struct {
	// WriteSize is the largest single write: lowered to the target's
	// WriteLimits maximum, rounded down to its alignment. Default
	// DefaultWriteSize.
	WriteSize int64
	// ZeroSize is the largest single ZeroRange call, rounded down to the
	// target's alignment. Default DefaultZeroSize.
	ZeroSize int64
}

// NewWriter reads dst's capabilities (disk.WriteLimits, Zeroer, Flusher,
// Resizer) and returns a Writer for it. It refuses, with ErrBadOptions, an
// alignment that is not a divisor or a multiple of 512 up to
// blockdiff.MaxBlockSize, and sizes that leave no write possible.
func NewWriter(dst disk.Target, opts *WriterOptions) (*Writer, error) {
	var o WriterOptions
	if opts != nil {
		o = *opts
	}
	if dst == nil {
		return nil, badOptions("nil target")
	}
	if o.WriteSize < 0 || o.ZeroSize < 0 {
		return nil, badOptions("write size %d, zero size %d", o.WriteSize, o.ZeroSize)
	}
	if o.WriteSize == 0 {
		o.WriteSize = DefaultWriteSize
	}
	if o.ZeroSize == 0 {
		o.ZeroSize = DefaultZeroSize
	}
	w := &Writer{dst: dst, align: 1}
	var maxWrite int64
	if wl, ok := dst.(disk.WriteLimits); ok {
		w.align, maxWrite = wl.WriteLimits()
	}
	if w.align < 1 || w.align > blockdiff.MaxBlockSize || (w.align%blockdiff.SectorSize != 0 && blockdiff.SectorSize%w.align != 0) {
		return nil, badOptions("target alignment %d is not a divisor or multiple of 512 up to %d", w.align, blockdiff.MaxBlockSize)
	}
	if maxWrite < 0 {
		return nil, badOptions("target maximum write %d", maxWrite)
	}
	w.size = o.WriteSize
	if maxWrite > 0 {
		w.size = min(w.size, maxWrite)
	}
	w.size = roundDown(w.size, w.align)
	if w.size < w.align {
		return nil, badOptions("no write fits: alignment %d, maximum write %d, write size %d", w.align, maxWrite, o.WriteSize)
	}
	if z, ok := dst.(disk.Zeroer); ok {
		w.zeroer = z
		w.zsize = max(w.align, roundDown(o.ZeroSize, w.align))
	}
	w.flusher, _ = dst.(disk.Flusher)
	w.resizer, _ = dst.(disk.Resizer)
	return w, nil
}

// Alignment is the target's write alignment (1 when it has none).
func (w *Writer) Alignment() int64 { return w.align }

// WriteSize is the largest single write.
func (w *Writer) WriteSize() int64 { return w.size }

// ZeroSize is the largest single ZeroRange call; 0 when the target has
// no Zeroer (zeros are then written, in pieces of WriteSize).
func (w *Writer) ZeroSize() int64 { return w.zsize }

// CanZero says whether the target clears ranges itself (disk.Zeroer);
// without it, Zero writes zeros.
func (w *Writer) CanZero() bool { return w.zeroer != nil }

// CanResize says whether the target can be grown or cut (disk.Resizer).
func (w *Writer) CanResize() bool { return w.resizer != nil }

// CanFlush says whether the target has a Flush (disk.Flusher); without
// it, Flush does nothing.
func (w *Writer) CanFlush() bool { return w.flusher != nil }

// FlushTime is the time spent in Flush so far.
func (w *Writer) FlushTime() time.Duration { return time.Duration(w.flushNanos.Load()) }

// WriteAt writes b at off, in pieces of at most WriteSize.
func (w *Writer) WriteAt(ctx context.Context, b []byte, off int64) error {
	for a := 0; a < len(b); a += int(w.size) {
		if err := w.write(ctx, "write", b[a:min(len(b), a+int(w.size))], off+int64(a)); err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) write(ctx context.Context, op string, b []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n, err := disk.WriteAt(ctx, w.dst, b, off)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return &WriteError{Op: op, Off: off, Len: int64(len(b)), Err: err}
	}
	return nil
}

// Zero clears [off, off+n): with the target's ZeroRange in pieces of at
// most ZeroSize, or, when it has none, by writing zeros in pieces of at
// most WriteSize. buf, when not nil, is the memory those zeros are
// written from (it is cleared first; pieces are at most len(buf)); nil
// uses one zero buffer of WriteSize that the Writer allocates on first
// use and shares, read-only, between callers.
func (w *Writer) Zero(ctx context.Context, off, n int64, buf []byte) error {
	if w.zeroer != nil {
		for a := off; a < off+n; a += w.zsize {
			if err := ctx.Err(); err != nil {
				return err
			}
			m := min(w.zsize, off+n-a)
			if err := w.zeroer.ZeroRange(ctx, a, m); err != nil {
				return &WriteError{Op: "zero", Off: a, Len: m, Err: err}
			}
		}
		return nil
	}
	if buf == nil {
		buf = w.zeros()
	} else {
		buf = buf[:min(int64(len(buf)), w.size, n)]
		clear(buf)
	}
	if len(buf) == 0 {
		return badOptions("zeroing %d bytes at %d with an empty buffer", n, off)
	}
	for a := off; a < off+n; a += int64(len(buf)) {
		if err := w.write(ctx, "zero", buf[:min(int64(len(buf)), off+n-a)], a); err != nil {
			return err
		}
	}
	return nil
}

// zeros returns the shared zero buffer.
func (w *Writer) zeros() []byte {
	w.zonce.Do(func() { w.zbuf = make([]byte, w.size) })
	return w.zbuf
}

// Resize gives the target size bytes and checks that it then reports
// them. A target that cannot grow (it is not a disk.Resizer, or its Resize
// fails) when size is larger than its present size fails with
// ErrTargetTooSmall.
func (w *Writer) Resize(ctx context.Context, size int64) error {
	before := w.dst.Size()
	if size == before {
		return nil
	}
	if w.resizer == nil {
		if size > before {
			return fmt.Errorf("%w: target is %d bytes, %d are needed, and the target cannot be grown", ErrTargetTooSmall, before, size)
		}
		return badOptions("the target has %d bytes, %d are wanted, and the target cannot be cut", before, size)
	}
	if err := w.resizer.Resize(ctx, size); err != nil {
		werr := &WriteError{Op: "resize", Off: size, Err: fmt.Errorf("from %d bytes: %w", before, err)}
		if size > before && ctx.Err() == nil {
			// A target that cannot grow (a block device) is too small,
			// whatever its type says it can do.
			return fmt.Errorf("%w: target is %d bytes, %d are needed, and growing it failed: %w", ErrTargetTooSmall, before, size, werr)
		}
		return werr
	}
	if got := w.dst.Size(); got != size {
		return &WriteError{Op: "resize", Off: size, Err: fmt.Errorf("target reports %d bytes after resizing from %d", got, before)}
	}
	return nil
}

// Flush makes the target's completed writes durable (disk.Flusher); for a
// target without Flush it only checks ctx.
func (w *Writer) Flush(ctx context.Context) error {
	if w.flusher == nil {
		return ctx.Err()
	}
	t := time.Now()
	err := w.flusher.Flush(ctx)
	w.flushNanos.Add(int64(time.Since(t)))
	if err != nil {
		return &WriteError{Op: "flush", Err: err}
	}
	return nil
}
