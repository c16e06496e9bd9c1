package pageblob

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

// sentinel is an error value that also matches a broader sentinel: every
// lease error is a concurrent-writer error.
type sentinel struct {
	msg    string
	parent error
}

func (s *sentinel) Error() string { return s.msg }
func (s *sentinel) Unwrap() error { return s.parent }

var (
	// ErrBadURL: the URL is not a page blob URL this package understands.
	ErrBadURL = errors.New("pageblob: invalid blob URL")
	// ErrNoCredential: no way to authorise requests was found (see Open).
	ErrNoCredential = errors.New("pageblob: no credential")
	// ErrNotFound: the blob, its container or the snapshot does not exist.
	ErrNotFound = errors.New("pageblob: blob not found")
	// ErrNotPageBlob: the blob exists but is a block or append blob.
	ErrNotPageBlob = errors.New("pageblob: not a page blob")
	// ErrUnaligned: an offset or length is not a multiple of 512 bytes
	// (PageSize). Refused before any request is sent.
	ErrUnaligned = errors.New("pageblob: offset or length not a multiple of 512")
	// ErrPastEnd: a write or clear would run past the end of the blob.
	// Refused before any request is sent (Azurite would accept it; Azure
	// refuses it).
	ErrPastEnd = errors.New("pageblob: range past the end of the blob")
	// ErrBadSize: a size is negative, not a multiple of 512 (of 1 MiB for
	// a VHD), or over MaxBlobSize. Refused before any request is sent.
	ErrBadSize = errors.New("pageblob: invalid blob size")
	// ErrReadOnly: a write to a blob opened with Open or OpenSnapshot.
	ErrReadOnly = errors.New("pageblob: blob opened read-only")
	// ErrNotSupported: the operation does not exist for this blob (a
	// resize or snapshot of a managed disk upload, Put Page From URL on
	// Azurite, which answers 501).
	ErrNotSupported = errors.New("pageblob: operation not supported for this blob")
	// ErrClosed: the Blob was closed.
	ErrClosed = errors.New("pageblob: blob closed")
	// ErrAuth: Azure refused the credentials (403): a wrong key, an
	// expired SAS, or a SAS without the permission the call needs.
	ErrAuth = errors.New("pageblob: not authorised")
	// ErrThrottled: Azure still answered ServerBusy (503) after the
	// retries. Lower the concurrency (see Options.Throttle).
	ErrThrottled = errors.New("pageblob: throttled by Azure")
	// ErrIntegrity: a transactional CRC64 did not match: the bytes were
	// corrupted between this process and Azure.
	ErrIntegrity = errors.New("pageblob: transactional checksum mismatch")
	// ErrNotVHD: the end of a blob or file is not a valid fixed VHD footer.
	ErrNotVHD = errors.New("pageblob: not a fixed VHD")

	// ErrConcurrentWriter: something else wrote to the target during the
	// run. Returned when the sequence number set for the run changed
	// (x-ms-if-sequence-number-eq failed); ErrLeaseHeld and ErrLeaseLost
	// match it too.
	ErrConcurrentWriter = errors.New("pageblob: another writer changed the blob")
	// ErrLeaseHeld: a target could not take its lease (before its first
	// change, or in Check): another holder has it. The error says the
	// lease's state and duration; Options.BreakLease breaks it. It
	// matches ErrConcurrentWriter.
	ErrLeaseHeld error = &sentinel{"pageblob: the blob is leased by another writer", ErrConcurrentWriter}
	// ErrLeaseLost: the run's lease was broken, taken or expired: another
	// writer may be writing. It matches ErrConcurrentWriter.
	ErrLeaseLost error = &sentinel{"pageblob: the run's lease on the blob was lost", ErrConcurrentWriter}

	// ErrIncomplete: a snapshot (Snapshot, RecoveryPoint) of a blob
	// marked incomplete (IncompleteKey) was refused: a run writing it has
	// not finished, so it holds neither the source nor its old state.
	ErrIncomplete = errors.New("pageblob: the blob is marked incomplete")
)

// Error is a failed operation on a blob. Op names it ("open", "read",
// "write", "clear", "resize", "lease", "sequence", "properties",
// "ranges", "diff", "snapshot", "copy", "footer", "metadata", "watch");
// URL is the blob's address without its SAS; Off and Len locate the
// bytes (both 0 when the operation has none). It unwraps to the sentinel that classifies it (if
// any) and to the cause (an *azcore.ResponseError for an HTTP failure).
type Error struct {
	Op     string
	URL    string
	Off    int64
	Len    int64
	Status int    // HTTP status, 0 if no response
	Code   string // Azure's error code (x-ms-error-code), if any
	Kind   error  // the sentinel, or nil
	Err    error
}

