package replicate

import (
	"context"
	"time"

	"github.com/deltasync/deltasync/disk"
)

// Point is a recovery point: a snapshot of the target cut at the end of a
// successful cycle, after the cycle's writes were flushed.
type Point struct {
	// ID names the snapshot on its target (a page blob snapshot's
	// timestamp, a file name).
	ID string `json:"id"`
	// Time is when the target's service took the snapshot, on its clock.
	Time time.Time `json:"time"`
	// Size is the disk's size at the point.
	Size int64 `json:"size"`
	// View is the ID of the source view the point was synced from, and
	// ViewTime when that view was frozen (on the source's clock).
	View     string    `json:"view,omitempty"`
	ViewTime time.Time `json:"viewTime,omitzero"`
}

// PointSource is a recovery point opened as a read-only source.
type PointSource interface {
	disk.Source
	Close() error
}

// Points is a target's recovery points: snapshots of the target.
// Implementations: blob.Target (page blob snapshots, in replicate/blob)
// and FileTarget (sparse copies of an image file). Methods may be called
// concurrently.
type Points interface {
	// CreatePoint snapshots the target as it is now. The caller has
	// flushed the target (a sync ends with a flush). The Point's Time is
	// the service's clock.
	CreatePoint(ctx context.Context) (Point, error)
	// ListPoints lists the target's snapshots, oldest first; it may
	// include snapshots this package did not make.
	ListPoints(ctx context.Context) ([]Point, error)
	// DeletePoint deletes one snapshot.
	DeletePoint(ctx context.Context, id string) error
	// OpenPoint opens a snapshot as a read-only source (to restore it,
	// or to check it).
	OpenPoint(ctx context.Context, id string) (PointSource, error)
}

// OwnedPoints is an optional capability of Points: the points cut for
// this replication (a blob.Target with an Owner tags its snapshots),
// whether or not a state file records them. Creating a snapshot is not
// idempotent: a cut whose answer was lost (a timeout, a process killed
// between the cut and saving its state) leaves a point no state names,
// an orphan that retention would never delete and that would count
// against the snapshot quota. Before a cycle that follows such a cut,
// the replicator lists its owned points and deletes the orphans (see
// Policy, # Orphans).
type OwnedPoints interface {
	OwnedPoints(ctx context.Context) ([]Point, error)
}

// Target is a replication target: a disk.Target (with whatever
// optional capabilities it has) that keeps recovery points.
type Target interface {
	disk.Target
	Points
}
