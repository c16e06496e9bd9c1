// Package disk holds the words every deltasync package shares about a
// disk: what a source and a target are, the optional capabilities the
// engine discovers on them, and the ranges and extents they exchange. The
// adapters (localdisk, pageblob, the agent, patch's targets) implement
// these without importing the engine (transfer) or the comparison
// (blockdiff), and both of those speak of disks in these words. It
// depends on nothing of ours.
//
//	var src disk.Source = ... // io.ReaderAt and Size
//	var dst disk.Target = ... // and io.WriterAt
//	if z, ok := dst.(disk.Zeroer); ok {
//		err = z.ZeroRange(ctx, off, n) // clear without sending zeros
//	}
//
// One file per word, as io/fs does, each contract written on its
// interface:
//   - disk.go: Source and Target.
//   - extent.go: Range, Normalize, Extent and its Kind (what a writer does).
//   - alloc.go: AllocationMapper, the ranges that may hold data.
//   - zero.go, flush.go, resize.go, limits.go, identity.go, cache.go,
//     copy.go: the optional capabilities of a target (Zeroer; Flusher,
//     WriteBehind, AppliedBarrier; Resizer; WriteLimits; Identifier and
//     Versioner; CacheDropper; RangeCopier).
//   - io.go: ReaderAtContext and WriterAtContext, reads and writes that
//     stop when their context is cancelled, and ReadAt and WriteAt, which
//     prefer them.
//   - witness.go: Witness, Watch and Reclaimer, the evidence a resume
//     journal is trusted on.
//   - errors.go: ErrDisconnected and ErrFlushFailed.
//   - state.go: DefaultStateDir, where journals and records live.
//
// A capability a disk lacks has a documented fallback, written on its
// interface.
package disk
