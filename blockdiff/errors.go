package blockdiff

import (
	"errors"
	"fmt"
)

var (
	// ErrBadOptions is wrapped by every error about invalid Options.
	ErrBadOptions = errors.New("blockdiff: invalid options")
	// ErrFault is wrapped by a FaultError: a memory-mapped disk faulted
	// (the file was truncated underneath, or the device failed).
	ErrFault = errors.New("blockdiff: fault reading mapped disk")
	// ErrSignature is wrapped by every error about a signature that is
	// corrupt, truncated, foreign or of an unsupported version.
	ErrSignature = errors.New("blockdiff: bad signature")
	// ErrHashMismatch is wrapped when hash streams do not describe the
	// same grid (block size, algorithm, key, or block positions).
	ErrHashMismatch = errors.New("blockdiff: hash stream does not match")
)

// Side names the disk an error is about.
type Side string

const (
	SourceSide Side = "source"
	TargetSide Side = "target"
)

// ReadError is a failed read of one side at an offset.
type ReadError struct {
	Side Side
	Off  int64
	Len  int64
	Err  error
}

func (e *ReadError) Error() string {
	return fmt.Sprintf("blockdiff: read %s at offset %d (+%d): %v", e.Side, e.Off, e.Len, e.Err)
}

func (e *ReadError) Unwrap() error { return e.Err }

// FaultError reports a memory fault (SIGBUS) while reading a mapped disk,
// converted into an error instead of killing the process. It wraps ErrFault.
type FaultError struct {
	Side Side
	Off  int64 // start of the window being read
	Len  int64
	Msg  string
}

func (e *FaultError) Error() string {
	return fmt.Sprintf("blockdiff: memory fault reading %s in [%d,+%d) (truncated file or failing device): %s", e.Side, e.Off, e.Len, e.Msg)
}

func (e *FaultError) Unwrap() error { return ErrFault }
