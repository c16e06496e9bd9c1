package blockdiff

import (
	"fmt"
	"math"
	"runtime"

	"github.com/deltasync/deltasync/disk"
)

const (
	// DefaultBlockSize is the comparison granularity when Options.BlockSize is 0.
	DefaultBlockSize = 64 << 10
	// MaxBlockSize is the largest block size accepted (one Put Page).
	MaxBlockSize = 4 << 20
	// SectorSize is the unit every block size, refinement size and range
	// offset is a multiple of.
	SectorSize = 512
	// DefaultChunkSize is the unit of work handed to one worker.
	DefaultChunkSize = 4 << 20
)

// Options tune a comparison. The zero value means the documented defaults;
// Options are read, never changed, by the calls that take them.
type Options struct {
	// BlockSize is the comparison granularity in bytes: a multiple of 512,
	// at most 4 MiB. Default 64 KiB. Blocks sit on an absolute grid
	// (block i covers [i*BlockSize, (i+1)*BlockSize)), clipped to the
	// disk and to the range, so slices of one disk compared by different
	// workers line up.
	BlockSize int

	// RefineSize, when not 0, refines each differing block to this finer
	// granularity (a multiple of 512 that divides BlockSize) so only the
	// sub-blocks that differ are reported. Exact mode only: it costs no
	// extra read, both blocks are already in memory.
	RefineSize int

	// Concurrency is the number of comparison workers, each reading both
	// sides of its chunk. Default: max(4, GOMAXPROCS).
	Concurrency int

	// ReadAhead is the number of chunks that may be read (or prefetched)
	// ahead of the oldest chunk not yet reported. Default: 2*Concurrency+2
	// (for direct reads, Concurrency). Together with ChunkSize it bounds
	// memory: the buffered and direct read paths hold at most
	// 2*ChunkSize*(Concurrency+ReadAhead) bytes of buffers (64 MiB for
	// direct reads at the defaults); the mapped path holds no buffers at
	// all, only Concurrency windows mapped, and has the kernel read
	// ReadAhead chunks ahead (posix_fadvise WILLNEED).
	ReadAhead int

	// ChunkSize is the unit of work of one worker, rounded up to a
	// multiple of BlockSize. Default 4 MiB (or BlockSize if larger).
	ChunkSize int

	// Offset and Length limit the comparison to [Offset, Offset+Length).
	// Offset must be a multiple of 512. Length 0 means to the end of the
	// larger disk.
	Offset, Length int64

	// Hints, when not nil, limit the comparison to these ranges (widened
	// to whole blocks): the caller knows nothing changed elsewhere. An
	// empty non-nil slice compares nothing. Ranges may overlap and come
	// in any order.
	Hints []disk.Range

	// NoMmap turns off memory-mapped reading of *os.File disks; they are
	// then read with pread into pooled buffers like any io.ReaderAt.
	NoMmap bool

	// Direct chooses whether *os.File disks (regular files and block
	// devices, Linux) are read with O_DIRECT. Default DirectNever: through
	// the page cache.
	Direct DirectMode

	// DropBehind drops the pages of *os.File disks from the page cache
	// once their chunk is compared (posix_fadvise DONTNEED), so that
	// comparing a large block device does not evict the host's working
	// set. Pages the host itself had cached are dropped too (they are
	// clean; it reads them again). Default false.
	DropBehind bool

	// MaxExtent, when not 0, ends a merged extent once it is at least
	// this long, so a long run of differing blocks is reported in pieces
	// (each at most MaxExtent plus one chunk) and Reached keeps moving.
	// Default 0: adjacent extents of one kind are always merged.
	MaxExtent int64

	// Reached, when not nil, is called in order after each chunk, from the
	// goroutine that calls fn, with an offset below which every extent
	// has been handed to fn: no later extent starts below it. (The last
	// extent is held back to merge it with the next, so this can lag the
	// comparison by one extent.) Writers use it as a resume watermark.
	Reached func(off int64)

	// Progress, when not nil, is told how many bytes of the range were
	// compared, as each chunk finishes. It is called from one goroutine
	// at a time.
	Progress func(compared int64)
}

// Validate checks the options as Compare would, without any disk: an
// error wraps ErrBadOptions. Callers that prepare a run in several steps
// (transfer) call it before they change anything.
func (o *Options) Validate() error {
	_, err := o.config()
	return err
}

// DirectMode is how *os.File disks use direct I/O (see Options.Direct).
type DirectMode int

