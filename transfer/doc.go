// Package transfer makes a target disk identical to a source disk by
// writing only the blocks that differ. It turns the extents that blockdiff
// reports into writes the target accepts, copies them with bounded
// concurrency and bounded memory, journals what is done so that an
// interrupted run resumes, and proves the result by reading it back.
//
//	src, _ := localdisk.OpenSource("disk.img", localdisk.SourceOptions{})
//	dst, _ := localdisk.OpenTarget("copy.img", localdisk.TargetOptions{Create: true})
//	st, err := transfer.Sync(ctx, src, dst, &transfer.Options{
//		Journal: transfer.DirStore{Dir: stateDir}, // an interrupted run resumes
//		Verify:  true,                             // read the target back
//	})
//	// st.Written, st.Zeroed: what moved; st.Resumed: from a journal
//
// Seed is the same for a target that is new or proven empty.
//
// # Words
//
//   - Seeding (Seed) is the first full copy into a target that is new, or
//     proven empty: blocks of zeros are not written at all.
//   - Sync makes an existing target identical by comparing both disks and
//     writing only the ranges that differ.
//   - An extent is a range [Off, Off+Len) where the disks differ and what
//     the source holds there: Data (copied), Zero (cleared on the target,
//     not written as zeros when the target is a Zeroer) or Excess (the
//     target's tail past the source's end, kept unless
//     Options.TruncateExcess).
//   - An operation is one write or one clearing of the target: an extent
//     rounded outward to the target's alignment, merged with its
//     neighbours, and split to the target's largest write.
//   - The journal records a run's identity (both disks' Identity, their
//     sizes, the source's version, the block size, the alignment, the range
//     and TruncateExcess) and its watermark, checksummed, in a JournalStore
//     under a key derived from the target's identity and the range.
//   - The watermark is the offset below which everything has been
//     compared, written and flushed. Comparison reports extents in
//     ascending order but writes finish in any order, so the watermark is
//     the lower of the comparison's frontier and the oldest unfinished
//     operation. A rerun restarts comparison from it.
//
// # The pipeline
//
// One goroutine runs blockdiff.Compare and plans operations from the
// extents it reports, while comparison goes on; Options.Concurrency writer
// goroutines read the source into pooled buffers and write them. Buffers
// are taken within Options.MemoryBudget (a byte-weighted semaphore), so a
// slow target slows the comparison instead of filling memory. Writes pass
// through a token bucket when Options.BandwidthLimit is set. Every
// blocking step takes the caller's context and stops when it is cancelled;
// when one step fails the others stop and the first error is returned.
// The disks are read once: a run never makes two passes over them
// (except Options.Verify, which is a separate, second read by design).
//
// # Targets
//
// The target is a disk.Target; its optional capabilities (package disk:
// Zeroer, Flusher, Resizer, WriteLimits, ...; BlockHasher, here) are
// discovered by type assertion. Operations are aligned to WriteLimits'
// alignment and at most its maximum write; Zero ranges are cleared with
// ZeroRange, or written as zeros without a Zeroer; a target smaller than
// the source is grown with Resize, or refused with ErrTargetTooSmall, and
// never truncated below the source. The target is read during a Sync, at
// ranges not being written, and written concurrently at disjoint ranges.
// That write path is Writer, exported for callers that bring their own
// bytes (patch.Apply uses it), so the alignment, the splitting, the zero
// fallback and the flush live in one place.
//
// # Journals and resuming
//
// A run is journaled when both disks are Identifiers (with a non-empty
// Identity) and Options.NoJournal is not set; without identities there is
// nothing to tell one run from another, so nothing is resumed. Every
// Options.JournalBytes of the range compared, or Options.JournalInterval,
// the target is flushed (Flusher) and then the journal is saved with the
// new watermark: data is durable before the journal calls it done. A
// rerun loads the journal, checks that its identity equals this run's in
// every field and that its checksum holds, and restarts from its
// watermark; a journal that does not match is refused with a
// *JournalError (ErrJournalMismatch), or discarded with
// Options.DiscardBadJournal, never trusted; a refused run leaves the
// target as it was (the target is grown or truncated only after its
// journal is accepted). A successful run removes its
// journal. The default store is a DirStore in the user's state directory.
//
// A run may be limited to a range (Options.Offset, Options.Length) with its
// own journal, so that several workers each take a slice of a large disk.
//
// # Evidence
//
// A journal is a claim: that [Offset, Watermark) was written by the run
// that saved it. It is trusted only with evidence that nothing else wrote
// the target since that run stopped writing, and that the target is the
// same disk; the evidence is the target's (a Witness), not the journal's.
// The engine asks the target to Watch before the first change, saves the
// watch's token in every journal record, and, when a run stops without
// finishing (an error, a cancellation), flushes, saves, and saves the
// evidence the watch records. A run killed with SIGKILL records nothing
// in process: the witness records for it, out of process. A rerun passes
// the journal's token and evidence to Check. Without a Witness, without
// evidence, or when Check says why not, the journal is deleted, the run
// compares the whole range and says so (Stats.JournalDiscardedReason;
// Options.AssumeExclusive trusts a journal anyway). Our own writes after
// the last save move the target's change time, ETag or counters too, so
// "unchanged since the save" cannot tell them from another writer's; the
// evidence is read after the run's last write instead.
//
//	target          recorded                       untrusted when                          hole that remains
//	--------------  -----------------------------  --------------------------------------  ------------------------------------
//	local file      device, inode, birth time      inode or birth time differ (deleted,    a write by mmap (no fanotify event)
//	(localdisk)     (statx; inode generation       created again); size or nanosecond      in the watchdog's reaction time after
//	                without one), ctime with ns,   ctime moved (any write, truncate,       a SIGKILL; without CAP_SYS_ADMIN, any
//	                at a clean stop by the run,    metadata change, even with the mtime    write in that time; kernels before
//	                after SIGKILL by a watchdog    restored); the watchdog saw another     6.13: a write within one clock tick
//	                process (fanotify: writers'    pid write it (FAN_MODIFY) during the    of the run's last; a SIGKILL of the
//	                pids, in order)                run or after its death; no record       watchdog too: no evidence, compare all
//	block device    diskseq, completed write and   any counter moved; diskseq changed      a write through another device node
//	(localdisk)     discard counters, the parent   (media or loop re-attached); a loop     stacked elsewhere (dm, md) on the
//	                disk's too, a loop device's    device's backing file changed; the      same disk; a write through the device
//	                backing file as a file; read   watchdog saw another writer of its      in the microseconds between the run's
//	                after a flush (by the          backing file (not a loop worker);       death and the watchdog's first read
//	                watchdog after SIGKILL, before after SIGKILL, the flush moved the      (writes to device nodes make no
//	                and after its flush)           counters (the run left dirty pages:     fanotify events); as for files, for
//	                                               devices rarely resume after SIGKILL)    the backing file of a loop device
//	page blob       the lease ID (a secret; the    the lease cannot be renewed: it was     a Put Page cancelled by a clean stop
//	(pageblob)      journal is kept 0600) and the  broken, released, taken, or the blob    but still applied by the service
//	                sequence number; after a clean modified after it expired; after a      after the ETag was read makes the
//	                stop, the blob's ETag; a new   clean stop, the ETag moved; the         evidence fail (safe: compare all);
//	                sequence number before each    sequence number is not the run's        Azurite behaves as Azure here
//	                run's first write, so writes
//	                of a killed run still in
//	                flight are refused
//	agent disk      the agent records, when a      another session wrote the disk, or      as for the local disk the agent
//	(agent)         writing session ends (even     the disk's own evidence (as local       serves; an agent restart forgets
//	                by a dropped connection),      file or device) fails                   its records: compare all
//	                after draining and flushing
//
// A failed write or flush of the target poisons the journal: the record
// says so and a rerun compares everything; after a failed flush it reads
// with O_DIRECT (blockdiff.DirectAlways; where the file system refuses
// O_DIRECT it drops the cached pages before reading them), because pages
// whose write-back failed may stay in the page cache, clean, holding data
// the disk does not have, and a later fsync does not report the error
// again (cmd/deltasync's TestFailedFlush shows it on internal/faultfs, a
// FUSE file system that fails a flush so). The same holds when the flush
// that fails is not the run's own but the one a device's watchdog makes
// of a killed run's writes: Check then returns an error wrapping
// disk.ErrFlushFailed (TestFailedFlushWatchdog). The target's cached
// pages are dropped too (a loop device's backing file's as well, since
// the device reads through that file's cache). A target that hashes its
// own blocks (an agent's disk) is asked to hash with O_DIRECT then (the
// agent also does so by itself on a disk whose flush failed). A source
// whose version changed (a file's ctime and birth time are part of it) is
// refused by the journal's identity. A target stays marked incomplete (an
// extended attribute on a file, metadata on a blob) while runs write it,
// until one succeeds.
//
// # Live sources
//
// A source that is a Versioner has its version taken before and after the
// run, and its size compared: a change fails the run with ErrSourceChanged
// unless Options.AllowLive. The version is also part of the journal's
// identity, so a source changed between an interrupted run and its rerun
// is not resumed onto.
//
// # Prior state of the target
//
// Seed and Sync overwrite the target in place. Keeping its prior state (a
// snapshot, a copy) before the first sync onto an existing disk is the
// caller's choice for local targets, made before calling Sync.
package transfer
