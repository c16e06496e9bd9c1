package pageblob

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
)

// Snapshots this package takes carry the metadata SnapshotKindKey with
// the value KindPrior or KindRecoveryPoint, so that ListSnapshots can
// tell them from each other and from snapshots taken by anything else.
const (
	// SnapshotKindKey is the metadata name (a C# identifier, as Azure
	// requires) of the kind of a snapshot deltasync took.
	SnapshotKindKey = "deltasync"
	// KindPrior marks the prior state of a target, kept before a sync
	// first changed it (Options.KeepPrior).
	KindPrior = "prior"
	// KindRecoveryPoint marks a recovery point: the target as a
	// successful cycle left it (RecoveryPoint).
	KindRecoveryPoint = "recovery-point"
	// SnapshotOwnerKey is the metadata name of the replication that cut
	// a recovery point (RecoveryPointOf), so that its orphans (a cut whose
	// answer was lost) can be found and deleted.
	SnapshotOwnerKey = "deltasyncowner"
)

// priorState is the snapshot Options.KeepPrior takes before the first
// change of a Blob.
type priorState struct {
	mu   sync.Mutex
	done atomic.Bool
	id   string
}

// keepPriorState takes the prior-state snapshot before the Blob's first
// change, once; concurrent first writers wait for it. A failure is
// returned to the writer (nothing is written) and retried by the next.
// None is taken of a blob that an earlier run began to change: one that
// this run resumes (Check), or one marked incomplete before this run
// (its prior state was kept, if asked, before that run's first write).
func (b *Blob) keepPriorState(ctx context.Context) error {
	if !b.keepPrior || b.prior.done.Load() || b.wit.resumed.Load() || b.wit.wasMarked.Load() {
		return nil
	}
	b.prior.mu.Lock()
	defer b.prior.mu.Unlock()
	if b.prior.done.Load() {
		return nil
	}
	id, err := b.snapshot(ctx, KindPrior, "")
	if err != nil {
		return b.wrap("snapshot", 0, 0, fmt.Errorf("keeping the prior state before the first write: %w", err))
	}
	b.prior.id = id
	b.prior.done.Store(true)
	return nil
}

// PriorSnapshot returns the id of the snapshot that keeps the blob's
// state from before this Blob first changed it (Options.KeepPrior), or
// "" if none was taken: the option was off, the blob was created by
// OpenTarget, nothing was written yet, or an earlier run had begun to
// change it (this run resumed it, or found it marked incomplete).
func (b *Blob) PriorSnapshot() string {
	if !b.prior.done.Load() {
		return ""
	}
	b.prior.mu.Lock()
	defer b.prior.mu.Unlock()
	return b.prior.id
}

// RecoveryPoint cuts a recovery point: a snapshot of the blob marked
// with the metadata deltasync=recovery-point, and returns its id. Call it
// after the writes of a cycle are finished and flushed (transfer's Seed
// and Sync flush before returning). A blob marked incomplete (a run
// writing it has not finished) is refused with ErrIncomplete. Managed
// disk uploads have no snapshots (ErrNotSupported).
func (b *Blob) RecoveryPoint(ctx context.Context) (string, error) {
	if err := b.snapshotsAllowed("snapshot"); err != nil {
		return "", err
	}
	if b.loc.Snapshot != "" {
		return "", b.refuse("snapshot", 0, 0, ErrReadOnly, "a snapshot cannot be snapshotted")
	}
	if err := b.refuseIncomplete(ctx); err != nil {
		return "", err
	}
	id, err := b.snapshot(ctx, KindRecoveryPoint, "")
	if err != nil {
		return "", b.wrap("snapshot", 0, 0, err)
	}
	return id, nil
}

// RecoveryPointOf is RecoveryPoint for a replication named owner: the
// snapshot also carries SnapshotOwnerKey=owner (SnapshotInfo.Owner).
func (b *Blob) RecoveryPointOf(ctx context.Context, owner string) (string, error) {
	if err := b.snapshotsAllowed("snapshot"); err != nil {
		return "", err
	}
	if b.loc.Snapshot != "" {
		return "", b.refuse("snapshot", 0, 0, ErrReadOnly, "a snapshot cannot be snapshotted")
	}
	if err := b.refuseIncomplete(ctx); err != nil {
		return "", err
	}
	id, err := b.snapshot(ctx, KindRecoveryPoint, owner)
	if err != nil {
		return "", b.wrap("snapshot", 0, 0, err)
	}
	return id, nil
}

// snapshot takes a snapshot with the lease ID (in target mode) and, when
// kind is not "", the metadata deltasync=kind (and deltasyncowner=owner
// when owner is not "").
func (b *Blob) snapshot(ctx context.Context, kind, owner string) (string, error) {
	o := &blob.CreateSnapshotOptions{AccessConditions: b.leaseCond()}
	if kind != "" {
		v := kind
		o.Metadata = map[string]*string{SnapshotKindKey: &v}
		if owner != "" {
			o.Metadata[SnapshotOwnerKey] = &owner
		}
	}
	resp, err := b.pb.CreateSnapshot(ctx, o)
	if err != nil {
		return "", err
	}
	if resp.Snapshot == nil || *resp.Snapshot == "" {
		return "", fmt.Errorf("Azure answered no snapshot id")
	}
	return *resp.Snapshot, nil
}

// refuseIncomplete refuses to cut a snapshot of a blob marked incomplete:
// it would be a recovery point of a disk that is neither the source nor
// what it was.
func (b *Blob) refuseIncomplete(ctx context.Context) error {
	inc, err := b.Incomplete(ctx)
	if err != nil {
		return b.wrap("snapshot", 0, 0, err)
	}
	if inc {
		return b.refuse("snapshot", 0, 0, ErrIncomplete,
			"the blob carries the metadata %s=1: a run writing it has not finished; rerun it to completion first", IncompleteKey)
	}
	return nil
}
