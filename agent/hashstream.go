package agent

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// serverStream is a hash stream: the agent hashes its disk and sends the
// hashes as the client's credit allows.
type serverStream struct {
	id     uint32
	cancel context.CancelFunc
	mu     sync.Mutex
	credit int64
	window int64
	more   chan struct{}
}

func (st *serverStream) grant(n int64) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.credit += n
	if st.credit > st.window {
		return protoErr("hash stream %d: credit beyond the window", st.id)
	}
	select {
	case st.more <- struct{}{}:
	default:
	}
	return nil
}

// take waits until n blocks of credit are there and takes them.
func (st *serverStream) take(ctx context.Context, n int64) error {
	for {
		st.mu.Lock()
		if st.credit >= n {
			st.credit -= n
			st.mu.Unlock()
			return nil
		}
		st.mu.Unlock()
		select {
		case <-st.more:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (ss *session) stream(id uint32) *serverStream {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.streams[id]
}

// The flags of an mHash request.
const (
	hashHints  = 1 << 0 // hints follow (none is not "no hints": it hashes nothing)
	hashDirect = 1 << 1 // read the disk with O_DIRECT (blockdiff.DirectAlways)
)

// hashReq is a parsed mHash payload.
type hashReq struct {
	h      blockdiff.Hasher
	opts   blockdiff.Options
	credit int64
}

func parseHash(p []byte) (hashReq, error) {
	var r hashReq
	d := dec{b: p}
	r.h.Alg = blockdiff.HashAlgorithm(d.u8("hash algorithm"))
	copy(r.h.Key[:], d.bytes(len(r.h.Key), "hash key"))
	bs := d.u32("block size")
	r.opts.Offset = d.i64("hash offset")
	r.opts.Length = d.i64("hash length")
	r.credit = int64(d.u32("credit"))
	flags := d.u8("hash flags")
	hasHints := flags & hashHints
	nh := d.uvarint("hints")
	if d.err != nil {
		return r, d.err
	}
	if r.h.Alg.Size() == 0 {
		return r, badOptions("unknown hash algorithm %d", r.h.Alg)
	}
	if bs < blockdiff.SectorSize || bs > blockdiff.MaxBlockSize || bs%blockdiff.SectorSize != 0 {
		return r, badOptions("block size %d", bs)
	}
	r.opts.BlockSize = int(bs)
	if r.credit < minCredit || r.credit > maxCredit {
		return r, badOptions("credit %d (%d to %d)", r.credit, minCredit, maxCredit)
	}
	if flags&^(hashHints|hashDirect) != 0 || nh > maxHints || (hasHints == 0 && nh != 0) {
		return r, protoErr("malformed hints")
	}
	if flags&hashDirect != 0 {
		r.opts.Direct = blockdiff.DirectAlways
	}
	// Offset+Length must not overflow (blockdiff would wrap it): a
	// longer length means to the end.
	if r.opts.Length > math.MaxInt64-r.opts.Offset {
		r.opts.Length = 0
	}
	if hasHints == 1 {
		r.opts.Hints = make([]disk.Range, 0, nh)
		for range nh {
			off, n := d.ivarint("hint"), d.ivarint("hint")
			n = min(n, math.MaxInt64-off)
			r.opts.Hints = append(r.opts.Hints, disk.Range{Off: off, Len: n})
		}
	}
	return r, d.end("hash request")
}

// startHash starts a hash stream. A request the agent cannot serve ends
// the stream with an error; only a malformed one ends the session.
func (ss *session) startHash(o *op) error {
	req, err := parseHash(o.data)
	if errors.Is(err, ErrProtocol) {
		return err
	}
	ss.mu.Lock()
	_, dup := ss.streams[o.id]
	if err == nil && (dup || len(ss.streams) >= maxStreams) {
		err = badOptions("stream %d in use, or more than %d streams", o.id, maxStreams)
	}
	if err != nil {
		ss.mu.Unlock()
		b := appendErr(nil, errCode(err), err.Error())
		ss.send(frame(mHashEnd, o.id, b))
		return nil
	}
	ctx, cancel := context.WithCancel(ss.sctx)
	st := &serverStream{id: o.id, cancel: cancel, credit: req.credit, window: req.credit, more: make(chan struct{}, 1)}
	ss.streams[o.id] = st
	ss.mu.Unlock()
	req.opts.Concurrency = ss.s.o.HashConcurrency
	if ss.s.book.mustReadDirect(ss.d.Identity()) {
		req.opts.Direct = blockdiff.DirectAlways
	}
	ss.workers.Add(1)
	go func() {
		defer ss.workers.Done()
		defer func() {
			cancel()
			ss.mu.Lock()
			delete(ss.streams, o.id)
			ss.mu.Unlock()
		}()
		err := ss.hash(ctx, st, req)
		var b []byte
		if err != nil {
			b = appendErr(nil, errCode(err), errMsg(err))
		} else {
			b = []byte{statusOK}
		}
		ss.send(frame(mHashEnd, o.id, b))
	}()
	return nil
}

// hash runs blockdiff.HashBlocks on the disk and sends the hashes in
// batches: a batch goes when it is full, or when it has waited
// batchDelay for more blocks; each waits for the client's credit.
func (ss *session) hash(ctx context.Context, st *serverStream, req hashReq) error {
	enc := newHashEncoder(req.h.Alg, int64(req.opts.BlockSize))
	limit := int(min(maxBatch, req.credit/2))
	var (
		mu      sync.Mutex // guards enc, opened, size
		sendMu  sync.Mutex // serialises sending, so batches go in order
		opened  time.Time  // when the batch got its first block
		size    = min(firstBatch, limit)
		sendErr error
	)
	// sendBatch sends what is batched; called with sendMu held.
	sendBatch := func() error {
		mu.Lock()
		p, n := enc.take()
		var f []byte
		if n > 0 {
			f = frame(mHashes, st.id, p)
		}
		if size < limit {
			size = min(size*2, limit)
		}
		mu.Unlock()
		if n == 0 {
			return nil
		}
		if err := st.take(ctx, int64(n)); err != nil {
			return err
		}
		select {
		case ss.out <- f:
			return nil
		case <-ss.wdead:
			return ErrDisconnected
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	tick := time.NewTicker(batchDelay)
	defer tick.Stop()
	tctx, stopTick := context.WithCancel(ctx)
	var ticking sync.WaitGroup
	ticking.Add(1)
	go func() {
		defer ticking.Done()
		for {
			select {
			case <-tctx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			due := enc.blocks > 0 && time.Since(opened) >= batchDelay
			mu.Unlock()
			if due {
				sendMu.Lock()
				if sendErr == nil {
					sendErr = sendBatch()
				}
				sendMu.Unlock()
			}
		}
	}()
	err := blockdiff.HashBlocks(ctx, ss.d, ss.d.Size(), req.h, &req.opts, func(bh blockdiff.BlockHash) error {
		mu.Lock()
		if enc.blocks == 0 {
			opened = time.Now()
		}
		enc.add(bh)
		full := enc.blocks >= size
		mu.Unlock()
		if !full {
			return nil
		}
		sendMu.Lock()
		defer sendMu.Unlock()
		if sendErr == nil {
			sendErr = sendBatch()
		}
		return sendErr
	})
	stopTick()
	ticking.Wait()
	if err == nil {
		err = sendErr
	}
	if err == nil {
		err = sendBatch()
	}
	return err
}
