package main

// What a failed run says: the error object of --json, the side an error
// is about, and the messages of journal refusals.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/transfer"
)

// jsonError is the "error" object of --json when a run fails.
type jsonError struct {
	// Kind is one word for what failed: usage, bad-options, interrupted,
	// read, write, verify, journal, source-changed, same-disk,
	// target-too-small, not-found, auth, locked, mounted, concurrent-writer,
	// incomplete, or error for any other.
	Kind string `json:"kind"`
	// Side is source or target when the error is about one of them.
	Side string `json:"side,omitempty"`
	// Offset is where on that side it failed, when known.
	Offset *int64 `json:"offset,omitempty"`
	// Message is the error as printed on stderr (never a secret).
	Message string `json:"message"`
}

// sideError is an error about one side of a run: opening its disk.
type sideError struct {
	side string
	err  error
}

func (e *sideError) Error() string { return e.side + ": " + e.err.Error() }
func (e *sideError) Unwrap() error { return e.err }

func sided(side string, err error) error { return &sideError{side, err} }

// failure describes err for --json; src and dst are the arguments (for
// the side of an error that names a path or a URL).
func failure(err error, src, dst string) *jsonError {
	j := &jsonError{Kind: errorKind(err), Message: message(err)}
	var (
		se *sideError
		re *blockdiff.ReadError
		fe *blockdiff.FaultError
		we *transfer.WriteError
		ve *transfer.VerifyError
		le *localdisk.Error
		be *pageblob.Error
	)
	at := func(off int64) {
		if off >= 0 {
			j.Offset = &off
		}
	}
	switch {
	case errors.As(err, &re):
		j.Side = string(re.Side)
		at(re.Off)
	case errors.As(err, &fe):
		j.Side = string(fe.Side)
		at(fe.Off)
	case errors.As(err, &we):
		j.Side = "target"
		if we.Op != "flush" {
			at(we.Off)
		}
	case errors.As(err, &ve):
		j.Side = "target"
		at(ve.Off)
	case errors.As(err, &se):
		j.Side = se.side
	case errors.Is(err, transfer.ErrSourceChanged):
		j.Side = "source"
	case errors.Is(err, transfer.ErrTargetTooSmall), errors.Is(err, transfer.ErrJournalMismatch):
		j.Side = "target"
	}
	if j.Side == "" {
		switch {
		case errors.As(err, &le) && le.Path != "":
			j.Side = sideOf(le.Path, src, dst)
		case errors.As(err, &be) && be.URL != "":
			j.Side = sideOf(be.URL, src, dst)
		}
	}
	if le != nil && j.Offset == nil && le.Off >= 0 && j.Side != "" {
		at(le.Off)
	}
	return j
}

// sideOf tells which argument a path or a URL is.
func sideOf(name, src, dst string) string {
	key := func(s string) string { s, _, _ = strings.Cut(shown(s), "?"); return strings.ToLower(s) }
	switch key(name) {
	case key(src):
		return "source"
	case key(dst):
		return "target"
	}
	return ""
}

func errorKind(err error) string {
	var (
		ue *usageError
		ie *interruptedError
		re *blockdiff.ReadError
		fe *blockdiff.FaultError
		we *transfer.WriteError
	)
	switch {
	case errors.As(err, &ue):
		return "usage"
	case errors.As(err, &ie), errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, transfer.ErrBadOptions), errors.Is(err, blockdiff.ErrBadOptions):
		return "bad-options"
	case errors.Is(err, transfer.ErrVerifyMismatch):
		return "verify"
	case errors.Is(err, transfer.ErrJournalMismatch):
		return "journal"
	case errors.Is(err, transfer.ErrSourceChanged):
		return "source-changed"
	case errors.Is(err, transfer.ErrSameDisk):
		return "same-disk"
	case errors.Is(err, transfer.ErrTargetTooSmall):
		return "target-too-small"
	case errors.As(err, &re), errors.As(err, &fe):
		return "read"
	case errors.As(err, &we):
		return "write"
	case errors.Is(err, localdisk.ErrMounted):
		return "mounted"
	case errors.Is(err, localdisk.ErrLocked):
		return "locked"
	case errors.Is(err, pageblob.ErrConcurrentWriter):
		return "concurrent-writer"
	case errors.Is(err, pageblob.ErrIncomplete):
		return "incomplete"
	case errors.Is(err, pageblob.ErrAuth), errors.Is(err, pageblob.ErrNoCredential):
		return "auth"
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, pageblob.ErrNotFound):
		return "not-found"
	}
	return "error"
}

// journalRefused is a journal the run would not use, said the command's
// way: its file, why, and the way out.
type journalRefused struct {
	path, reason string
	err          *transfer.JournalError
}

func (e *journalRefused) Error() string {
	if strings.Contains(e.reason, "remove it") {
		return fmt.Sprintf("journal %s refused: %s", e.path, e.reason)
	}
	return fmt.Sprintf("journal %s refused: %s; to compare everything again, rerun with -discard-bad-journal, or remove %s", e.path, e.reason, e.path)
}

func (e *journalRefused) Unwrap() error { return e.err }

// explain rewrites the errors of a run that the command says better: a
// refused journal names its file and the way out.
func explain(err error, rf *runFlags) error {
	var je *transfer.JournalError
	if errors.As(err, &je) && !errors.As(err, new(*journalRefused)) {
		path := je.Path
		if path == "" {
			path = rf.journalPath(je.Key)
		}
		return &journalRefused{path: path, reason: je.Reason, err: je}
	}
	return err
}
