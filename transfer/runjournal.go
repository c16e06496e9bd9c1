package transfer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/internal/bootid"
)

// A run's journal, from its start to its end, lives in this file:
// openJournal loads it and decides whether it is trusted (or discards it,
// saying why); the journaler and checkpoint save the watermark as the run
// goes, each save after a flush or a barrier; stop leaves the journal a
// rerun resumes from, or poisons or deletes it. Its format and its store
// are journal.go's.

// openJournal loads this run's journal, if any, and resumes from it.
func (r *run) openJournal(ctx context.Context) error {
	if r.c.NoJournal || r.c.Journal == nil || r.srcID == "" || r.dstID == "" {
		return nil
	}
	r.store = r.c.Journal
	r.st.Journaled = true
	r.key = journalKey(r.dstID, r.c.Offset, r.c.Length)
	r.rep.journal = r.key
	r.ident = journalIdentity{
		SourceID:       r.srcID,
		TargetID:       r.dstID,
		SourceSize:     r.srcSize,
		TargetSize:     r.dstSize,
		BlockSize:      r.c.bs,
		Align:          r.align,
		Offset:         r.c.Offset,
		Length:         r.c.Length,
		TruncateExcess: r.c.TruncateExcess,
		Hints:          hintsDigest(r.c.Hints),
	}
	if !r.c.AllowLive {
		r.ident.SourceVersion = r.srcVersion
	}
	r.saved = r.lo
	wb, _ := r.dst.(disk.WriteBehind)
	ab, _ := r.dst.(disk.AppliedBarrier)
	switch {
	case !r.w.CanFlush() || r.c.Durability == DurableCheckpoint:
	case wb == nil || !wb.WritesBehind():
		if r.c.bootID != nil {
			r.bootID = r.c.bootID()
		} else {
			r.bootID = bootid.Read()
		}
	case ab != nil && ab.HostBootID() != "":
		// Writes queued here: a save waits until they are applied on
		// the host, and holds while the host does not reboot.
		r.bootID, r.barrier = ab.HostBootID(), ab
	}
	b, err := r.store.Load(ctx, r.key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("transfer: loading journal %s: %w", r.key, err)
	}
	rec, err := decodeJournal(b)
	var why string
	switch {
	case err != nil:
		why = err.Error()
	case rec.Identity.mismatch(r.ident) != "":
		why = rec.Identity.mismatch(r.ident)
	case rec.Watermark < r.lo || rec.Watermark > r.hi || (rec.Watermark < r.hi && rec.Watermark%blockdiff.SectorSize != 0):
		why = fmt.Sprintf("watermark %d is outside the range [%d,%d) or unaligned (corrupt)", rec.Watermark, r.lo, r.hi)
	}
	if why != "" {
		if !r.c.DiscardBadJournal {
			return &JournalError{Key: r.key, Reason: why}
		}
		if err == nil {
			// Decoded: its token is of this target, from a run of ours.
			r.reclaimToken = rec.Witness
		}
		return r.discard(ctx, why)
	}
	r.reclaimToken = rec.Witness
	// The journal is this run's. Whether it may be trusted is another
	// matter: the evidence decides.
	switch {
	case rec.BootID != "" && rec.BootID != r.bootID:
		// Saved without a flush in another boot: what it calls written
		// may have been lost with the page cache.
		return r.discard(ctx, "it was saved without a flush before the machine rebooted")
	case rec.Poisoned != "":
		if rec.FlushFailed {
			r.distrustCache()
		}
		return r.discard(ctx, "the run that saved it failed to write the target ("+rec.Poisoned+"), so nothing it wrote is trusted")
	}
	w, ok := r.dst.(disk.Witness)
	switch {
	case r.c.AssumeExclusive:
	case !ok:
		return r.discard(ctx, "the target cannot show that nothing else wrote it since the journal was saved")
	case rec.Witness == "":
		return r.discard(ctx, "the journal holds no evidence that nothing else wrote the target since")
	default:
		why, err := w.Check(ctx, rec.Witness, rec.Evidence)
		if errors.Is(err, disk.ErrFlushFailed) {
			// As for a journal poisoned by a failed flush.
			r.distrustCache()
			return r.discard(ctx, err.Error())
		}
		if err != nil {
			return fmt.Errorf("transfer: checking the evidence of journal %s: %w", r.key, err)
		}
		if why != "" {
			return r.discard(ctx, why)
		}
	}
	r.start, r.saved = rec.Watermark, rec.Watermark
	r.st.Resumed, r.st.ResumedFrom = true, rec.Watermark
	r.rep.resumedFrom = rec.Watermark
	r.track = newTracker(r.start)
	return nil
}

