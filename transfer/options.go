package transfer

import (
	"fmt"
	"runtime"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// Defaults of Options.
const (
	// DefaultConcurrency is the number of writer goroutines.
	DefaultConcurrency = 4
	// DefaultMemoryBudget bounds the bytes of write buffers held at once.
	DefaultMemoryBudget = 64 << 20
	// DefaultWriteSize is the largest single write, when the target allows it.
	DefaultWriteSize = 4 << 20
	// DefaultZeroSize is the largest single ZeroRange call.
	DefaultZeroSize = 64 << 20
	// DefaultJournalBytes is how much of the range is compared between
	// journal saves.
	DefaultJournalBytes = 64 << 20
	// DefaultJournalInterval is the longest time between journal saves
	// while the watermark moves.
	DefaultJournalInterval = 2 * time.Second
	// DefaultProgressInterval is the shortest time between two progress
	// reports within a phase.
	DefaultProgressInterval = time.Second
)

// Options tune a Seed or a Sync. The zero value means the documented
// defaults; a nil *Options is the zero value. Options are read, never
// changed, by the calls that take them, and may be shared between runs.
type Options struct {
	// BlockSize is the comparison granularity: a multiple of 512 from 512
	// to 4 MiB. Default 64 KiB (blockdiff.DefaultBlockSize). Smaller
	// blocks find smaller differences but cost more per byte. A block
	// size that is not a multiple of the target's alignment works (writes
	// are rounded outward) but reads and writes more.
	BlockSize int

	// RefineSize, when not 0, refines each differing block to this finer
	// granularity (a multiple of 512 dividing BlockSize, at least the
	// target's alignment to pay off), so fewer bytes are written; see
	// blockdiff.Options.RefineSize. Default 0: whole blocks.
	RefineSize int

	// CompareConcurrency is the number of comparison workers inside
	// blockdiff. Default max(4, GOMAXPROCS); at least 1.
	CompareConcurrency int

	// Concurrency is the number of writer goroutines, each with at most
	// one write, zeroing or source read outstanding. Default 4; 1 to 1024.
	Concurrency int

	// MemoryBudget bounds, in bytes, the write buffers held at any time
	// (read from the source, waiting to be written, being written).
	// Default 64 MiB; at least the target's alignment. Writes shrink to
	// fit (WriteSize is lowered to MemoryBudget). Comparison memory is
	// blockdiff's and separate: none for files and devices read through
	// mappings, else 2*4 MiB per comparison worker and read-ahead chunk.
	MemoryBudget int64

	// WriteSize is the largest single write: at least the target's
	// alignment, rounded down to it. Default 4 MiB. It is lowered to the
	// target's WriteLimits maximum and to MemoryBudget.
	WriteSize int64

	// BandwidthLimit caps the bytes written to the target per second
	// (source data, and zeros written for a target without Zeroer; a
	// ZeroRange sends no data and is not counted). 0 means no limit; it
	// must not be negative. The first WriteSize bytes may go at once.
	BandwidthLimit int64

	// Offset and Length limit the run to [Offset, Offset+Length) of the
	// disks, so that several workers can each take a slice of one disk;
	// each slice has its own journal. Offset must be a multiple of 512
	// and of the target's alignment; so must Length, unless the range
	// reaches the end of the larger disk. Length 0 means to the end.
	Offset, Length int64

	// Hints, when not nil, limit the comparison to these ranges: the
	// caller knows nothing changed elsewhere (a snapshot diff, a dirty
	// range feed). An empty non-nil slice compares nothing. The journal
	// identity includes a digest of the hints. See blockdiff.Options.Hints.
	Hints []disk.Range

	// TruncateExcess shrinks a target longer than its source to the
	// source's size, before anything is copied, when the target is a
	// Resizer and the range reaches the end (of slices run concurrently,
	// only the last truncates; start it first, or truncate beforehand). Default (false), and for a
	// target that is not a Resizer: the excess is kept, untouched, and
	// counted in Stats.ExcessKept; the target then reads as the source
	// followed by its old tail.
	TruncateExcess bool

	// Verify re-reads both sides after the run and proves them equal:
	// the target is flushed and its cache dropped (CacheDropper) first,
	// so what is read is what the device holds. A difference is a
	// *VerifyError. Default off: it costs a second full read of both.
	Verify bool

	// AllowLive accepts a source that changed during the run (a Versioner
	// whose version changed, or a different Size). The copy is then
	// crash-inconsistent; Stats.SourceChanged says so. Default: such a
	// run fails with ErrSourceChanged.
	AllowLive bool

	// Journal is where the journal of a resumable run is kept. Default
	// (nil): DirStore{} (the user's state directory). A run is journaled
	// only when both disks are Identifiers and NoJournal is not set.
	Journal JournalStore

	// NoJournal turns journaling off: an interrupted run starts over.
	NoJournal bool

	// AssumeExclusive trusts a journal without the target's evidence that
	// nothing else wrote it since (see Witness): the caller asserts that
	// nothing but deltasync writes the target between runs. Default off:
	// a target that is not a Witness, or whose evidence is missing or
	// fails, is compared again from the start of the range.
	AssumeExclusive bool

	// DiscardBadJournal makes a journal that does not match this run, or
	// is corrupt, be deleted and the run start from the beginning.
	// Default: the run fails with ErrJournalMismatch and the journal is
	// left alone for inspection.
	DiscardBadJournal bool

	// JournalBytes is how much of the range is compared between journal
	// saves (each save flushes the target first). Default 64 MiB; when
	// set, at least BlockSize (rounded up to a multiple of it).
	JournalBytes int64

	// JournalInterval is the longest time between journal saves while
	// work is being finished. Default 2 s; when set, at least 1 ms.
	JournalInterval time.Duration

	// Progress receives snapshots of the run. Default: none (a no-op).
	// See Progress for when it is called.
	Progress Progress

	// ProgressInterval is the shortest time between two reports within a
	// phase; every phase change is reported. Default 1 s; not negative.
	ProgressInterval time.Duration

	// NoMmap makes blockdiff read files and devices with pread instead of
	// memory mappings (see blockdiff.Options.NoMmap).
	NoMmap bool

	// DirectReads is whether files and devices are read with O_DIRECT
	// (see blockdiff.Options.Direct). Default: through the page cache;
	// blockdiff.DirectAuto reads cold chunks directly, at a third of the
	// CPU time and without evicting the host's cached pages, but slower
	// on the disks measured (docs/bench/figures.md).
	DirectReads blockdiff.DirectMode

	// DropBehind drops the disks' pages from the page cache behind the
	// comparison (see blockdiff.Options.DropBehind), so a sync of a large
	// block device does not evict the host's working set. Default false;
	// the command turns it on when a side is a block device.
	DropBehind bool

	// HashAlgorithm is the keyed block hash used when the target hashes
	// its own blocks (a BlockHasher, such as a remote agent), with a
	// fresh random key per comparison. Default blockdiff.XXH3; use
	// blockdiff.BLAKE3 where the data may be chosen by an adversary (see
	// the blockdiff package doc for the odds).
	HashAlgorithm blockdiff.HashAlgorithm

	// NoRemoteHash reads a BlockHasher target like any other instead of
	// having it hash its own blocks.
	NoRemoteHash bool

	// Durability says when the target is flushed. Default DurableEnd.
	Durability Durability

	// bootID, when not nil, replaces the machine's boot ID; for tests
	// that simulate a reboot.
	bootID func() string
	// clock is the time source of the bandwidth limiter; tests replace it.
	clock clock
	// hook, when not nil, is called with the run once it is prepared,
	// before anything is copied; for tests.
	hook func(*run)
}

// Durability says when a run flushes its target (a Flusher; a target
// without one is durable when WriteAt returns, and none of this applies).
type Durability uint8

const (
	// DurableEnd, the default: the target is flushed once, at the end of
	// the run, so a run that returns nil left everything durable. Journal
	// checkpoints during the run are saved without a flush, stamped with
	// this machine's boot ID: a process killed (kill -9) loses nothing
	// the kernel already holds, so a rerun in the same boot resumes from
	// the checkpoint; after a reboot (power loss, crash), when unflushed
	// writes may be gone, the journal is discarded and the run starts
	// over, comparing everything. On local disks this runs at page-cache
	// speed, like cp and rsync, instead of waiting for the disk at every
	// checkpoint. Where the boot ID cannot be read, checkpoints flush. A
	// target that writes behind (WriteBehind: queued for a remote agent)
	// is flushed before every checkpoint, unless it is an AppliedBarrier:
	// then a checkpoint waits until the host has applied the queued
	// writes and is stamped with the host's boot ID instead.
	DurableEnd Durability = iota
	// DurableCheckpoint flushes the target before every journal save as
	// well: the journal is then good across reboots, at the price of
	// waiting for the disk every JournalBytes.
	DurableCheckpoint
	// DurableNone never flushes, like cp and rsync: the operating system
	// writes back when it pleases. Checkpoints are stamped with the boot
	// ID as for DurableEnd. Verify still flushes (it must read from the
	// device).
	DurableNone
)

func (d Durability) String() string {
	switch d {
	case DurableEnd:
		return "end"
	case DurableCheckpoint:
		return "checkpoint"
	case DurableNone:
		return "none"
	}
	return "Durability(invalid)"
}

// config is Options with defaults applied and limits checked.
type config struct {
	Options
	bs           int
	compareConc  int
	writers      int
	budget       int64
	writeSize    int64
	zeroSize     int64
	journalBytes int64
	journalEvery time.Duration
	progressEv   time.Duration
	clock        clock
}

// config applies defaults and checks what can be checked without the
// disks; the target's limits are applied by run.limits.
func (o *Options) config() (config, error) {
	var c config
	if o != nil {
		c.Options = *o
	}
	c.bs = c.BlockSize
	if c.bs == 0 {
		c.bs = blockdiff.DefaultBlockSize
	}
	if c.bs < blockdiff.SectorSize || c.bs%blockdiff.SectorSize != 0 || c.bs > blockdiff.MaxBlockSize {
		return c, badOptions("block size %d is not a multiple of 512 from 512 to %d", c.bs, blockdiff.MaxBlockSize)
	}
	c.compareConc = c.CompareConcurrency
	if c.compareConc == 0 {
		c.compareConc = max(4, runtime.GOMAXPROCS(0))
	}
	if c.compareConc < 1 {
		return c, badOptions("compare concurrency %d", c.CompareConcurrency)
	}
	c.writers = c.Concurrency
	if c.writers == 0 {
		c.writers = DefaultConcurrency
	}
	if c.writers < 1 || c.writers > 1024 {
		return c, badOptions("concurrency %d is not from 1 to 1024", c.Concurrency)
	}
	c.budget = c.MemoryBudget
	if c.budget == 0 {
		c.budget = DefaultMemoryBudget
	}
	if c.budget < 1 {
		return c, badOptions("memory budget %d", c.MemoryBudget)
	}
	c.writeSize = c.WriteSize
	if c.writeSize == 0 {
		c.writeSize = DefaultWriteSize
	}
	if c.writeSize < 1 {
		return c, badOptions("write size %d", c.WriteSize)
	}
	c.zeroSize = DefaultZeroSize
	if c.HashAlgorithm == 0 {
		c.HashAlgorithm = blockdiff.XXH3
	}
	if c.HashAlgorithm.Size() == 0 {
		return c, badOptions("hash algorithm %d", c.HashAlgorithm)
	}
	if c.Durability > DurableNone {
		return c, badOptions("durability %d", c.Durability)
	}
	if c.BandwidthLimit < 0 {
		return c, badOptions("bandwidth limit %d", c.BandwidthLimit)
	}
	if c.Offset < 0 || c.Offset%blockdiff.SectorSize != 0 {
		return c, badOptions("offset %d is not a non-negative multiple of 512", c.Offset)
	}
	if c.Length < 0 {
		return c, badOptions("length %d", c.Length)
	}
	// What blockdiff will be asked, checked now: a run changes nothing
	// before every option is known good.
	bo := blockdiff.Options{BlockSize: c.bs, RefineSize: c.RefineSize, Concurrency: c.CompareConcurrency,
		Direct: c.DirectReads, Hints: c.Hints, Offset: c.Offset, Length: c.Length}
	if err := bo.Validate(); err != nil {
		return c, fmt.Errorf("%w: %w", ErrBadOptions, err)
	}
	c.journalBytes = c.JournalBytes
	if c.journalBytes == 0 {
		c.journalBytes = DefaultJournalBytes
	}
	if c.journalBytes < 0 {
		return c, badOptions("journal bytes %d", c.JournalBytes)
	}
	c.journalBytes = roundUp(max(c.journalBytes, int64(c.bs)), int64(c.bs))
	c.journalEvery = c.JournalInterval
	if c.journalEvery == 0 {
		c.journalEvery = DefaultJournalInterval
	}
	if c.journalEvery < time.Millisecond {
		return c, badOptions("journal interval %v is under 1ms", c.JournalInterval)
	}
	c.progressEv = c.ProgressInterval
	if c.progressEv == 0 {
		c.progressEv = DefaultProgressInterval
	}
	if c.progressEv < 0 {
		return c, badOptions("progress interval %v", c.ProgressInterval)
	}
	if c.Progress == nil {
		c.Progress = noProgress{}
	}
	if c.Journal == nil && !c.NoJournal {
		c.Journal = DirStore{}
	}
	c.clock = c.Options.clock
	if c.clock == nil {
		c.clock = realClock{}
	}
	return c, nil
}

func roundUp(n, a int64) int64   { return (n + a - 1) / a * a }
func roundDown(n, a int64) int64 { return n / a * a }

func lcm(a, b int64) int64 {
	x, y := a, b
	for y != 0 {
		x, y = y, x%y
	}
	return a / x * b
}
