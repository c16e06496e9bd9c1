package pageblob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/deltasync/deltasync/disk"
)

// The evidence a resume journal is trusted on (disk.Witness, which
// transfer calls; see the package doc, # Resuming).
//
// A page blob target's evidence is its lease. A run takes a lease before
// its first change and sets a sequence number of its own; Watch's token
// holds the lease's id (a secret, kept in the journal only), its duration
// and that sequence number. While the lease is active, nothing without its
// id can write the blob; when it expires, Azure renews it for the same id
// only if nobody changed or leased the blob since. So:
//
//   - after SIGKILL (no evidence recorded), Check renews the token's lease:
//     renewed means that nothing else wrote the blob since the killed run
//     last did; refused (broken, released, taken, or expired and the blob
//     changed since) means that something may have, and the journal is
//     not trusted;
//   - after a clean stop, Stopped confirms the lease (a renewal) and
//     records the blob's ETag; Close releases the lease. Check takes the
//     lease again with If-Match on that ETag: any write, metadata or
//     property change since moves the ETag, and the acquisition fails.
//
// The rerun keeps that lease for its run (Watch reuses it) and sets a new
// sequence number before its first write, so that Put Pages of the killed
// run still on their way are refused. The hole that remains: a holder of
// the account key can always write (by breaking the lease, which Check
// then sees); a Put Page the killed run sent, delayed in the network past
// the rerun's new sequence number, is refused; one delayed past Check but
// not past Watch carries the killed run's own data, of the same source.
//
// While a run writes the blob, it is marked incomplete: the metadata
// IncompleteKey=1, set by Watch before the first change and cleared by
// Done. Snapshot and RecoveryPoint refuse a blob so marked
// (ErrIncomplete), and no prior-state snapshot is taken of it (its prior
// state was kept, if asked, by the run that first marked it). A managed
// disk upload has neither lease nor metadata: its mark is the missing VHD
// footer, written last (FinishUpload, from Done), and it cannot show that
// nothing else wrote it, so an interrupted upload is compared again.

// IncompleteKey is the metadata name (a C# identifier, as Azure
// requires) that marks a blob incomplete while a run writes it; its value
// is "1".
const IncompleteKey = "deltasync_incomplete"

// witnessState is a target's hold (lease and sequence number) and what
// it knows of the incomplete mark.
type witnessState struct {
	mu      sync.Mutex  // serialises hold, Check, Watch and the mark
	held    atomic.Bool // the lease is taken and the run's sequence number set
	resumed atomic.Bool // Check took over the interrupted run's lease
	// pending: a journal may name this lease with no evidence beside it
	// (Check took it over, or a watch began, and neither Done, Abandon
	// nor a successful Stopped ended it): Close keeps the lease, so that
	// a rerun renews it.
	pending atomic.Bool
	// marked: the blob carries the incomplete mark now; wasMarked: it
	// did before this Blob's run marked it (an earlier run did not
	// finish). meta is the rest of the blob's metadata, kept when the
	// mark is set or cleared (Set Blob Metadata replaces all of it).
	marked, wasMarked atomic.Bool
	meta              map[string]*string
	// VHD footers: pending, the footer still has to be written (a page
	// blob target: before its first change; an upload: last); present,
	// an upload's footer region held a valid footer at open, which the
	// first change invalidates.
	footerPending, footerPresent atomic.Bool
}

// witnessToken is a Watch's token: the lease (its id is secret) and the
// sequence number of the run.
type witnessToken struct {
	V     int    `json:"v"`
	Lease string `json:"lease"`
	Dur   int    `json:"dur"` // seconds, -1 infinite
	Seq   int64  `json:"seq"`
}

// witnessEvidence is what Stopped records: the blob's ETag with the lease
// still held.
type witnessEvidence struct {
	V    int    `json:"v"`
	ETag string `json:"etag"`
	// Seq is the sequence number Stopped set before reading the ETag
	// (0 in evidence of earlier versions: the token's).
	Seq int64 `json:"seq,omitempty"`
}

