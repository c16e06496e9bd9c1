package disk

import "context"

// Witness is a target that can show a later run that nothing but an
// earlier run wrote it: the evidence a journal is trusted on. A journal
// only claims that the range below its watermark was written; the target
// may have been written since by someone else (another program, a mount
// of the image, a third party's Put Page after a lease expired), or
// replaced by another disk under the same name. Without a Witness, or
// without evidence, a journal is not trusted (unless
// transfer.Options.AssumeExclusive): the run compares everything again.
//
// The engine (transfer) calls Watch before the target's first change (resize
// included), stores the watch's Token in every journal save, and, when
// the run stops without finishing, calls Stopped once the run has stopped
// writing, storing the evidence it returns in a last save. A rerun passes
// both to Check. A process killed with SIGKILL calls nothing: a witness
// that wants such runs to resume records its evidence itself, out of
// process (a watchdog, a lease the service keeps, an agent that outlives
// its client), and finds it from the token.
//
// Implementations document, per kind of disk, what they record, what makes
// the evidence fail, and the hole that remains; see the package doc.
type Witness interface {
	// Watch starts watching a run that is about to change the target.
	// It also marks the target incomplete (an xattr, blob metadata) until
	// the watch's Done. resumable says that the run keeps a journal, so
	// evidence is worth recording if the process dies. A Watch is used
	// by one run and is not safe for concurrent use.
	Watch(ctx context.Context, resumable bool) (Watch, error)

	// Check tells whether the evidence still holds: that since the
	// watched run stopped writing, nothing else can have written the
	// target, and that it is the same disk. token is the watch's Token;
	// evidence is what Stopped returned, or "" when the run did not stop
	// cleanly. It returns "" when the evidence holds, or a sentence
	// saying why not; err is for a check that could not be made (a
	// network failure), not for evidence that fails, with one exception:
	// evidence showing that a flush of the target failed after the run
	// stopped is an error wrapping ErrFlushFailed, so that the engine
	// also reads the target with O_DIRECT.
	Check(ctx context.Context, token, evidence string) (why string, err error)
}

// A Watch is the witness's part of one run; see Witness.
type Watch interface {
	// Token names the watch for Check. It is stored in the journal, which
	// is kept private (mode 0600); it may hold a secret (a lease ID) and
	// must never be printed.
	Token() string
	// Stopped is called when the run has stopped writing without
	// finishing (an error, a cancellation), after its last flush: it
	// records the state of the target and returns it as evidence for
	// Check. The watch ends; the target stays marked incomplete.
	Stopped(ctx context.Context) (evidence string, err error)
	// Done is called when the run has finished and the target equals the
	// source and is durable: the incomplete mark is cleared and the watch
	// ends.
	Done(ctx context.Context) error
	// Abandon ends the watch without evidence (the journal is poisoned or
	// gone): nothing is recorded, the target stays marked incomplete.
	Abandon()
}

// Reclaimer is a Witness whose watch holds the disk against other writers
// (a blob lease). When a journal is not trusted, the engine still passes
// its token to Reclaim, so that this run takes over the hold its own
// interrupted run left, instead of waiting for it to expire. Reclaim
// trusts nothing the interrupted run wrote; a hold it cannot take over
// (expired, broken, another's) is not an error: Watch then takes a new
// one, or says who holds it.
type Reclaimer interface {
	Reclaim(ctx context.Context, token string) error
}
