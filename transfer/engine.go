package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// mode tells Seed from Sync.
type mode uint8

const (
	modeSync mode = iota
	modeSeed
)

// run is the state of one Seed or Sync.
type run struct {
	c    config
	mode mode
	src  disk.Source
	dst  disk.Target

	srcSize, dstSize int64
	sizeBefore       int64 // the target's size before resize
	srcVersion       string
	srcID, dstID     string
	lo, hi           int64 // the range
	start            int64 // where comparison starts: lo, or the watermark resumed from
	excessKept       bool  // the target is longer than the source and stays so

	w      *Writer // the write path: alignment, splitting, zeroing, flush
	align  int64   // the target's write alignment (1 when it has none)
	unit   int64   // offsets of ranges and watermarks are multiples of this
	copier disk.RangeCopier
	noCopy atomic.Bool // the copier declined this source: read and write

	// cmpDst is what the target is compared as: the target itself, or a
	// stand-in that reads as zeros when Seed proved the target empty.
	cmpDst io.ReaderAt

	pool  *bufPool
	lim   *limiter
	track *tracker
	rep   *reporter

	// journal; store is nil when the run is not journaled.
	store JournalStore
	key   string
	ident journalIdentity
	saved int64 // watermark of the last save
	// bootID stamps journal records saved without a flush; "" when
	// every save is preceded by a flush.
	bootID string
	// barrier, when set, is waited for before every journal save: the
	// target writes behind, and bootID is its host's.
	barrier disk.AppliedBarrier
	// watch is the target's Witness watching this run (nil when the
	// target is not one); token is its Token, saved in the journal.
	watch disk.Watch
	token string
	// reclaimToken is the token of a journal found for this run, for
	// Reclaim when it is not trusted.
	reclaimToken string
	// dropped: the journal was deleted mid-run (a failed verification),
	// so nothing more is saved. began: the pipeline started.
	dropped, began bool

	// Counters. st and the plain ones belong to one goroutine at a time
	// (the comparing one, then the caller's); the atomic ones are updated
	// by the writers and the journaler.
	st                       Stats
	differ, excess           int64
	cmpSrcRead, cmpDstRead   int64
	verSrcRead, verDstRead   int64
	written, zeroed          atomic.Int64
	writes, zeroes           atomic.Int64
	copySrcRead, copyDstRead atomic.Int64
	journalSaves             atomic.Int64
}

// execute runs a Seed or a Sync.
func execute(ctx context.Context, m mode, src disk.Source, dst disk.Target, opts *Options) (Stats, error) {
	began := time.Now()
	r := &run{mode: m, src: src, dst: dst}
	r.st.ResizedFrom = -1
	err := r.execute(ctx, opts)
	st := r.stats()
	st.Elapsed = time.Since(began)
	return st, err
}

func (r *run) stats() Stats {
	st := r.st
	st.Written = r.written.Load()
	st.Zeroed = r.zeroed.Load()
	st.Writes = r.writes.Load()
	st.Zeroes = r.zeroes.Load()
	st.Equal = max(0, st.Compared-r.differ-r.excess)
	st.ExcessKept = r.excess
	st.SourceRead = r.cmpSrcRead + r.copySrcRead.Load() + r.verSrcRead
	st.TargetRead = r.cmpDstRead + r.copyDstRead.Load() + r.verDstRead
	if r.w != nil {
		st.Flush = r.w.FlushTime()
	}
	st.JournalSaves = int(r.journalSaves.Load())
	if r.store != nil {
		st.JournalWatermark = r.saved
	}
	return st
}

// execute runs the phases in order: prepare, copy, flush, verify.
func (r *run) execute(ctx context.Context, opts *Options) (err error) {
	if r.src == nil || r.dst == nil {
		return badOptions("source or target is nil")
	}
	if r.c, err = opts.config(); err != nil {
		return err
	}
	r.rep = &reporter{p: r.c.Progress, every: r.c.progressEv, now: time.Now}
	r.rep.enter(PhasePrepare, 0)
	if err := r.limits(); err != nil {
		return err
	}
	if err := r.identify(ctx); err != nil {
		return err
	}
	if err := r.size(ctx); err != nil {
		return err
	}
	if err := r.openJournal(ctx); err != nil {
		return err
	}
	// Only now, with the journal accepted, is the target changed; the
	// witness watches from before the first change.
	if w, ok := r.dst.(disk.Witness); ok {
		if r.watch, err = w.Watch(ctx, r.store != nil); err != nil {
			return fmt.Errorf("transfer: watching the target before writing: %w", err)
		}
		r.token = r.watch.Token()
		if r.store != nil && r.token != "" {
			// The token at once, before any change: a run killed before
			// its first checkpoint leaves a hold (a lease) that its rerun
			// can then take over. The record claims nothing written.
			if err := r.save(ctx, r.start); err != nil {
				r.watch.Abandon()
				return err
			}
		}
	}
	if err := r.work(ctx); err != nil {
		return r.stop(ctx, err)
	}
	return nil
}

