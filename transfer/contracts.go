package transfer

import (
	"context"
	"io"

	"github.com/deltasync/deltasync/blockdiff"
)

// Source is a disk a run reads. It is never written. ReadAt may be called
// concurrently (the io.ReaderAt contract).
type Source interface {
	io.ReaderAt
	Size() int64
}

// Target is a disk a run makes identical to its source. It is read too:
// comparing and verifying need its bytes. ReadAt and WriteAt may be called
// concurrently on disjoint ranges.
type Target interface {
	io.ReaderAt
	io.WriterAt
	Size() int64
}

// The optional capabilities below are discovered by type assertion on a
// Source or Target. A capability a disk lacks has a documented fallback.

// Zeroer clears a range so that it reads as zeros, without sending zeros
// (fallocate PUNCH_HOLE or ZERO_RANGE, BLKZEROOUT, Clear Pages).
// Fallback: zeros are written. ZeroRange may be called concurrently with
// WriteAt and other ZeroRange calls on disjoint ranges.
type Zeroer interface {
	ZeroRange(ctx context.Context, off, n int64) error
}

// Flusher makes every completed write durable (fdatasync, a device flush,
// nothing for a page blob whose writes are durable when acknowledged).
// Fallback: writes are taken as durable when WriteAt returns. Flush may
// be called while other writes are in flight; it must make durable at
// least every write that completed before it was called.
type Flusher interface {
	Flush(ctx context.Context) error
}

// Resizer changes the size of a target (a file grows sparse, a page blob is
// resized). Fallback: a target smaller than its source is refused.
type Resizer interface {
	Resize(ctx context.Context, size int64) error
}

// WriteBehind is a target whose WriteAt returns before the write has
// reached the disk's host (queued for a remote agent, say): a write is
// known to be applied only when Flush returns. The engine then flushes
// before every journal save, whatever Options.Durability says, so a
// journal never counts a write that was still queued in this process.
type WriteBehind interface {
	WritesBehind() bool
}

// AppliedBarrier is a WriteBehind target whose host applies writes to a
// page cache of its own, as a local disk's kernel does (a remote agent):
// Applied returns once every write queued before it is applied on the
// host, not necessarily durable, and HostBootID names the host's current
// boot ("" when unknown). With the default durability (DurableEnd) the
// engine then saves journals after Applied rather than after a flush,
// stamped with the host's boot, as it stamps a local target's with this
// machine's: the record holds while that host does not reboot, and is
// discarded after it does.
type AppliedBarrier interface {
	Applied(ctx context.Context) error
	HostBootID() string
}

// WriteLimits states what a single write must look like: offsets and
// lengths multiples of Align, at most MaxWrite bytes (0: no limit).
// Fallback: Align 1, no limit.
type WriteLimits interface {
	WriteLimits() (align, maxWrite int64)
}

// Identifier names a disk stably across processes, for journals: a file's
// device and inode, a blob's URL without its SAS. It must not contain
// secrets. Fallback: the disk cannot be resumed from a journal.
type Identifier interface {
	Identity() string
}

// Versioner reports a token that changes whenever the disk's content may
// have changed (a file's size and modification time, a blob's ETag). A
// source whose version differs before and after a run was live, and the
// run fails unless the caller accepts a crash-inconsistent copy.
type Versioner interface {
	Version(ctx context.Context) (string, error)
}

// CacheDropper drops cached pages of a range so the next read comes from
// the device (posix_fadvise DONTNEED after a flush), for verification and
// to keep a sync from evicting the host's working set.
type CacheDropper interface {
	DropCache(off, n int64) error
}

// RangeCopier copies [off, off+n) of a source into the target at the same
// offset without the bytes passing through this process: copy_file_range
// between two local files, Put Page From URL between two page blobs. src
// is the run's Source, which the copier inspects (by type) to see whether
// it can copy from it. It returns false, having copied nothing, when it
// cannot copy from this source; the engine then reads and writes. It may
// be called concurrently on disjoint ranges. Fallback: read and write.
type RangeCopier interface {
	CopyRange(ctx context.Context, src any, off, n int64) (bool, error)
}

// BlockHasher hashes a disk's blocks near its data (an agent next to a
// remote disk): the engine then hashes its own side with the same keyed
// Hasher and compares hashes (blockdiff.CompareHashes), so the disk is not
// read across the network. HashBlocks starts hashing the blocks of opts'
// range (BlockSize, Offset, Length, Hints) and returns their hashes as a
// stream in ascending order, as blockdiff.HashBlocks would produce them;
// the stream ends with io.EOF, or an error, and stops when ctx is
// cancelled. Fallback: the disk is read and compared byte for byte.
type BlockHasher interface {
	HashBlocks(ctx context.Context, h blockdiff.Hasher, opts *blockdiff.Options) (blockdiff.HashIterator, error)
}

// AllocationMapper lists the ranges that may hold data; the rest reads as
// zeros and is not read. Same contract as blockdiff's.
type AllocationMapper = blockdiff.AllocationMapper

// Extent is blockdiff's: an offset, a length, and a kind.
type Extent = blockdiff.Extent
