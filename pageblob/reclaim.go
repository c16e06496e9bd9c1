package pageblob

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Reclaim implements disk.Reclaimer: when the journal of an interrupted
// run onto this blob is not trusted (its source changed, its evidence
// failed), the rerun still takes over that run's lease, if Azure renews
// it, rather than waiting up to a minute for it to expire. Nothing the
// interrupted run wrote is trusted for it: the run compares everything.
// A lease that cannot be renewed (expired and changed since, broken,
// another's) is not an error: Watch then acquires a lease or reports its
// holder.
func (b *Blob) Reclaim(ctx context.Context, token string) error {
	if b.closed.Load() || b.mode != modeTarget {
		return nil
	}
	var tok witnessToken
	if err := json.Unmarshal([]byte(token), &tok); err != nil || tok.V != 1 || tok.Lease == "" {
		return nil
	}
	dur := time.Duration(tok.Dur) * time.Second
	if tok.Dur < 0 {
		dur = -1
	}
	ctx, done := b.opCtx(ctx)
	defer done()
	b.wit.mu.Lock()
	defer b.wit.mu.Unlock()
	if b.lease.Load() != nil {
		return nil
	}
	if r, alive, ok := b.recordedLease(); ok && alive && r.Lease == tok.Lease {
		return nil // a live run of this machine holds it (leasefile.go): Watch says so
	}
	l, err := b.renewLease(ctx, tok.Lease, dur)
	if err != nil {
		if errors.Is(err, ErrLeaseLost) {
			return nil
		}
		return err
	}
	b.lease.Store(l)
	b.recordLease(l)
	return nil
}
