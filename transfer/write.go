package transfer

import (
	"context"
	"io"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// issue gives an operation its buffer (waiting for the memory budget),
// registers it with the tracker and queues it to a writer.
func (r *run) issue(ctx context.Context, ops chan<- *op, o *op) error {
	if o.kind == opWrite || !r.w.CanZero() {
		b, err := r.pool.get(ctx)
		if err != nil {
			return err
		}
		o.buf = b
	}
	r.track.add(o)
	select {
	case ops <- o:
		return nil
	case <-ctx.Done():
		r.pool.put(o.buf)
		return ctx.Err()
	}
}

// writer performs operations until ops is closed or one fails.
func (r *run) writer(ctx context.Context, ops <-chan *op) error {
	for o := range ops {
		err := r.perform(ctx, o)
		r.pool.put(o.buf)
		o.buf = nil
		if err != nil {
			return err
		}
		r.track.finish(o)
	}
	return nil
}

// perform does one operation on the target.
func (r *run) perform(ctx context.Context, o *op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n := o.len()
	if o.kind == opZero {
		if !r.w.CanZero() { // zeros are written, and charged as data
			if err := r.lim.wait(ctx, n); err != nil {
				return err
			}
		}
		if err := r.w.Zero(ctx, o.off, n, o.buf); err != nil {
			return err
		}
		r.zeroes.Add(1)
		r.zeroed.Add(n)
		r.rep.zeroed.Add(n)
		return nil
	}
	charged := false // the bandwidth limiter was already waited for
	if o.kind == opWrite && r.copier != nil && !r.noCopy.Load() && o.end <= r.srcSize {
		if err := r.lim.wait(ctx, n); err != nil {
			return err
		}
		charged = true
		ok, err := r.copier.CopyRange(ctx, r.src, o.off, n)
		if err != nil {
			return &WriteError{Op: "copy", Off: o.off, Len: n, Err: err}
		}
		if ok {
			r.copySrcRead.Add(n)
			r.writes.Add(1)
			r.written.Add(n)
			r.rep.written.Add(n)
			return nil
		}
		r.noCopy.Store(true) // it cannot copy from this source
	}
	// Source bytes; past the source's end (an unaligned source end
	// rounded up over a target that is longer), the target's own.
	b := o.buf[:n]
	se := max(o.off, min(o.end, r.srcSize))
	if err := readFull(ctx, r.src, b[:se-o.off], o.off); err != nil {
		return &ReadError{Side: blockdiff.SourceSide, Off: o.off, Len: se - o.off, Err: err}
	}
	r.copySrcRead.Add(se - o.off)
	if se < o.end {
		if err := readFull(ctx, r.dst, b[se-o.off:], se); err != nil {
			return &ReadError{Side: blockdiff.TargetSide, Off: se, Len: o.end - se, Err: err}
		}
		r.copyDstRead.Add(o.end - se)
	}
	if !charged {
		if err := r.lim.wait(ctx, n); err != nil {
			return err
		}
	}
	if err := r.w.WriteAt(ctx, b, o.off); err != nil {
		return err
	}
	r.writes.Add(1)
	r.written.Add(n)
	r.rep.written.Add(n)
	return nil
}

// readFull reads all of b at off, following the io.ReaderAt contract.
func readFull(ctx context.Context, ra io.ReaderAt, b []byte, off int64) error {
	if len(b) == 0 {
		return nil
	}
	n, err := disk.ReadAt(ctx, ra, b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// flush makes the target's completed writes durable.
func (r *run) flush(ctx context.Context) error { return r.w.Flush(ctx) }