// work changes the target: resize, copy, flush, verify, and the end of
// the journal and of the watch.
func (r *run) work(ctx context.Context) error {
	if err := r.resize(ctx); err != nil {
		return err
	}
	if err := r.chooseComparand(ctx); err != nil {
		return err
	}

	if r.c.hook != nil {
		r.c.hook(r)
	}

	// Compare and write, in one pipeline.
	r.rep.enter(PhaseCopy, r.hi-r.start)
	t := time.Now()
	r.began = true
	err := r.pipeline(ctx)
	r.st.Copy = time.Since(t)
	if err != nil {
		return err
	}

	if r.c.Durability != DurableNone || r.c.Verify {
		r.rep.enter(PhaseFlush, 0)
		if err := r.flush(ctx); err != nil {
			return err
		}
	}
	if r.store != nil && r.c.Verify {
		// All is written and durable: a rerun need only verify.
		if err := r.save(ctx, r.hi); err != nil {
			return err
		}
	}
	if err := r.checkSource(ctx); err != nil {
		return err
	}
	if r.c.Verify {
		r.rep.enter(PhaseVerify, r.hi-r.lo)
		t := time.Now()
		err := r.verify(ctx)
		r.st.Verify = time.Since(t)
		if errors.Is(err, ErrVerifyMismatch) {
			// The journal calls everything done, and it is not: a
			// rerun must compare all again.
			if r.store != nil {
				r.dropped = true
				if derr := r.store.Delete(ctx, r.key); derr != nil {
					err = errors.Join(err, fmt.Errorf("transfer: removing journal %s: %w", r.key, derr))
				}
			}
			// A live source explains a mismatch better.
			if serr := r.checkSource(ctx); serr != nil {
				return errors.Join(serr, err)
			}
		}
		if err != nil {
			return err
		}
		r.st.Verified = true
	}
	if r.store != nil {
		r.dropped = true
		if err := r.store.Delete(ctx, r.key); err != nil {
			return fmt.Errorf("transfer: the run finished but removing its journal %s failed: %w", r.key, err)
		}
	}
	if r.watch != nil {
		w := r.watch
		r.watch = nil
		if err := w.Done(ctx); err != nil {
			return fmt.Errorf("transfer: the run finished, but the target stays marked incomplete: %w", err)
		}
	}
	r.rep.enter(PhaseDone, r.hi-r.lo)
	return nil
}

// pipeline compares from r.start to r.hi and writes what differs while
// comparison goes on: the comparing goroutine plans operations and hands
// them to the writers; the journaler saves the watermark as it moves.
func (r *run) pipeline(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	ops := make(chan *op)
	writersDone := make(chan struct{})
	kick := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for range r.c.writers {
		wg.Add(1)
		g.Go(func() error {
			defer wg.Done()
			return r.writer(gctx, ops)
		})
	}
	g.Go(func() error {
		wg.Wait()
		close(writersDone)
		return nil
	})
	if r.store != nil {
		g.Go(func() error { return r.journaler(gctx, writersDone, kick) })
	}
	g.Go(func() error {
		defer close(ops)
		return r.compare(gctx, ops, kick)
	})
	return g.Wait()
}

// diff runs blockdiff over the range and plans what it reports. When
// journaled, the range is compared in segments of JournalBytes on an
// absolute grid: at the end of a segment every extent before it has been
// reported (blockdiff holds the last extent back to merge it with the
// next), so the frontier is known exactly there.
func (r *run) compare(ctx context.Context, ops chan<- *op, kick chan<- struct{}) error {
	p := &planner{
		align:     r.align,
		writeSize: r.c.writeSize,
		zeroSize:  r.c.zeroSize,
		limit:     r.dstSize,
		emit:      func(o *op) error { return r.issue(ctx, ops, o) },
	}
	lastKick := r.start
	advance := func(f int64) {
		r.track.advance(p.held(f))
		if r.store != nil && f-lastKick >= r.c.journalBytes {
			lastKick = f
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	}
	bo := blockdiff.Options{
		BlockSize:   r.c.bs,
		RefineSize:  r.c.RefineSize,
		Hints:       r.c.Hints,
		DropBehind:  r.c.DropBehind,
		Concurrency: r.c.compareConc,
		NoMmap:      r.c.NoMmap,
		Direct:      r.c.DirectReads,
		Progress:    r.rep.advance,
		Offset:      r.start,
		Length:      r.hi - r.start,
		// One comparison over the whole range: Reached tells how far
		// every extent has been handed over, which is the watermark.
		Reached: advance,
	}
	if r.store != nil {
		bo.MaxExtent = r.c.journalBytes
	}
	bst, err := r.diff(ctx, r.cmpDst, r.dstSize, &bo, func(x disk.Extent) error {
		r.st.Extents++
		r.rep.extents++
		if x.Kind == disk.Excess {
			r.excess += x.Len
		} else {
			r.differ += x.Len
			if err := p.add(x); err != nil {
				return err
			}
		}
		advance(x.End())
		return nil
	})
	r.st.Compared += bst.Compared
	r.cmpSrcRead += bst.SourceRead
	r.cmpDstRead += bst.TargetRead
	if err != nil {
		return err
	}
	advance(r.hi)
	if err := p.flush(); err != nil {
		return err
	}
	r.track.advance(r.hi)
	return nil
}

// diff runs blockdiff over the source and dst: byte for byte, or, when
// dst is the target and it hashes its own blocks (a BlockHasher), by
// comparing keyed hashes made on each side at the same time.
func (r *run) diff(ctx context.Context, dst io.ReaderAt, dstSize int64, bo *blockdiff.Options, fn func(disk.Extent) error) (blockdiff.Stats, error) {
	bh, ok := dst.(BlockHasher)
	if !ok || r.c.NoRemoteHash || dst != io.ReaderAt(r.dst) {
		return blockdiff.Compare(ctx, r.src, r.srcSize, dst, dstSize, bo, fn)
	}
	key, err := blockdiff.NewKey()
	if err != nil {
		return blockdiff.Stats{}, err
	}
	h := blockdiff.Hasher{Alg: r.c.HashAlgorithm, Key: key}
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hb := *bo
	hb.Progress, hb.Reached = nil, nil
	it, err := bh.HashBlocks(hctx, h, &hb)
	if err != nil {
		return blockdiff.Stats{}, fmt.Errorf("transfer: starting the target's hashing: %w", err)
	}
	return blockdiff.CompareHashes(ctx, r.src, r.srcSize, h, it, dstSize, bo, fn)
}
