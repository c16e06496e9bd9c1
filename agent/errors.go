package agent

import (
	"errors"
	"fmt"
	"strings"

	"github.com/deltasync/deltasync/disk"
)

// Sentinel errors. Errors from an agent arrive as a *RemoteError that
// unwraps to one of these; callers branch with errors.Is.
var (
	// ErrUnauthorized: the agent refused the credentials: no token, a
	// wrong or expired token, a token not scoped to the disk, or (mutual
	// TLS) no client certificate from an accepted authority. The message
	// never repeats the token.
	ErrUnauthorized = errors.New("agent: not authorized")
	// ErrNoDisk: the agent serves no disk of that name.
	ErrNoDisk = errors.New("agent: no such disk")
	// ErrBusy: the disk is held by another opener (another session
	// writing it, or a local program holding its lock).
	ErrBusy = errors.New("agent: disk busy")
	// ErrAgentBusy: the agent serves as many sessions as it may
	// (ServerOptions.MaxSessions); the message says how many. Try again
	// later.
	ErrAgentBusy = errors.New("agent: agent busy")
	// ErrReadOnly: a write to a disk opened as a source, or a disk that
	// cannot be written.
	ErrReadOnly = errors.New("agent: read-only")
	// ErrOutOfRange: an offset or length outside the disk.
	ErrOutOfRange = errors.New("agent: range outside the disk")
	// ErrProtocol: a malformed, oversized or unexpected message. The
	// session ends; the disk keeps what was written before it.
	ErrProtocol = errors.New("agent: protocol violation")
	// ErrDisconnected: the connection to the agent ended (dropped,
	// closed, or ended by the agent). Writes queued and not acknowledged
	// may not have reached the disk; those the agent received it applies.
	// It is also disk.ErrDisconnected, so a run's journal is not poisoned
	// by it: the rerun resumes if the agent's evidence holds (see
	// Disk.Check), or compares again.
	ErrDisconnected error = &alsoErr{"agent: disconnected", disk.ErrDisconnected}
	// ErrClosed: the Disk was closed.
	ErrClosed = errors.New("agent: disk closed")
	// ErrBadOptions: invalid options or arguments, found before anything
	// was sent.
	ErrBadOptions = errors.New("agent: invalid options")
)

// alsoErr is a sentinel of this package that is also another's.
type alsoErr struct {
	msg  string
	also error
}

func (e *alsoErr) Error() string { return e.msg }
func (e *alsoErr) Unwrap() error { return e.also }

// Error codes on the wire.
const (
	codeIO           = 1
	codeUnauthorized = 2
	codeNoDisk       = 3
	codeBusy         = 4
	codeReadOnly     = 5
	codeOutOfRange   = 6
	codeProtocol     = 7
	codeBadRequest   = 8
	codeCanceled     = 9
	codeAgentBusy    = 10 // a client that does not know it shows the message alone
)

func codeSentinel(code uint8) error {
	switch code {
	case codeUnauthorized:
		return ErrUnauthorized
	case codeNoDisk:
		return ErrNoDisk
	case codeBusy:
		return ErrBusy
	case codeReadOnly:
		return ErrReadOnly
	case codeOutOfRange:
		return ErrOutOfRange
	case codeProtocol:
		return ErrProtocol
	case codeBadRequest:
		return ErrBadOptions
	case codeAgentBusy:
		return ErrAgentBusy
	}
	return nil
}

// RemoteError is an operation that failed on the agent: which operation,
// where, and the agent's message. It unwraps to a sentinel of this
// package when the agent gave a known reason.
type RemoteError struct {
	Op   string // "hello", "write", "zero", "flush", "resize", "read", "hash", "allocated ranges", "version", "drop cache"
	Off  int64  // offset of the operation; -1 when none applies
	Len  int64  // its length; 0 when none applies
	Code uint8  // the agent's reason code (0: none)
	Msg  string // the agent's message
}

func (e *RemoteError) Error() string {
	s := "agent: " + e.Op
	if e.Off >= 0 {
		s += fmt.Sprintf(" at offset %d (+%d)", e.Off, e.Len)
	}
	s += ": "
	// The sentinel's words, unless the message starts with them.
	if se := codeSentinel(e.Code); se != nil {
		if w := strings.TrimPrefix(se.Error(), "agent: "); !strings.HasPrefix(e.Msg, w) {
			s += w + ": "
		}
	}
	return s + e.Msg
}

func (e *RemoteError) Unwrap() error { return codeSentinel(e.Code) }

// protoErr is a protocol violation found locally.
func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

func badOptions(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadOptions}, args...)...)
}
