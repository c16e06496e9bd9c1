package patch

import (
	"errors"
	"fmt"
)

var (
	// ErrCorrupt is wrapped by every error about a patch that cannot be
	// read: damaged, truncated, not a patch, or of an unsupported version
	// (see FormatError).
	ErrCorrupt = errors.New("patch: corrupt patch")
	// ErrBaseMismatch: the target is not the base the patch was made for
	// (its size, or a block the patch does not rewrite, differs). Nothing
	// was written.
	ErrBaseMismatch = errors.New("patch: target is not the patch's base")
	// ErrResultMismatch: the result is not the one the patch promises:
	// before writing, the patch applied to its proven base would not give
	// its result digest (the patch is inconsistent); after writing, with
	// ApplyOptions.Verify, the target does not read back as the result.
	ErrResultMismatch = errors.New("patch: result does not match the patch")
	// ErrSourceChanged: the source changed while a patch was being made
	// (a block read for the patch no longer has the hash it had).
	ErrSourceChanged = errors.New("patch: source changed while diffing")
	// ErrBadOptions is wrapped by every error about invalid options or
	// arguments, and about a target that cannot take a patch (its
	// alignment, or a size it cannot change).
	ErrBadOptions = errors.New("patch: invalid options")
)

// FormatError is a patch that cannot be read: where, and what is wrong.
// It wraps ErrCorrupt, and Err when there is an underlying cause (a
// decompression error, for example).
type FormatError struct {
	// Part is "header", "record" or "trailer".
	Part string
	// Record is the index of the record (for a trailer: the number of
	// records before it).
	Record int64
	// Pos is the byte offset of the part in the patch.
	Pos int64
	// Msg says what is wrong.
	Msg string
	// Err is the underlying cause, or nil.
	Err error
}

func (e *FormatError) Error() string {
	s := "patch: corrupt patch: "
	switch e.Part {
	case "record":
		s += fmt.Sprintf("record %d at byte %d: ", e.Record, e.Pos)
	case "trailer":
		s += fmt.Sprintf("trailer (after %d records) at byte %d: ", e.Record, e.Pos)
	default:
		s += e.Part + ": "
	}
	s += e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrCorrupt and the cause, if any.
func (e *FormatError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrCorrupt}
	}
	return []error{ErrCorrupt, e.Err}
}

func badOptions(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadOptions}, args...)...)
}