// distrustCache makes the run read the target itself, not its page
// cache, after a failed flush: pages whose write-back failed may sit in
// the cache, clean, holding data the disk does not have. The target's
// cached pages are dropped (a CacheDropper; a loop device drops its
// backing file's too) and it is read with O_DIRECT.
func (r *run) distrustCache() {
	r.c.DirectReads = blockdiff.DirectAlways
	if cd, ok := r.dst.(disk.CacheDropper); ok {
		_ = cd.DropCache(0, r.dst.Size())
	}
}

// discard deletes an untrusted journal; the run compares everything. The
// hold the journal's run left on the target (a lease) is taken over, when
// the target can (Reclaimer).
func (r *run) discard(ctx context.Context, why string) error {
	if rc, ok := r.dst.(disk.Reclaimer); ok && r.reclaimToken != "" {
		if err := rc.Reclaim(ctx, r.reclaimToken); err != nil {
			return fmt.Errorf("transfer: taking over the hold of journal %s's run on the target: %w", r.key, err)
		}
	}
	if err := r.store.Delete(ctx, r.key); err != nil {
		return fmt.Errorf("transfer: discarding journal %s (%s): %w", r.key, why, err)
	}
	r.st.JournalDiscarded, r.st.JournalDiscardedReason = true, why
	return nil
}

// journaler saves the journal every JournalInterval, and when the
// comparison kicks it, until the writers are done.
func (r *run) journaler(ctx context.Context, done <-chan struct{}, kick <-chan struct{}) error {
	t := time.NewTicker(r.c.journalEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil // whoever cancelled reports why
		case <-done:
			return nil
		case <-kick:
		case <-t.C:
		}
		if err := r.checkpoint(ctx); err != nil {
			return err
		}
	}
}

// checkpoint saves the watermark if it moved: first the target is
// flushed, so that what the journal calls done is durable, then the
// journal is saved. The watermark is read before the flush: every write
// below it has completed, so the flush covers it.
func (r *run) checkpoint(ctx context.Context) error {
	w := r.track.watermark()
	if w < r.hi {
		w = max(r.start, roundDown(roundDown(w, int64(r.c.bs)), r.unit))
	} else {
		w = r.hi
	}
	if w <= r.saved {
		return nil
	}
	if r.bootID == "" {
		// The record must hold across reboots: data first.
		if err := r.flush(ctx); err != nil {
			return err
		}
	} else if r.barrier != nil {
		// Every write below w is queued; the record may count it once
		// the host has it.
		if err := r.barrier.Applied(ctx); err != nil {
			return fmt.Errorf("transfer: waiting for the target's writes before a journal save: %w", err)
		}
	}
	return r.save(ctx, w)
}

// save records watermark w in the journal.
func (r *run) save(ctx context.Context, w int64) error {
	if err := r.saveRecord(ctx, journalRecord{Identity: r.ident, Watermark: w, BootID: r.bootID, Witness: r.token}); err != nil {
		return err
	}
	r.saved = w
	return nil
}

// saveRecord saves a journal record.
func (r *run) saveRecord(ctx context.Context, rec journalRecord) error {
	b, err := encodeJournal(rec)
	if err != nil {
		return err
	}
	if err := r.store.Save(ctx, r.key, b); err != nil {
		return fmt.Errorf("transfer: saving journal %s at watermark %d: %w", r.key, rec.Watermark, err)
	}
	r.journalSaves.Add(1)
	return nil
}

