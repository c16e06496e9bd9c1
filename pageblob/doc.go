// Package pageblob adapts Azure page blobs and managed disks to deltasync's
// source and target contracts (package disk), over the official azblob
// SDK (only its blob, pageblob and bloberror packages: the root package
// and azblob/container pull in apache/arrow-go).
//
//	// A SAS in the URL, or AZURE_STORAGE_* in the environment.
//	dst, err := pageblob.OpenTarget(ctx, "https://acct.blob.core.windows.net/disks/vm1.vhd?sv=...",
//		&pageblob.Options{CreateSize: src.Size()}) // a new blob of that size
//	if err != nil {
//		return err
//	}
//	defer dst.Close()
//	st, err := transfer.Sync(ctx, src, dst, nil)
//	snap, err := dst.Snapshot(ctx) // a recovery point
//
// # Words
//
//   - A page blob is Azure's random-access blob: a size (a multiple of
//     512, at most 8 TiB) of 512-byte pages, written with Put Page (at
//     most 4 MiB per request) and freed with Clear Pages. Pages never
//     written, or cleared, are not allocated and read as zeros.
//   - A Blob is an open page blob: a source (Open, OpenSnapshot: never
//     written) or a target (OpenTarget). It implements disk.Source and
//     disk.Target, and the capabilities Zeroer (Clear Pages), Resizer,
//     Flusher, WriteLimits (512, 4 MiB), Identifier, Versioner (ETag and
//     size), AllocationMapper (Get Page Ranges) and RangeCopier (Put Page
//     From URL from another Blob: CopyRange); a target is also the
//     journal's witness (disk.Witness: Watch, Check).
//   - A lease is the exclusive write hold Azure offers on a blob. A target
//     takes one before its first change and sends its ID with every write.
//   - The sequence number is a number Azure keeps per page blob. A target
//     sets its own for the run and makes every write conditional on it
//     (x-ms-if-sequence-number-eq), so that a write by anything else
//     becomes visible as ErrConcurrentWriter. An ETag cannot do this: our
//     own writes change it.
//   - A snapshot is a read-only, point-in-time copy of a blob, named by
//     the time Azure took it. A recovery point is a snapshot taken at the
//     end of a successful cycle (RecoveryPoint, ListSnapshots,
//     DeleteSnapshot). The prior state of a target is a snapshot taken
//     just before a run first changes a blob that existed
//     (Options.KeepPrior, PriorSnapshot), as Azure Site Recovery keeps the
//     original disk on reprotect. Snapshots deltasync takes carry the
//     metadata deltasync=recovery-point or deltasync=prior
//     (SnapshotInfo.Kind).
//   - A diff is the list of ranges that changed between a snapshot and the
//     blob (or a later snapshot): Get Page Ranges Diff. Written ranges
//     (PageRange) and cleared ranges (ClearRange) both mean changed.
//   - A managed disk is uploaded through a SAS URL on an md- host, as a
//     fixed VHD: the disk (a multiple of 1 MiB) then a 512-byte footer.
//
// # Opening and credentials
//
// A location is a URL (https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB,
// an md- URL, or http://127.0.0.1:PORT/devstoreaccount1/CONTAINER/BLOB for
// Azurite), or CONTAINER/BLOB with a connection string. ParseURL is the one
// place URLs are parsed. Credentials are, in order: the URL's SAS;
// Options.RefreshSAS (a function returning a fresh SAS URL, called before
// the SAS expires and after a 403, for long runs); Options.Credential;
// Options.AccountKey; AZURE_STORAGE_CONNECTION_STRING;
// AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY; the emulator's public key;
// azidentity.DefaultAzureCredential. A SAS that does not parse (a bad
// %-escape, a field given twice, fields without sig=) is an error
// (ErrBadURL), never dropped in favour of another credential; SAS field
// names are case-insensitive (SIG= is sig=). A connection string or
// AZURE_STORAGE_KEY is used only for its own account: when one is set for
// another account and nothing else applies, Open fails with
// ErrNoCredential rather than signing in another way, so that a source
// and a target in two accounts each get a credential of their own. A
// failed DefaultAzureCredential is one line that lists the ways to
// authenticate. Blob.Credential says which kind was used (sas,
// shared-key, connection-string, azure-ad, emulator) and where it was
// found, never the secret. Secrets never appear in errors: every
// error carries the URL without its SAS (Redact), and error text is
// scrubbed of SAS fields, keys and Authorization values.
//
// OpenTarget with Options.CreateSize creates a missing container too
// (Create Container, a plain request under the Blob's credential, as
// AzCopy does); when the credential may not (a SAS for one blob), the
// error names the container (ErrContainerNotFound, which matches
// ErrNotFound).
//
// A host that cannot be reached at all (a name that does not resolve, a
// refused connection, no route) fails at once with ErrUnreachable naming
// the host, instead of after the retry policy's back-off.
//
// # What is checked before sending
//
// Azurite accepts what Azure refuses (a Put Page over 4 MiB, a write past
// the end, a blob over 8 TiB), so the library enforces Azure's rules
// itself, before any request: writes are 512-aligned (ErrUnaligned), split
// into Put Pages of at most 4 MiB, and inside the blob's known size
// (ErrPastEnd); sizes are multiples of 512 and at most 8 TiB (ErrBadSize).
// Package pageblobtest holds a recording HTTP transport that asserts it in
// tests.
//
// # Writes, durability and integrity
//
// Every Put Page carries a transactional CRC64 of its body (computed here,
// and compared with the CRC64 Azure echoes): corruption on the way is
// ErrIntegrity, and nothing is stored. A Put Page or Clear Pages that
// Azure acknowledged is durable, so Flush writes nothing: it renews the
// lease once, so that a lease broken since the last write fails the run
// (ErrLeaseLost) instead of going unnoticed. Writes are idempotent by
// offset, so retrying one is safe.
//
// # Throttling and retries
//
// There is one retry layer: azcore's retry policy, configured once
// (Options.Retry), which honours Retry-After. A policy of this package
// sees every try: on 503 ServerBusy (or 429, or 500 OperationTimedOut) it
// halves the Blob's request limiter (an AIMD Limiter: halve on throttling,
// add one after a cap's worth of successes) and calls Options.Throttle, so
// that an engine can lower its own concurrency as well.
//
// # Blob to blob
//
// A Blob target copies from a Blob source server-side (CopyRange, which
// transfer discovers as a RangeCopier): Put Page From URL, at most 4 MiB
// per request, so a sync between two page blobs reads both to compare
// them but never uploads data. The source must be readable by URL: its
// SAS is sent, or a two-hour read SAS is minted from its account key, or
// its Azure AD token goes in x-ms-copy-source-authorization. When the
// service refuses a copy for a reason that reading and writing avoid
// (whatever its status: Azurite answers 501 under a shared key and 500
// under a SAS; Azure answers CannotVerifyCopySource when it cannot reach
// the source), CopyRange declines from then on, the run reads and writes
// instead, and CopyStats says why. Refusals a write would meet as well
// (the lease, the sequence number, throttling) are errors.
//
// # Targets and managed disks
//
// Page blobs are sync targets: before its first change a target takes
// the lease and sets the sequence number, and diffs, snapshots and Resize
// work. Managed disks are seed-only targets: Azure grants a write SAS
// only to a disk created for upload (never to a disk in use), and an
// upload URL has neither lease, sequence number nor snapshots. OpenTarget
// on an md- URL checks the size and exposes the disk before the footer;
// the footer is written last (FinishUpload, called by transfer through
// the Watch's Done), so that an interrupted upload is not a valid fixed
// VHD. To deliver deltas to a managed disk, sync a page blob and create
// the disk from it, or run the deltasync agent on a VM with the disk
// attached. WriteFixedVHD turns a raw image file into a fixed VHD for
// other upload tools.
//
// # Resuming
//
// A target is transfer's Witness (disk.Witness): the evidence a resume
// journal is trusted on is the lease (witness.go details it).
//
//   - Recorded: the lease's id, duration and the run's sequence number,
//     in the watch's token (a secret, kept in the journal only, never
//     printed); after a clean stop also the blob's ETag, read with the
//     lease confirmed.
//   - Trusted when: after SIGKILL, Azure renews the token's lease (it
//     does while the lease is active, and after it expired only if nobody
//     changed or leased the blob since); after a clean stop, the lease is
//     taken again with If-Match on the recorded ETag. The rerun keeps that
//     lease (so the killed run's own lease never blocks it) and sets a new
//     sequence number before its first write, so that Put Pages of the
//     killed run still on their way are refused.
//   - Untrusted when: the lease was broken, released or taken, or expired
//     and the blob was changed since; the ETag moved; the sequence number
//     is not the run's. The run then compares everything. A lease another
//     holder has now is ErrLeaseHeld, naming its state and duration (the
//     journal is kept); Options.BreakLease breaks it.
//   - The hole that remains: none known for a writer without the lease id
//     (a holder of the account key can break the lease, which is seen). A
//     managed disk upload has no lease: it is compared again.
//
// A journal that is not trusted still hands its lease over (Reclaim), and
// a target records the lease it holds under Options.StateDir (a file per
// blob, 0600, removed on release: leasefile.go), so that a run killed
// before any journal named its lease, or without a journal, does not
// block the next run on this machine until the lease expires: once the
// recorded process is gone, its lease is taken over (trusting nothing it
// wrote). A recorded holder that still runs keeps its lease.
//
// A lease lost during a run fails its writes and its Flush with
// ErrLeaseLost, which transfer reports as a *transfer.WriteError and
// which poisons the journal (a failed Put Page From URL does not poison,
// but the watch's Stopped confirms the lease first, so no evidence is
// recorded and the rerun's Check fails). While a run writes a page blob it carries
// the metadata IncompleteKey=1 (set by Watch, cleared by Done): Snapshot
// and RecoveryPoint refuse it (ErrIncomplete), and no prior-state
// snapshot (Options.KeepPrior) is taken of it, nor by a run that resumes:
// the prior state is kept only before the first run's first write.
//
// # Avoiding reading the target
//
// A sync compares the source with the target, and reading a page blob
// across a WAN costs time and egress. Three ways avoid it: seed a target
// proven empty (its AllocatedRanges are empty, nothing is read); keep the
// snapshot that ended the last cycle and ask Diff (or DiffFromURL for
// managed disk incremental snapshots) which ranges changed since, on the
// side that changed; or run the deltasync agent next to the data, so that
// only hashes cross the wire. Unallocated ranges are never read in any
// case: AllocatedRanges lists a blob in segments (Options.ListSegment,
// 1 GiB, so that a very fragmented blob does not time out), following
// NextMarker paging, and caches them.
//
// # Azurite
//
// The tests run against a real Azurite (package internal/azurite) for
// everything it does right, and against answers recorded in Azure's own
// XML format for what it does wrong: paging of page-range listings
// (ignored), Get Page Ranges Diff (answered with a plain listing, without
// ClearRange entries) and Put Page From URL (501, or 500 under a SAS).
// Leases behave as on Azure, renewals after expiry included (measured:
// see witness_test.go), so the resume evidence is tested on Azurite.
// Tests against real Azure run when DELTASYNC_AZURE_CONTAINER_URL is set.
package pageblob
