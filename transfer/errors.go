package transfer

import (
	"errors"
	"fmt"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

var (
	// ErrBadOptions is wrapped by every error about invalid Options, or
	// about write limits of a target that no write can satisfy.
	ErrBadOptions = errors.New("transfer: invalid options")
	// ErrTargetTooSmall: the target is smaller than the range needs and
	// cannot be grown (it is not a Resizer, or its Resize failed: the
	// error then also wraps the *WriteError). It is never truncated.
	ErrTargetTooSmall = errors.New("transfer: target smaller than source")
	// ErrSameDisk: the source and the target have the same Identity.
	ErrSameDisk = errors.New("transfer: source and target are the same disk")
	// ErrJournalMismatch: a journal exists for this target and range but
	// belongs to another run (other disks, sizes, options or source
	// version), or is corrupt or truncated. It is never trusted; set
	// Options.DiscardBadJournal to start over instead.
	ErrJournalMismatch = errors.New("transfer: journal does not match this run")
	// ErrVerifyMismatch is wrapped by a *VerifyError: after the run, the
	// target does not read back equal to the source.
	ErrVerifyMismatch = errors.New("transfer: verification found a difference")
	// ErrSourceChanged: the source's version or size changed during the
	// run (it is live), and Options.AllowLive is not set. The copy may be
	// crash-inconsistent; the journal is removed.
	ErrSourceChanged = errors.New("transfer: source changed during the run")
)

// ReadError is blockdiff's: a failed read of the source or the target at
// an offset, during comparison or while copying.
type ReadError = blockdiff.ReadError

// WriteError is a failed operation on the target: Op is "write", "zero",
// "resize" or "flush"; Off and Len locate it (0 for a flush).
type WriteError struct {
	Op  string
	Off int64
	Len int64
	Err error
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("transfer: %s target at offset %d (+%d): %v", e.Op, e.Off, e.Len, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// VerifyError names the first range where the target differs from the
// source after a run. It wraps ErrVerifyMismatch.
type VerifyError struct {
	Off  int64     // first differing offset
	Len  int64     // length of the first differing extent
	Kind disk.Kind // what the source holds there (Data, Zero), or Excess
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("transfer: verify: target differs from source at offset %d (+%d, source %s)", e.Off, e.Len, e.Kind)
}

func (e *VerifyError) Unwrap() error { return ErrVerifyMismatch }

// JournalError says why a journal was refused. It wraps ErrJournalMismatch.
type JournalError struct {
	Key    string // the journal's key in its store
	Path   string // the journal's file, when the store is a DirStore
	Reason string // what differs, or what is corrupt
}

func (e *JournalError) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("transfer: journal %s refused: %s", e.Path, e.Reason)
	}
	return fmt.Sprintf("transfer: journal %s refused: %s", e.Key, e.Reason)
}

func (e *JournalError) Unwrap() error { return ErrJournalMismatch }

func badOptions(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadOptions}, args...)...)
}
