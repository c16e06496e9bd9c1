// Package blob is replication's page-blob side: a page blob target whose
// recovery points are blob snapshots (Target), and a page blob source
// frozen by snapshotting it each cycle (Freezer, whose views are View).
// It is its own package so that a user of package replicate with local
// disks only does not build the Azure SDK.
//
//	r, err := replicate.New(replicate.Config{
//		Source: blob.Freezer{Blob: secondary}, // pageblob.Open
//		Target: blob.Target{Blob: primary},    // pageblob.OpenTarget
//		Policy: replicate.Policy{KeepLast: 24},
//	})
//	if err != nil {
//		return err
//	}
//	report, err := r.Cycle(ctx) // snapshot, diff, copy the changes, cut a point
package blob

import (
	"context"
	"errors"
	"fmt"
	"github.com/deltasync/deltasync/replicate"
	"io/fs"
	"time"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/pageblob"
)

// Target is a page blob target (opened with pageblob.OpenTarget) whose
// recovery points are blob snapshots, timed by Azure. It embeds the Blob,
// so every transfer capability of the Blob is kept.
//
// With an Owner (the replication's name), each point is tagged with it
// (pageblob.RecoveryPointOf), and the orphans of cuts whose answer was
// lost are found and deleted (OwnedPoints); without one, points are
// plain snapshots and orphans cannot be told from others' snapshots.
type Target struct {
	*pageblob.Blob
	Owner string
}

var (
	_ replicate.Target      = Target{}
	_ replicate.Changer     = Target{}
	_ replicate.OwnedPoints = Target{}
)

// CreatePoint snapshots the blob. Its Time is the snapshot's timestamp,
// chosen by Azure's server.
func (t Target) CreatePoint(ctx context.Context) (replicate.Point, error) {
	snap := t.Snapshot
	if t.Owner != "" {
		snap = func(ctx context.Context) (string, error) { return t.RecoveryPointOf(ctx, t.Owner) }
	}
	id, err := snap(ctx)
	if err != nil {
		return replicate.Point{}, err
	}
	return replicate.Point{ID: id, Time: snapshotTime(id), Size: t.Size()}, nil
}

// ListPoints lists the blob's snapshots, oldest first.
func (t Target) ListPoints(ctx context.Context) ([]replicate.Point, error) {
	ss, err := t.ListSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]replicate.Point, 0, len(ss))
	for _, s := range ss {
		out = append(out, replicate.Point{ID: s.ID, Time: s.Time, Size: s.Size})
	}
	return out, nil
}

// OwnedPoints lists the recovery points cut for Owner (none without an
// Owner), oldest first: replicate deletes the orphans among them (see
// replicate.OwnedPoints).
func (t Target) OwnedPoints(ctx context.Context) ([]replicate.Point, error) {
	if t.Owner == "" {
		return nil, nil
	}
	ss, err := t.ListSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	var out []replicate.Point
	for _, s := range ss {
		if s.Owner == t.Owner && s.Kind == pageblob.KindRecoveryPoint {
			out = append(out, replicate.Point{ID: s.ID, Time: s.Time, Size: s.Size})
		}
	}
	return out, nil
}

// DeletePoint deletes a snapshot; a missing one is reported as
// fs.ErrNotExist as well as pageblob.ErrNotFound.
func (t Target) DeletePoint(ctx context.Context, id string) error {
	return notExist(t.DeleteSnapshot(ctx, id))
}

// OpenPoint opens a snapshot as a source.
func (t Target) OpenPoint(ctx context.Context, id string) (replicate.PointSource, error) {
	return t.OpenSnapshot(ctx, id)
}

// ChangedSince lists the ranges of the blob written or cleared since its
// snapshot id (Get Page Ranges Diff: PageRange and ClearRange entries
// both count). A snapshot that is gone gives replicate.ErrNoBase.
func (t Target) ChangedSince(ctx context.Context, id string) ([]disk.Range, error) {
	return blobDiff(ctx, t.Blob, id)
}

// blobDiff lists the changes of b (a blob, or a snapshot view) since its
// snapshot prev; pageblob.Blob.Diff covers Azurite's wrong diffs itself.
func blobDiff(ctx context.Context, b *pageblob.Blob, prev string) ([]disk.Range, error) {
	rs, err := b.Diff(ctx, prev, 0, b.Size())
	if errors.Is(err, pageblob.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", replicate.ErrNoBase, err)
	}
	return rs, err
}

func notExist(err error) error {
	if err != nil && errors.Is(err, pageblob.ErrNotFound) {
		return errors.Join(err, fs.ErrNotExist)
	}
	return err
}

func snapshotTime(id string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, id)
	return t
}

// Freezer freezes a page blob source by snapshotting it: each view
// is a snapshot, opened read-only, whose ChangedSince is a snapshot diff
// against the previous view's snapshot, and whose Release deletes the
// snapshot. b may be opened with pageblob.Open (read-only) or be a
// target of another run.
type Freezer struct {
	Blob *pageblob.Blob
}

var _ replicate.ViewReleaser = Freezer{}

// Freeze snapshots the blob and opens the snapshot.
func (f Freezer) Freeze(ctx context.Context) (replicate.View, error) {
	id, err := f.Blob.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	s, err := f.Blob.OpenSnapshot(ctx, id)
	if err != nil {
		f.Blob.DeleteSnapshot(context.WithoutCancel(ctx), id)
		return nil, err
	}
	return &View{Blob: s, parent: f.Blob, id: id}, nil
}

// ReleaseView deletes the snapshot id (a view of an earlier process).
func (f Freezer) ReleaseView(ctx context.Context, id string) error {
	err := f.Blob.DeleteSnapshot(ctx, id)
	if errors.Is(err, pageblob.ErrNotFound) {
		return nil
	}
	return err
}

// View is a snapshot of a page blob source, as a replicate.View.
type View struct {
	*pageblob.Blob // the snapshot, read-only
	parent         *pageblob.Blob
	id             string
	released       bool
}

var (
	_ replicate.View    = (*View)(nil)
	_ replicate.Changer = (*View)(nil)
)

// ID returns the snapshot's id.
func (v *View) ID() string { return v.id }

// Time returns the snapshot's timestamp (Azure's clock).
func (v *View) Time() time.Time { return snapshotTime(v.id) }

// ChangedSince lists the ranges changed between the snapshot prevID and
// this one (a diff between two snapshots).
func (v *View) ChangedSince(ctx context.Context, prevID string) ([]disk.Range, error) {
	return blobDiff(ctx, v.Blob, prevID)
}

// Release closes the snapshot and deletes it.
func (v *View) Release(ctx context.Context) error {
	if v.released {
		return nil
	}
	v.released = true
	v.Blob.Close()
	err := v.parent.DeleteSnapshot(ctx, v.id)
	if errors.Is(err, pageblob.ErrNotFound) {
		return nil
	}
	return err
}