const (
	// DirectNever (the default) reads every chunk through the page cache,
	// mapped (or with pread, NoMmap), with the kernel's reads started
	// ReadAhead chunks ahead: the fastest way on the disks measured
	// (docs/bench/figures.md).
	DirectNever DirectMode = iota
	// DirectAuto reads a chunk with O_DIRECT when fewer than half of its
	// pages are cached (and none is dirty), through the page cache
	// otherwise. A cold pass then costs no page-cache bookkeeping (on the
	// reference machine a third of the CPU time) and evicts none of the
	// host's cached pages, while a warm one still reads memory; but it
	// keeps fewer bytes in flight than the kernel's read-ahead (ReadAhead
	// bounds them, and they are anonymous memory) and a cold sync took
	// 1.48x the default's time there (8.0 against 5.4 s, interleaved
	// runs). For hosts short of CPU or of page cache. Files on systems
	// without O_DIRECT (tmpfs) fall back to the page cache.
	DirectAuto
	// DirectAlways reads every chunk with O_DIRECT, even cached ones:
	// nothing is read from or added to the page cache. Where the file
	// system refuses O_DIRECT (tmpfs, some FUSE file systems) each chunk's
	// clean cached pages are dropped (posix_fadvise DONTNEED) before it
	// is read through the page cache, so it still comes from the file
	// system: what transfer needs after a failed flush, when pages whose
	// write-back failed may sit in the cache, clean, holding data the
	// disk does not have. Dirty pages, and pages mapped by another
	// process, are not dropped.
	DirectAlways
)

type config struct {
	Options
	bs, refine, chunk, workers, inflight int
	// directAhead is the number of direct reads per side started ahead
	// of the workers: ReadAhead when set, else Concurrency.
	directAhead int
	// splitAt, when > 0, ends the block that straddles it there (hash
	// mode cuts the source's blocks where the target ends).
	splitAt int64
}

func (o *Options) config() (config, error) {
	var c config
	if o != nil {
		c.Options = *o
	}
	c.bs = c.BlockSize
	if c.bs == 0 {
		c.bs = DefaultBlockSize
	}
	if c.bs < 0 || c.bs%SectorSize != 0 || c.bs > MaxBlockSize {
		return c, fmt.Errorf("%w: block size %d is not a multiple of 512 between 512 and %d", ErrBadOptions, c.bs, MaxBlockSize)
	}
	c.refine = c.RefineSize
	if c.refine != 0 {
		if c.refine < 0 || c.refine%SectorSize != 0 || c.refine >= c.bs || c.bs%c.refine != 0 {
			return c, fmt.Errorf("%w: refine size %d must be a multiple of 512 that divides the block size %d and is smaller", ErrBadOptions, c.refine, c.bs)
		}
	}
	c.workers = c.Concurrency
	if c.workers == 0 {
		c.workers = max(4, runtime.GOMAXPROCS(0))
	}
	if c.workers < 0 {
		return c, fmt.Errorf("%w: concurrency %d", ErrBadOptions, c.workers)
	}
	ra := c.ReadAhead
	if ra == 0 {
		ra = 2*c.workers + 2
	}
	if ra < 0 {
		return c, fmt.Errorf("%w: read-ahead %d", ErrBadOptions, ra)
	}
	c.inflight = c.workers + ra
	c.directAhead = c.ReadAhead
	if c.directAhead == 0 {
		c.directAhead = c.workers
	}
	c.chunk = c.ChunkSize
	if c.chunk == 0 {
		c.chunk = DefaultChunkSize
	}
	if c.chunk < 0 || c.chunk > 1<<30 {
		return c, fmt.Errorf("%w: chunk size %d", ErrBadOptions, c.chunk)
	}
	if c.chunk < c.bs {
		c.chunk = c.bs
	}
	c.chunk = (c.chunk + c.bs - 1) / c.bs * c.bs
	if c.Offset < 0 || c.Offset%SectorSize != 0 {
		return c, fmt.Errorf("%w: offset %d is not a non-negative multiple of 512", ErrBadOptions, c.Offset)
	}
	if c.Length < 0 || c.Offset > math.MaxInt64-c.Length {
		return c, fmt.Errorf("%w: length %d from offset %d", ErrBadOptions, c.Length, c.Offset)
	}
	if c.Direct < DirectNever || c.Direct > DirectAlways {
		return c, fmt.Errorf("%w: direct mode %d", ErrBadOptions, c.Direct)
	}
	if c.MaxExtent < 0 {
		return c, fmt.Errorf("%w: max extent %d", ErrBadOptions, c.MaxExtent)
	}
	for _, h := range c.Hints {
		if h.Off < 0 || h.Len < 0 {
			return c, fmt.Errorf("%w: hint %+v", ErrBadOptions, h)
		}
	}
	return c, nil
}