func (e *Error) Error() string {
	msg := "pageblob: " + e.Op + " " + e.URL
	if e.Off != 0 || e.Len != 0 {
		msg += fmt.Sprintf(" at offset %d (+%d)", e.Off, e.Len)
	}
	var re *azcore.ResponseError
	switch {
	case errors.As(e.Err, &re):
		// azcore's own message is multi-line and includes the response
		// body; the status and code say what happened.
		msg += fmt.Sprintf(": HTTP %d %s", re.StatusCode, re.ErrorCode)
		if e.Kind != nil {
			msg += " (" + e.Kind.Error() + ")"
		}
	case e.Err != nil:
		msg += ": " + e.Err.Error()
		if e.Kind != nil && !errors.Is(e.Err, e.Kind) {
			msg += " (" + e.Kind.Error() + ")"
		}
	case e.Kind != nil:
		msg += ": " + e.Kind.Error()
	}
	return scrub(msg)
}

// Unwrap returns the sentinel and the cause.
func (e *Error) Unwrap() []error {
	var out []error
	if e.Kind != nil {
		out = append(out, e.Kind)
	}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

// wrap classifies err and wraps it with the operation and the blob's
// redacted address. A nil err stays nil.
func (b *Blob) wrap(op string, off, n int64, err error) error {
	if err == nil {
		return nil
	}
	return newError(op, b.loc.String(), off, n, err)
}

func newError(op, u string, off, n int64, err error) error {
	var pe *Error
	if errors.As(err, &pe) && pe.Op == op {
		return err
	}
	e := &Error{Op: op, URL: Redact(u), Off: off, Len: n, Err: sanitize(err)}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		e.Status, e.Code = re.StatusCode, re.ErrorCode
	}
	e.Kind = classify(err)
	if errors.Is(err, e.Kind) {
		e.Kind = nil // already in the chain
	}
	return e
}

// refuse returns an error for a request refused before it is sent.
func (b *Blob) refuse(op string, off, n int64, kind error, format string, args ...any) error {
	return &Error{Op: op, URL: b.loc.String(), Off: off, Len: n, Kind: kind, Err: fmt.Errorf("%w: "+format, append([]any{kind}, args...)...)}
}

// sanitize hides secrets in an error from below: the URL of a transport
// error (which net/http prints with its query, SAS included) is replaced
// in place by its redacted form, and the text of the whole chain is
// scrubbed.
func sanitize(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = Redact(ue.URL)
	}
	return &scrubbed{err}
}

// scrubbed hides secrets in the text of an error it cannot rebuild.
type scrubbed struct{ err error }

func (s *scrubbed) Error() string { return scrub(s.err.Error()) }
func (s *scrubbed) Unwrap() error { return s.err }

// classify maps an SDK error to one of the package's sentinels.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil
	case bloberror.HasCode(err, bloberror.SequenceNumberConditionNotMet):
		return ErrConcurrentWriter
	case bloberror.HasCode(err, bloberror.LeaseAlreadyPresent, bloberror.LeaseIsBreakingAndCannotBeAcquired):
		return ErrLeaseHeld
	case bloberror.HasCode(err, bloberror.LeaseIDMismatchWithBlobOperation, bloberror.LeaseLost,
		bloberror.LeaseNotPresentWithBlobOperation, bloberror.LeaseIDMismatchWithLeaseOperation,
		bloberror.LeaseNotPresentWithLeaseOperation, bloberror.LeaseIsBrokenAndCannotBeRenewed,
		bloberror.LeaseAlreadyBroken, bloberror.LeaseIsBreakingAndCannotBeChanged, bloberror.LeaseIDMissing):
		return ErrLeaseLost
	case bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound, bloberror.ResourceNotFound,
		bloberror.PreviousSnapshotNotFound):
		return ErrNotFound
	case bloberror.HasCode(err, bloberror.InvalidBlobType):
		return ErrNotPageBlob
	case bloberror.HasCode(err, "Crc64Mismatch", "Md5Mismatch"):
		return ErrIntegrity
	case bloberror.HasCode(err, bloberror.ServerBusy):
		return ErrThrottled
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		switch re.StatusCode {
		case http.StatusNotFound:
			return ErrNotFound
		case http.StatusForbidden, http.StatusUnauthorized:
			return ErrAuth
		case http.StatusServiceUnavailable, http.StatusTooManyRequests:
			return ErrThrottled
		case http.StatusNotImplemented:
			return ErrNotSupported
		}
	}
	return nil
}