// noteMetadata records the blob's metadata as read from its properties.
// Metadata names are case-insensitive (the SDK capitalises them).
func (b *Blob) noteMetadata(m map[string]*string) {
	meta := make(map[string]*string, len(m))
	marked := false
	for k, v := range m {
		if strings.EqualFold(k, IncompleteKey) {
			marked = true
			continue
		}
		meta[k] = v
	}
	b.wit.meta = meta
	b.wit.marked.Store(marked)
	if marked {
		b.wit.wasMarked.Store(true)
	}
}

// hold takes the lease (unless Check took the interrupted run's) and sets
// the run's sequence number, once, before the target's first change. It
// reads the blob's properties again under the lease: what it sees then
// nobody else can change.
func (b *Blob) hold(ctx context.Context) error {
	if b.mode != modeTarget || b.wit.held.Load() {
		return nil
	}
	b.wit.mu.Lock()
	defer b.wit.mu.Unlock()
	return b.holdLocked(ctx)
}

func (b *Blob) holdLocked(ctx context.Context) error {
	if b.wit.held.Load() {
		return nil
	}
	if b.closed.Load() {
		return b.wrap("lease", 0, 0, ErrClosed)
	}
	if b.lease.Load() == nil {
		// A dead run's lease, recorded on this machine (leasefile.go),
		// is taken over; any other is acquired.
		l := b.takeOverLease(ctx)
		if l == nil {
			var err error
			if l, err = b.acquireLease(ctx, newLeaseID(), b.cl.opts.LeaseDuration, ""); err != nil {
				return err
			}
		}
		b.lease.Store(l)
		b.recordLease(l)
	}
	props, err := b.pb.GetProperties(ctx, nil)
	if err != nil {
		return b.wrap("properties", 0, 0, err)
	}
	b.noteMetadata(props.Metadata)
	var cur int64
	if props.BlobSequenceNumber != nil {
		cur = *props.BlobSequenceNumber
	}
	if err := b.setSequenceNumber(ctx, cur); err != nil {
		return err
	}
	b.wit.held.Store(true)
	return nil
}

// beforeChange runs before every change of the blob (a write, clear,
// copy, resize or footer): the hold, the prior state's snapshot
// (Options.KeepPrior), a page blob's pending VHD footer, and the
// invalidation of an upload's old footer.
func (b *Blob) beforeChange(ctx context.Context) error {
	if err := b.hold(ctx); err != nil {
		return err
	}
	if err := b.keepPriorState(ctx); err != nil {
		return err
	}
	switch {
	case b.mode == modeTarget && b.wit.footerPending.CompareAndSwap(true, false):
		if err := b.putFooter(ctx, b.size.Load()); err != nil {
			b.wit.footerPending.Store(true)
			return err
		}
	case b.mode == modeUpload && b.wit.footerPresent.CompareAndSwap(true, false):
		// Until the upload is finished, its end is not a footer.
		if err := b.putPages(ctx, make([]byte, VHDFooterSize), b.size.Load()); err != nil {
			b.wit.footerPresent.Store(true)
			return b.wrap("footer", b.size.Load(), VHDFooterSize, err)
		}
	}
	return nil
}

// FinishUpload writes the VHD footer of a managed disk upload: call it
// once every write has succeeded. The footer is written last, so that an
// upload interrupted before its end does not hold a valid fixed VHD, and
// no disk is made from it with holes; until then the footer's place reads
// as zeros. transfer's Seed and Sync call it through the Watch's Done.
// For other blobs it does nothing.
func (b *Blob) FinishUpload(ctx context.Context) error {
	if b.mode != modeUpload {
		return nil
	}
	if b.closed.Load() {
		return b.wrap("footer", 0, 0, ErrClosed)
	}
	b.wit.footerPresent.Store(false)
	if err := b.putFooter(ctx, b.size.Load()); err != nil {
		return err
	}
	b.wit.footerPending.Store(false)
	return nil
}

