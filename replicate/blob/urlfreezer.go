package blob

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/replicate"
)

// URLFreezer freezes a source whose snapshots are made elsewhere and read
// by URL: a managed disk's incremental snapshots, which Azure Resource
// Manager creates (Compute's Snapshots API with incremental: true, then a
// grant of read access for a SAS URL). This module does not call Azure
// Resource Manager; the caller's functions do, and the replicator reads
// each snapshot through its URL and diffs it against the previous one
// (Get Page Ranges Diff with x-ms-previous-snapshot-url), so a cycle
// compares only what changed between the two.
//
//	f := blob.URLFreezer{
//		Snapshot: func(ctx context.Context) (string, time.Time, error) {
//			// PUT .../snapshots/vm1-os-<n> {creationData: {createOption: Copy,
//			// sourceResourceId: <disk>}, incremental: true}; wait for it
//			return name, createdAt, err
//		},
//		URL: func(ctx context.Context, id string) (string, error) {
//			// POST .../snapshots/<id>/beginGetAccess {access: Read, durationInSeconds: 3600}
//			return accessSAS, err
//		},
//		Delete: func(ctx context.Context, id string) error { /* DELETE .../snapshots/<id> */ },
//	}
//
// IDs are what Snapshot returns: names that are safe to keep in a state
// file, never the URLs, whose SAS is a secret. Azure allows 7 incremental
// snapshots per 5 minutes and 500 per disk (replicate.ManagedDiskQuota):
// keep the interval at a minute or more.
type URLFreezer struct {
	// Snapshot makes a new snapshot of the source, complete and
	// readable, and returns its ID and the time it was taken.
	Snapshot func(ctx context.Context) (id string, at time.Time, err error)
	// URL returns a URL that reads snapshot id (with its SAS). It may
	// be called again for an earlier snapshot (the base of a diff).
	URL func(ctx context.Context, id string) (string, error)
	// Delete deletes snapshot id; nil keeps snapshots (then delete them
	// yourself, or the disk's 500 fill up).
	Delete func(ctx context.Context, id string) error
	// Options opens the snapshots (credentials for URLs without a SAS).
	Options *pageblob.Options
}

// Freeze makes a snapshot and opens it as the view.
func (f URLFreezer) Freeze(ctx context.Context) (replicate.View, error) {
	if f.Snapshot == nil || f.URL == nil {
		return nil, errors.New("blob: URLFreezer needs Snapshot and URL")
	}
	id, at, err := f.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("blob: making a snapshot: %w", err)
	}
	u, err := f.URL(ctx, id)
	if err != nil {
		f.release(context.WithoutCancel(ctx), id)
		return nil, fmt.Errorf("blob: the URL of snapshot %s: %w", id, err)
	}
	b, err := pageblob.Open(ctx, u, f.Options)
	if err != nil {
		f.release(context.WithoutCancel(ctx), id)
		return nil, fmt.Errorf("blob: opening snapshot %s: %w", id, err)
	}
	return &urlView{Blob: b, f: f, id: id, at: at}, nil
}

func (f URLFreezer) release(ctx context.Context, id string) error {
	if f.Delete == nil {
		return nil
	}
	err := f.Delete(ctx, id)
	if errors.Is(err, pageblob.ErrNotFound) {
		return nil
	}
	return err
}

// ReleaseView deletes the snapshot of an earlier process.
func (f URLFreezer) ReleaseView(ctx context.Context, id string) error { return f.release(ctx, id) }

type urlView struct {
	*pageblob.Blob
	f    URLFreezer
	id   string
	at   time.Time
	once sync.Once
	err  error
}

func (v *urlView) ID() string      { return v.id }
func (v *urlView) Time() time.Time { return v.at }

// ChangedSince diffs this snapshot against snapshot prevID by its URL. A
// previous snapshot that is gone (409 PreviousSnapshotNotFound) is
// replicate.ErrNoBase: the cycle compares everything.
func (v *urlView) ChangedSince(ctx context.Context, prevID string) ([]disk.Range, error) {
	pu, err := v.f.URL(ctx, prevID)
	if err != nil {
		return nil, fmt.Errorf("%w: the URL of snapshot %s: %v", replicate.ErrNoBase, prevID, err)
	}
	rs, err := v.DiffFromURL(ctx, pu, 0, v.Size())
	if errors.Is(err, pageblob.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", replicate.ErrNoBase, err)
	}
	return rs, err
}

// Release closes the snapshot and deletes it.
func (v *urlView) Release(ctx context.Context) error {
	v.once.Do(func() { v.err = errors.Join(v.Blob.Close(), v.f.release(ctx, v.id)) })
	return v.err
}

var (
	_ replicate.Freezer      = URLFreezer{}
	_ replicate.ViewReleaser = URLFreezer{}
	_ replicate.Changer      = (*urlView)(nil)
)
