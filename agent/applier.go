package agent

import (
	"context"
	"io"
	"time"
)

// flushFailed records a failed flush of the session's disk: the first
// error is the session's; the disk is marked in the book, so that every
// session hashes it with O_DIRECT from now on; and its cached pages are
// dropped, so that plain reads come from the disk rather than from pages
// whose write-back failed.
func (ss *session) flushFailed(err error) {
	if ss.flushErr == nil {
		ss.flushErr = err
	}
	if !ss.s.book.mustReadDirect(ss.d.Identity()) {
		ss.s.o.Logf("agent: disk %s: a flush failed (%s); it is hashed with O_DIRECT until the agent restarts", ss.d.Identity(), errMsg(err))
	}
	ss.s.book.failedFlush(ss.d.Identity())
	_ = ss.d.DropCache(0, ss.d.Size())
}

// applier performs ordered messages one after the other, so that a flush
// or a resize follows every write sent before it.
func (ss *session) applier(ctx context.Context) {
	for o := range ss.ops {
		switch o.typ {
		case mWrite, mZero:
			ss.applyWrite(ctx, o)
		case mFlush:
			err := ss.failed
			if err == nil {
				err = ss.d.Flush(ctx)
				if err != nil {
					ss.flushFailed(err)
				}
			}
			ss.reply(o.id, err, nil)
		case mResize:
			err := ss.failed
			if err == nil {
				ss.noteChange()
				err = ss.d.Resize(ctx, o.n)
			}
			ss.reply(o.id, err, appendU64(nil, uint64(ss.d.Size())))
		case mHash:
			if err := ss.startHash(o); err != nil {
				ss.protocolFailure(err)
			}
		case mWatch:
			ss.startWatch(ctx, o)
		case mWatchEnd:
			ss.endWatch(ctx, o)
		case mCheck:
			ss.check(ctx, o)
		default:
			ss.request(ctx, o)
		}
		ss.done(o)
	}
}

// protocolFailure ends the session from outside the reader.
func (ss *session) protocolFailure(err error) {
	ss.setFatal(codeProtocol, err.Error())
	if ss.failed == nil {
		ss.failed = err
	}
	ss.sendFatal()
	// The reader stops when the connection closes; the writer may still
	// be sending the fatal message, so give it a moment.
	go func() {
		select {
		case <-ss.wdead:
		case <-ss.readDone:
		case <-time.After(time.Second):
		}
		ss.abortFn()
	}()
}

// applyWrite performs a write or a zeroing, unless an earlier one failed.
// Only writes applied before any failure are acknowledged: the writer
// sends an acknowledgement ahead of frames already queued (the failure's
// report among them), so acknowledging a failed write, or one skipped
// after it, would let the client count it applied (Disk.Applied) before
// it hears of the failure.
func (ss *session) applyWrite(ctx context.Context, o *op) {
	ss.seq++
	defer func() {
		if ss.failed == nil {
			ss.applied.Store(ss.seq)
		}
		select {
		case ss.kick <- struct{}{}:
		default:
		}
	}()
	if ss.failed != nil {
		return
	}
	ss.noteChange()
	var err error
	if o.typ == mZero {
		err = ss.d.ZeroRange(ctx, o.off, o.n)
	} else {
		data := o.data
		if o.compressed {
			buf := ss.pool.get(int(o.n))
			defer ss.pool.put(buf)
			if err := ss.s.codec.decode(o.data, buf); err != nil {
				ss.protocolFailure(err)
				return
			}
			data = buf
		}
		var k int
		k, err = ss.d.WriteAt(data, o.off)
		if err == nil && k < len(data) {
			err = io.ErrShortWrite
		}
	}
	if err != nil {
		ss.failed = err
		b := frame(mWriteErr, 0, nil)[:headerSize]
		b = appendU64(b, ss.seq)
		b = appendU64(b, uint64(o.off))
		b = appendU64(b, uint64(o.n))
		b = appendErr(b, errCode(err), errMsg(err))
		putHeader(b, mWriteErr, 0)
		ss.send(b)
	}
}
