// Package replicate runs continuous delta replication of disks in cycles,
// keeps recovery points by a policy, and implements the reprotect
// (failback) flow of Azure Site Recovery.
//
//	r, err := replicate.New(replicate.Config{
//		Source: replicate.Quiesced(src, nil), // or blob.Freezer (replicate/blob): a snapshot per cycle
//		Target: &replicate.FileTarget{Disk: dst, Dir: pointsDir},
//		Policy: replicate.Policy{Interval: 15 * time.Minute, KeepLast: 8},
//	})
//	...
//	err = r.Run(ctx) // a cycle every Interval, a recovery point each, until ctx ends
//
// Replicator.Cycle runs one cycle (see its example); Group freezes several
// disks together; Reprotect runs the failback.
//
// # Words
//
//   - A view is a frozen, read-only view of the source at one moment
//     (View): a page blob snapshot, an LVM snapshot, a paused disk. A
//     Freezer makes one per cycle.
//   - A cycle takes the change hints, freezes the source, syncs the target
//     from the view (transfer.Sync, with Options.Hints), flushes it, cuts
//     a recovery point, and applies the retention policy.
//   - A recovery point is a snapshot of the target cut at the end of a
//     successful cycle (Point, Points). A group recovery point is a
//     Manifest naming, for each disk of a group, the point synced from
//     views frozen together.
//   - Change hints are the ranges that may have changed since the view
//     of the last successful cycle (its base): a snapshot diff (Changer:
//     Get Page Ranges Diff, PageRange and ClearRange both counting) or a
//     dirty-range feed (DirtyMap). Hints may be a superset, never a
//     subset: a cycle compares and sends only inside them.
//   - A full cycle compares the whole disks; a scrub is a full cycle the
//     policy asks for.
//
// # Why a frozen view
//
// A cycle reads the source for seconds or hours. Synced from a live disk,
// the target would hold each block as it was when that block was read:
// a mix of moments no machine ever saw, which no filesystem or database
// can recover from, and a recovery point of it is worthless. Worse, the
// hints (what changed since the last cycle) would no longer describe the
// target: a block written just after it was read is neither in this
// cycle's copy nor, with a feed taken at the start, in the next cycle's
// hints unless the feed is handled with care. A frozen view is one moment
// (crash-consistent, as after a power cut), so every recovery point is a
// state the disk really had, and the base of the next diff is exactly
// what the target holds.
//
// For page blobs the view is a snapshot (blob.Freezer, in replicate/blob,
// a package of its own so that local users do not build the Azure SDK);
// for local disks the caller provides one (an LVM or device-mapper
// snapshot, a reflink copy of an image, or Quiesced for a disk nothing
// writes during the cycle).
//
// # Hints and when they are not trusted
//
// The dirty map is taken before the source is frozen, so every write
// before the freeze is in this cycle's hints (a write between the take and
// the freeze is in both this cycle and the next, which is harmless).
// Without a dirty map, a view that is a Changer lists the changes since
// the base view. A cycle compares everything instead when:
//
//   - it is the first cycle (no base), in this process or with this state
//     file;
//   - the source's size differs from the base's (a resize);
//   - the dirty map is not trusted: new, not closed cleanly (an unclean
//     stop lost the writes marked in memory), resized, invalidated by its
//     tracker, of another epoch, or of an older generation than the one
//     the replicator last committed (an old copy restored);
//   - the changes since the base cannot be listed (ErrNoBase): the base
//     snapshot is gone (Azure's 409 PreviousSnapshotNotFound,
//     pageblob.ErrPreviousSnapshotNotFound);
//   - the source gives no hints (neither a dirty map nor a Changer);
//   - the policy's scrub is due (Policy.ScrubEvery), which also repairs
//     what a wrong hint (a tracker bug) missed.
//
// A cycle that fails (an error, a cancelled context, a killed process)
// cuts no point and leaves the base as it was; its hints are kept
// (in the dirty map, which hands them out again until Done, and in the
// state) and covered again by the next cycle, which therefore repairs
// whatever the failed cycle half wrote.
//
// Azurite answers a page-range diff with a plain listing of the blob's
// pages and no ClearRange entries, so a range cleared since the base is
// missing from its answer. On Azurite (devstoreaccount1 on loopback)
// pageblob.Blob.Diff adds the base snapshot's own pages to the diff, which
// makes it a superset again: correct, not minimal.
//
// # Clocks
//
// Ages of recovery points (retention) are measured on the target
// service's clock: a page blob snapshot's id is the time Azure took it.
// Lag and schedules are durations on this machine's monotonic clock.
//
// # Durability
//
// A cycle flushes the target before it cuts the point (transfer's
// DurableEnd, plus a Flush for targets synced with DurableNone), and the
// state and dirty map are written atomically (temporary file, fsync,
// rename, fsync of the directory) and checksummed.
//
// # Groups
//
// A Group freezes all its members' sources at one moment (GroupFreezer;
// FreezeTogether pauses the writers, freezes each disk, resumes), syncs
// each member, cuts a point of each target and stores a Manifest
// (checksummed JSON, in a ManifestStore such as DirManifests). Retention
// applies to manifests; a member's point is deleted once no kept manifest
// names it. A multi-disk VM restarts from a manifest as from one power cut.
//
// # Reprotect
//
// Reprotect replicates back from a failed-over disk to the original: it
// seeds a missing original; keeps the prior state of an existing one (a
// snapshot) before writing it; sends only the differences, which, when
// both sides still share the recovery point the failover was made from,
// are the union of both sides' changes since it (no full comparison);
// and starts delta replication. Each phase reports its time and bytes.
//
// # Concurrency
//
// Replicator and Group methods are safe for concurrent use; cycles never
// overlap. Status may be read at any time.
//
// # Systems
//
// FileTarget is Linux's, as package localdisk is; the rest of the package,
// and replicate/blob, build on every system Go supports (CI cross-builds
// them for darwin, windows and linux/arm64).
package replicate