// stopTimeout bounds the last flush and journal save of a run stopped by
// an error; cancelStopTimeout those of a cancelled run.
const (
	stopTimeout       = 30 * time.Second
	cancelStopTimeout = 1500 * time.Millisecond
)

// stop ends a run that failed or was cancelled after the target's watch
// began. A failed write or flush of the target (not a cancelled one)
// poisons the journal: what the run wrote is not known to be there. Any
// other stop keeps what is durable: the target is flushed, the journal
// saved, and the witness records its evidence, so that a rerun resumes.
// A cancelled run does this too, under a context of its own.
func (r *run) stop(ctx context.Context, err error) error {
	budget := stopTimeout
	if ctx.Err() != nil {
		// Cancelled: the caller wants to be gone. The last save and the
		// evidence get a short while; a target that stopped answering
		// keeps the journal of the last checkpoint.
		budget = cancelStopTimeout
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer cancel()
	if !r.began {
		// Refused before copying (the target could not be resized):
		// nothing was written. A journal this run saved only for its
		// token goes; one it resumed from stays.
		if r.watch != nil {
			r.watch.Abandon()
		}
		if r.store != nil && r.token != "" && !r.st.Resumed {
			if derr := r.store.Delete(sctx, r.key); derr != nil {
				err = errors.Join(err, fmt.Errorf("transfer: removing journal %s: %w", r.key, derr))
			}
		}
		return err
	}
	// A failed copy (copy_file_range, Put Page From URL) is not poison:
	// its range is above the watermark and compared again, and its
	// failure is usually the source's. Nor is a lost connection to a
	// remote target (disk.ErrDisconnected): the target applies what it
	// received, and its witness says whether anything failed there.
	var we *WriteError
	poison := errors.As(err, &we) && we.Op != "copy" && ctx.Err() == nil &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, disk.ErrDisconnected)
	if r.store != nil && !r.dropped && errors.Is(err, ErrSourceChanged) {
		// The source's version is part of the journal's identity: no
		// rerun can resume from this journal.
		r.dropped = true
		if derr := r.store.Delete(sctx, r.key); derr != nil {
			err = errors.Join(err, fmt.Errorf("transfer: removing journal %s: %w", r.key, derr))
		}
	}
	if r.store == nil || r.dropped {
		if r.watch != nil {
			r.watch.Abandon()
		}
		return err
	}
	if !poison {
		if cerr := r.checkpoint(sctx); cerr != nil {
			// A flush that fails here poisons as well.
			if errors.As(cerr, &we) && !errors.Is(cerr, disk.ErrDisconnected) {
				poison = true
			}
			err = errors.Join(err, cerr)
		}
	}
	if poison {
		if r.watch != nil {
			r.watch.Abandon()
		}
		rec := journalRecord{Identity: r.ident, Watermark: r.saved, BootID: r.bootID,
			Poisoned: we.Op + " failed", FlushFailed: we.Op == "flush"}
		if serr := r.saveRecord(sctx, rec); serr != nil {
			// The journal left behind would be trusted: remove it.
			if derr := r.store.Delete(sctx, r.key); derr != nil {
				err = errors.Join(err, serr, fmt.Errorf("transfer: removing journal %s after a failed write: %w", r.key, derr))
			}
		}
		return err
	}
	if r.watch == nil {
		return err
	}
	ev, eerr := r.watch.Stopped(sctx)
	if eerr != nil {
		// The run's journal holds its token only: the witness may find
		// its own evidence, or the rerun compares everything.
		return errors.Join(err, fmt.Errorf("transfer: recording the target's state for a rerun: %w", eerr))
	}
	rec := journalRecord{Identity: r.ident, Watermark: r.saved, BootID: r.bootID, Witness: r.token, Evidence: ev}
	if serr := r.saveRecord(sctx, rec); serr != nil {
		err = errors.Join(err, serr)
	}
	return err
}
