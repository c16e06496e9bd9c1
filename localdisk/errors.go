package localdisk

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
)

// Sentinel errors. Every error a Disk returns is an *Error; callers branch
// on these with errors.Is and find the path and offset with errors.As.
var (
	// ErrLocked: another opener holds the disk's exclusive hold. For a file
	// that is a flock held by another target (or, for a source, by a target
	// writing it); for a device, an O_EXCL hold by another program, a
	// device-mapper or md holder, or a mount in another mount namespace.
	ErrLocked = errors.New("localdisk: held by another opener")
	// ErrWrittenByOther: the run's watchdog saw another process write the
	// target while the run was writing it, so the target may differ from
	// the source: Done refuses to clear the incomplete mark.
	ErrWrittenByOther = errors.New("localdisk: written by another process during the run")
	// ErrMounted: the device (or a partition of it, or a device stacked on
	// it) is mounted, read-write for a source, at all for a target.
	ErrMounted = errors.New("localdisk: device is mounted")
	// ErrNotBlockOrFile: the path is neither a regular file nor a block
	// device (a directory, a character device, a FIFO, a socket).
	ErrNotBlockOrFile = errors.New("localdisk: neither a regular file nor a block device")
	// ErrReadOnly: a write was asked of a Disk opened as a source, or a
	// target cannot be opened for writing (read-only mount, read-only
	// device, immutable file, no permission).
	ErrReadOnly = errors.New("localdisk: read-only")
	// ErrOutOfRange: an offset or length is negative, or a write or zeroing
	// reaches past Size (a target is grown with Resize, never by a write).
	ErrOutOfRange = errors.New("localdisk: range outside the disk")
	// ErrCannotResize: a block device was asked to take a size other than
	// its own.
	ErrCannotResize = errors.New("localdisk: block device cannot be resized")
	// ErrDirectIO: the file or device does not support O_DIRECT.
	ErrDirectIO = errors.New("localdisk: direct I/O not supported")
)

// Error is a failed operation on a disk: which operation, which path,
// where, and what. It unwraps to the cause: a sentinel above, a
// syscall.Errno, io.ErrUnexpectedEOF, a context error, or fs.ErrClosed.
type Error struct {
	Op   string // "open", "read", "write", "zero", "flush", "resize", "allocated ranges", "drop cache", "version", "close"
	Path string // the path as given to OpenSource or OpenTarget
	Off  int64  // offset where the operation failed; -1 when none applies
	Len  int64  // bytes left to do from Off; 0 when none applies
	Err  error
}

func (e *Error) Error() string {
	s := e.Op + " " + e.Path
	if e.Off >= 0 {
		s += " at offset " + strconv.FormatInt(e.Off, 10)
		if e.Len > 0 {
			s += " (+" + strconv.FormatInt(e.Len, 10) + " bytes)"
		}
	}
	return s + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// newError builds an *Error, stripping the *fs.PathError that *os.File
// wraps around errno (it would repeat the operation and the path).
func newError(op, path string, off, n int64, err error) *Error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == path {
		err = pe.Err
	}
	return &Error{Op: op, Path: path, Off: off, Len: n, Err: err}
}

// errf wraps a sentinel with detail: "<sentinel>: <detail>".
func errf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}
