package localdisk

// SourceOptions configures OpenSource. The zero value is the safe default:
// a live disk is refused.
type SourceOptions struct {
	// AllowLive reads the disk even when it may be written while it is
	// read: a block device mounted read-write or held exclusively by
	// someone else, or a file locked by a deltasync target. The copy is
	// then crash-inconsistent. Default false: such a source is refused with
	// ErrMounted or ErrLocked, and a block device is held with O_EXCL so
	// that nothing can mount it or claim it exclusively during the run.
	AllowLive bool
}

// TargetOptions configures OpenTarget. The zero value opens an existing
// file or device for buffered writes and zeroes ranges by punching holes.
type TargetOptions struct {
	// Create creates a regular file (mode 0644, empty and sparse) when the
	// path does not exist. Default false: a missing target is an error
	// wrapping fs.ErrNotExist. Ignored for an existing path.
	Create bool

	// Direct opens with O_DIRECT: writes and reads bypass the page cache.
	// Buffers and ranges that are not aligned go through an aligned bounce
	// buffer (unaligned writes become read-modify-write of the edge
	// blocks). BackingFile returns nil, so blockdiff reads through ReadAt
	// instead of memory mappings. Default false. Open fails with
	// ErrDirectIO when the filesystem refuses O_DIRECT.
	Direct bool

	// ZeroMode chooses how ZeroRange clears a range of a regular file.
	// Default PunchHoleMode. Ignored for block devices, which always use
	// BLKZEROOUT.
	ZeroMode ZeroMode

	// StateDir is where a watchdog records the target's state when a run
	// is killed (see Watch and RunWatchdogIfAsked), in a subdirectory
	// "evidence" made with mode 0700. Default: $XDG_STATE_HOME/deltasync,
	// or ~/.local/state/deltasync. Keep it with the journals.
	StateDir string
}

// ZeroMode is how ZeroRange clears a range of a regular file.
type ZeroMode int

const (
	// PunchHoleMode deallocates the range (fallocate PUNCH_HOLE|KEEP_SIZE):
	// the file gets sparser. The default.
	PunchHoleMode ZeroMode = iota
	// ZeroRangeMode keeps the range allocated and marks it as zeros
	// (fallocate ZERO_RANGE|KEEP_SIZE), for thick-provisioned images that
	// must keep their blocks.
	ZeroRangeMode
	// WriteZerosMode writes zeros. Slow, but the blocks are written and
	// allocated, whatever the filesystem.
	WriteZerosMode
)

func (m ZeroMode) String() string {
	switch m {
	case PunchHoleMode:
		return "punch-hole"
	case ZeroRangeMode:
		return "zero-range"
	case WriteZerosMode:
		return "write-zeros"
	}
	return "ZeroMode(invalid)"
}

// Kind is what a Disk is opened on.
type Kind int

const (
	RegularFile Kind = iota + 1
	BlockDevice
)

func (k Kind) String() string {
	switch k {
	case RegularFile:
		return "regular file"
	case BlockDevice:
		return "block device"
	}
	return "Kind(invalid)"
}