// Watch implements disk.Witness: it takes the lease (or keeps the one
// Check took over), sets the run's sequence number and marks the blob
// incomplete, before the run's first change. The token holds the lease
// id: it is a secret. A managed disk upload keeps no evidence (its token
// is empty): a rerun compares it again. resumable is not needed: the
// lease is the evidence, and Azure keeps it.
func (b *Blob) Watch(ctx context.Context, resumable bool) (disk.Watch, error) {
	switch {
	case b.closed.Load():
		return nil, b.wrap("watch", 0, 0, ErrClosed)
	case b.mode == modeRead:
		return nil, b.refuse("watch", 0, 0, ErrReadOnly, "opened with Open or OpenSnapshot; use OpenTarget to write")
	case b.mode == modeUpload:
		return &blobWatch{b: b}, nil
	}
	ctx, done := b.opCtx(ctx)
	defer done()
	b.wit.mu.Lock()
	defer b.wit.mu.Unlock()
	if err := b.holdLocked(ctx); err != nil {
		return nil, err
	}
	if err := b.setMarkLocked(ctx, true); err != nil {
		return nil, err
	}
	l := b.lease.Load()
	tok, err := json.Marshal(witnessToken{V: 1, Lease: l.id, Dur: leaseSeconds(l.dur), Seq: b.seq.Load()})
	if err != nil {
		return nil, err
	}
	b.wit.pending.Store(true)
	return &blobWatch{b: b, token: string(tok)}, nil
}

// setMarkLocked sets or clears the incomplete mark, keeping the blob's
// other metadata, under the lease.
func (b *Blob) setMarkLocked(ctx context.Context, on bool) error {
	if b.wit.marked.Load() == on {
		return nil
	}
	meta := make(map[string]*string, len(b.wit.meta)+1)
	for k, v := range b.wit.meta {
		meta[k] = v
	}
	if on {
		meta[IncompleteKey] = to.Ptr("1")
	}
	if _, err := b.pb.SetMetadata(ctx, meta, &blob.SetMetadataOptions{AccessConditions: b.leaseCond()}); err != nil {
		what := "marking the blob incomplete before the run's first write"
		if !on {
			what = "clearing the blob's incomplete mark"
		}
		return b.wrap("metadata", 0, 0, fmt.Errorf("%s: %w", what, err))
	}
	b.wit.marked.Store(on)
	return nil
}

// Incomplete tells whether the blob is marked incomplete (IncompleteKey):
// a run that writes it has not finished. It asks Azure.
func (b *Blob) Incomplete(ctx context.Context) (bool, error) {
	props, err := b.pb.GetProperties(ctx, nil)
	if err != nil {
		return false, b.wrap("properties", 0, 0, err)
	}
	for k := range props.Metadata {
		if strings.EqualFold(k, IncompleteKey) {
			return true, nil
		}
	}
	return false, nil
}

// Check implements disk.Witness: it takes over the lease of the
// interrupted run that saved token, and with it the blob, when the
// evidence shows that nothing else wrote the blob since (see the comment
// at the top of this file). On success the lease is this Blob's for the
// run. A lease another holder has now is an error (ErrLeaseHeld, with
// its state and duration), not failed evidence: the journal is kept for
// when the holder is gone, or broken with Options.BreakLease.
func (b *Blob) Check(ctx context.Context, token, evidence string) (string, error) {
	switch {
	case b.closed.Load():
		return "", b.wrap("lease", 0, 0, ErrClosed)
	case b.mode == modeRead:
		return "", b.refuse("lease", 0, 0, ErrReadOnly, "opened with Open or OpenSnapshot; use OpenTarget to write")
	case b.mode == modeUpload:
		return "a managed disk upload has no lease: nothing shows that only the interrupted run wrote it", nil
	}
	var tok witnessToken
	if err := json.Unmarshal([]byte(token), &tok); err != nil || tok.V != 1 || tok.Lease == "" {
		return "the journal's token for this page blob does not parse", nil
	}
	dur := time.Duration(tok.Dur) * time.Second
	if tok.Dur < 0 {
		dur = -1
	}
	ctx, done := b.opCtx(ctx)
	defer done()
	b.wit.mu.Lock()
	defer b.wit.mu.Unlock()
	if b.lease.Load() != nil {
		return "this target already took a lease of its own", nil
	}
	if r, alive, ok := b.recordedLease(); ok && alive && r.Lease == tok.Lease {
		return "", b.refuse("lease", 0, 0, ErrLeaseHeld, "a run of deltasync on this machine (process %d) holds the lease and is writing the blob", r.Pid)
	}
	var l *lease
	var err error
	var evSeq int64
	if evidence == "" {
		// Killed: the lease is the evidence, kept by Azure.
		l, err = b.renewLease(ctx, tok.Lease, dur)
		if err != nil {
			if errors.Is(err, ErrLeaseLost) {
				return "the interrupted run's lease on the blob cannot be renewed: it was broken, released or taken, " +
					"or it expired and the blob was changed or leased since, so something else may have written it", nil
			}
			return "", err
		}
	} else {
		var ev witnessEvidence
		if err := json.Unmarshal([]byte(evidence), &ev); err != nil || ev.V != 1 || ev.ETag == "" {
			return "the journal's evidence for this page blob does not parse", nil
		}
		evSeq = ev.Seq
		l, err = b.acquireLease(ctx, tok.Lease, dur, ev.ETag)
		if err != nil {
			if bloberror.HasCode(err, bloberror.ConditionNotMet) {
				return "the blob changed since the interrupted run stopped (its ETag is not the one recorded then)", nil
			}
			return "", err
		}
	}
	b.lease.Store(l)
	b.recordLease(l)
	props, err := b.pb.GetProperties(ctx, nil)
	if err != nil {
		return "", b.wrap("properties", 0, 0, err)
	}
	wantSeq := tok.Seq
	if evSeq != 0 {
		wantSeq = evSeq
	}
	if props.BlobSequenceNumber == nil || *props.BlobSequenceNumber != wantSeq {
		return "the blob's sequence number is no longer the one its interrupted run set: something else changed it", nil
	}
	b.noteMetadata(props.Metadata)
	b.wit.resumed.Store(true)
	b.wit.pending.Store(true)
	return "", nil
}

