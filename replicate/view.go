package replicate

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/deltasync/deltasync/disk"
)

// View is a frozen, read-only view of a source disk at one moment: a
// snapshot of a page blob, an LVM or device-mapper snapshot, a reflink
// copy of an image, or a disk whose writer is paused. Its bytes do not
// change while it is held. ReadAt may be called concurrently.
type View interface {
	disk.Source
	// ID names the view among the views of its source (a snapshot id).
	// Two views of one source never share an ID.
	ID() string
	// Time is when the view was frozen, on the clock of whatever froze
	// it (Azure's server for a blob snapshot), not this machine's.
	Time() time.Time
	// Release gives the view up (deletes a snapshot). The replicator
	// releases a view once it is neither being synced nor the base of
	// the next cycle's hints. Release of a released view is a no-op.
	Release(ctx context.Context) error
}

// Freezer freezes a source: every call returns a new View of the source
// as it is at that moment. Freeze must return only once the view is
// frozen: writes to the source after Freeze returns are not in the view.
type Freezer interface {
	Freeze(ctx context.Context) (View, error)
}

// ViewCleaner is an optional capability of a Freezer: deleting the views
// a process killed while it held them left behind, but for those named
// in keep. The replicator calls it once, at its first cycle, keeping the
// base its state names.
type ViewCleaner interface {
	CleanViews(ctx context.Context, keep []string) error
}

// FreezerFunc adapts a function to Freezer.
type FreezerFunc func(ctx context.Context) (View, error)

// Freeze calls f.
func (f FreezerFunc) Freeze(ctx context.Context) (View, error) { return f(ctx) }

// Changer is an optional capability of a View: the ranges that may have
// changed since an earlier view of the same source, named by its ID (a
// snapshot diff). The answer may be a superset, never a subset. When the
// earlier view is gone (Azure's 409 PreviousSnapshotNotFound) or the
// changes cannot be listed, ChangedSince returns an error wrapping
// ErrNoBase, and the cycle compares everything.
type Changer interface {
	ChangedSince(ctx context.Context, prevID string) ([]disk.Range, error)
}

// Quiesced returns a Freezer for a source that nothing writes while a
// cycle runs: a disk whose VM is shut down or paused, a filesystem frozen
// with fsfreeze, an image no program has open. The caller makes that
// true; the view is the source itself, so Release does nothing. IDs are
// "q1", "q2", ... and times come from now (time.Now when nil), which is
// the source's clock for a local disk.
//
// A source written during a cycle is not frozen: transfer.Sync notices a
// changed Versioner (ErrSourceChanged) and the cycle fails.
func Quiesced(src disk.Source, now func() time.Time) Freezer {
	if now == nil {
		now = time.Now
	}
	q := &quiesced{src: src, now: now}
	return q
}

type quiesced struct {
	src disk.Source
	now func() time.Time
	n   atomic.Int64
}

func (q *quiesced) Freeze(ctx context.Context) (View, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &sourceView{Source: q.src, id: fmt.Sprintf("q%d", q.n.Add(1)), t: q.now()}, nil
}

// sourceView is a View of a source that is frozen by other means.
type sourceView struct {
	disk.Source
	id string
	t  time.Time
}

func (v *sourceView) ID() string                    { return v.id }
func (v *sourceView) Time() time.Time               { return v.t }
func (v *sourceView) Release(context.Context) error { return nil }

// Identity passes the source's identity on (journals), with the view's ID.
func (v *sourceView) Identity() string {
	if id, ok := v.Source.(disk.Identifier); ok && id.Identity() != "" {
		return id.Identity() + "@" + v.id
	}
	return ""
}

// Version passes the source's version on, so that a source written during
// a cycle is noticed.
func (v *sourceView) Version(ctx context.Context) (string, error) {
	if ver, ok := v.Source.(disk.Versioner); ok {
		return ver.Version(ctx)
	}
	return "", nil
}

// AllocatedRanges passes the source's allocation map on, when it has one.
func (v *sourceView) AllocatedRanges(ctx context.Context, off, n int64) ([]disk.Range, error) {
	if m, ok := v.Source.(disk.AllocationMapper); ok {
		return m.AllocatedRanges(ctx, off, n)
	}
	return []disk.Range{{Off: off, Len: n}}, nil
}

// BackingFile passes the source's file on, so that blockdiff reads it
// through memory mappings as it would read the source itself.
func (v *sourceView) BackingFile() *os.File {
	if f, ok := v.Source.(interface{ BackingFile() *os.File }); ok {
		return f.BackingFile()
	}
	return nil
}