// Resumed tells whether Check took over the lease of an interrupted run
// (and the run then resumes from its journal).
func (b *Blob) Resumed() bool { return b.wit.resumed.Load() }

// blobWatch is a Blob's part of one run.
type blobWatch struct {
	b     *Blob
	token string
	ended bool
}

// Token returns the watch's token (the lease id: never print it).
func (w *blobWatch) Token() string { return w.token }

// Stopped proves that the lease still holds (a renewal) and records the
// blob's ETag: with the lease held, nobody else changed the blob, and any
// later change moves the ETag. The lease itself is released by Close.
func (w *blobWatch) Stopped(ctx context.Context) (string, error) {
	if w.ended {
		return "", errors.New("pageblob: the watch has ended")
	}
	w.ended = true
	b := w.b
	if b.mode == modeUpload {
		return "", nil
	}
	ctx, done := b.opCtx(ctx)
	defer done()
	if err := b.confirmLease(ctx, "lease"); err != nil {
		return "", err
	}
	// A cancelled Put Page may still reach the service after this: a new
	// sequence number first, so that it is refused instead of moving the
	// ETag read next.
	if b.cl.opts.SequenceNumber == 0 {
		if err := b.setSequenceNumber(ctx, b.seq.Load()); err != nil {
			return "", err
		}
	}
	props, err := b.pb.GetProperties(ctx, nil)
	if err != nil {
		return "", b.wrap("properties", 0, 0, err)
	}
	if props.ETag == nil || *props.ETag == "" {
		return "", b.wrap("properties", 0, 0, errors.New("no ETag in the blob's properties"))
	}
	ev, err := json.Marshal(witnessEvidence{V: 1, ETag: string(*props.ETag), Seq: b.seq.Load()})
	if err != nil {
		return "", err
	}
	b.wit.pending.Store(false) // the evidence holds without the lease
	return string(ev), nil
}

// Done clears the incomplete mark (under the lease: a lost lease fails
// it), or writes a managed disk upload's footer.
func (w *blobWatch) Done(ctx context.Context) error {
	if w.ended {
		return errors.New("pageblob: the watch has ended")
	}
	w.ended = true
	b := w.b
	b.wit.pending.Store(false)
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if b.mode == modeUpload {
		return b.FinishUpload(ctx)
	}
	b.wit.mu.Lock()
	defer b.wit.mu.Unlock()
	return b.setMarkLocked(ctx, false)
}

// Abandon ends the watch: the blob stays marked incomplete, and Close
// releases the lease (no journal trusts it).
func (w *blobWatch) Abandon() {
	w.ended = true
	w.b.wit.pending.Store(false)
}
