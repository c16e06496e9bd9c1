package pageblob

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"
)

// lease is the run's hold on a target blob. Leases are requested with
// this package's own requests (the azblob lease package would pull in
// azblob/container and with it apache/arrow-go).
type lease struct {
	id     string
	dur    time.Duration // negative: infinite
	lost   atomic.Bool
	lastOK atomic.Int64 // UnixNano of the last successful acquire or renew
	stop   context.CancelFunc
	done   chan struct{}
}

func newLeaseID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails (Go 1.24+)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func (b *Blob) leaseURL() string { return b.loc.url(false) + "?comp=lease" }

// leaseRequest sends one lease action and returns the response.
func (b *Blob) leaseRequest(ctx context.Context, hdr map[string]string, ok int) (*http.Response, error) {
	resp, err := b.cl.do(ctx, http.MethodPut, b.leaseURL(), hdr, ok)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

// leaseSeconds is a lease duration as Azure's x-ms-lease-duration: whole
// seconds, or -1 for an infinite lease.
func leaseSeconds(d time.Duration) int {
	if d <= 0 {
		return -1
	}
	return int(d / time.Second)
}

// acquireLease takes the lease id for dur (Options.LeaseDuration for a
// new lease) and starts renewing it. With ifMatch set the lease is taken
// only if the blob's ETag is still that one (the evidence of a run that
// stopped cleanly; see Check). A lease another holder has gives
// ErrLeaseHeld, saying its state and duration, or with
// Options.BreakLease is broken first. Acquiring a lease that is active
// under the same id succeeds (Azure's rule), so a run takes its own
// lease back.
func (b *Blob) acquireLease(ctx context.Context, id string, dur time.Duration, ifMatch string) (*lease, error) {
	hdr := map[string]string{
		"x-ms-lease-action":      "acquire",
		"x-ms-lease-duration":    strconv.Itoa(leaseSeconds(dur)),
		"x-ms-proposed-lease-id": id,
	}
	if ifMatch != "" {
		hdr["If-Match"] = ifMatch
	}
	_, err := b.leaseRequest(ctx, hdr, http.StatusCreated)
	if err != nil && classify(err) == ErrLeaseHeld && b.cl.opts.BreakLease {
		if err := b.breakLease(ctx); err != nil {
			return nil, err
		}
		_, err = b.leaseRequest(ctx, hdr, http.StatusCreated)
	}
	if err != nil {
		if classify(err) == ErrLeaseHeld {
			return nil, b.leaseHeld(ctx, err)
		}
		return nil, b.wrap("lease", 0, 0, err)
	}
	return b.startLease(id, dur), nil
}

// renewLease renews the lease id (the interrupted run's; see Check) and
// starts renewing it. Azure renews a lease that is active under that id,
// or one that expired if nobody changed or leased the blob since.
func (b *Blob) renewLease(ctx context.Context, id string, dur time.Duration) (*lease, error) {
	if _, err := b.leaseRequest(ctx, map[string]string{"x-ms-lease-action": "renew", "x-ms-lease-id": id}, http.StatusOK); err != nil {
		return nil, b.wrap("lease", 0, 0, err)
	}
	return b.startLease(id, dur), nil
}

// startLease returns a lease just acquired or renewed and, for a finite
// one, starts the goroutine that renews it every third of its duration.
func (b *Blob) startLease(id string, dur time.Duration) *lease {
	l := &lease{id: id, dur: dur, done: make(chan struct{})}
	l.lastOK.Store(time.Now().UnixNano())
	rctx, cancel := context.WithCancel(context.Background())
	l.stop = cancel
	if l.dur < 0 {
		close(l.done)
		return l
	}
	go b.renewLoop(rctx, l)
	return l
}

// breakLease breaks the lease another holder has, at once (break period
// 0): Options.BreakLease. The holder's writes fail from then on.
func (b *Blob) breakLease(ctx context.Context) error {
	_, err := b.leaseRequest(ctx, map[string]string{"x-ms-lease-action": "break", "x-ms-lease-break-period": "0"}, http.StatusAccepted)
	if err != nil {
		return b.wrap("lease", 0, 0, fmt.Errorf("breaking the lease of another holder (Options.BreakLease): %w", err))
	}
	return nil
}

// leaseHeld is the ErrLeaseHeld of a lease the blob has, saying its
// state and duration (never its id: Azure does not tell it, and a lease
// id is a secret). How to break it (Options.BreakLease, a flag of a
// command) is for the caller to say.
func (b *Blob) leaseHeld(ctx context.Context, cause error) error {
	state, dur := "unknown", "unknown"
	if props, err := b.pb.GetProperties(ctx, nil); err == nil {
		if props.LeaseState != nil {
			state = string(*props.LeaseState)
		}
		if props.LeaseDuration != nil {
			dur = string(*props.LeaseDuration)
		}
	}
	var how string
	switch dur {
	case "infinite":
		how = "an infinite lease never expires: only its holder's release, or a break, ends it"
	case "fixed":
		how = "a lease of 15 to 60 s that its holder renews while it writes: a holder that died leaves it to expire within a minute"
	default:
		how = "its duration is not known"
	}
	if state == "breaking" {
		how = "it is being broken and ends with its break period"
	}
	e := &Error{Op: "lease", URL: Redact(b.loc.String()),
		Err: fmt.Errorf("%w (lease state %s, duration %s: %s%s)", ErrLeaseHeld, state, dur, how, b.liveHolder())}
	var re *azcore.ResponseError
	if errors.As(cause, &re) {
		e.Status, e.Code = re.StatusCode, re.ErrorCode
	}
	return e
}

// renewLoop renews the lease until stopped. A renewal Azure refuses
// (the lease was broken or taken), or no successful renewal for the
// lease's whole duration, marks the lease lost: writes are then refused
// with ErrLeaseLost before they are sent. Renewals do not wait for the
// request limiter.
func (b *Blob) renewLoop(ctx context.Context, l *lease) {
	defer close(l.done)
	t := time.NewTicker(l.dur / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, l.dur/3)
		_, err := b.leaseRequest(rctx, map[string]string{"x-ms-lease-action": "renew", "x-ms-lease-id": l.id}, http.StatusOK)
		cancel()
		switch {
		case err == nil:
			l.lastOK.Store(time.Now().UnixNano())
		case ctx.Err() != nil:
			return
		case classify(err) == ErrLeaseLost || time.Since(time.Unix(0, l.lastOK.Load())) >= l.dur:
			l.lost.Store(true)
			return
		}
	}
}

// releaseLease stops renewing and releases the lease. A lease already
// lost is not an error of Close: the writes said so when it mattered. A
// lease a journal names without evidence (a run whose watch neither
// finished nor recorded its evidence: see witnessState.pending) is kept,
// to expire by itself: the rerun renews it, which Azure allows after
// expiry too if nobody touched the blob since.
func (b *Blob) releaseLease(ctx context.Context) error {
	l := b.lease.Load()
	l.stop()
	<-l.done
	if b.wit.pending.Load() && !l.lost.Load() {
		return nil
	}
	if l.lost.Load() {
		b.forgetLease(l.id)
		return nil
	}
	_, err := b.leaseRequest(ctx, map[string]string{"x-ms-lease-action": "release", "x-ms-lease-id": l.id}, http.StatusOK)
	if err != nil && classify(err) != ErrLeaseLost {
		return b.wrap("lease", 0, 0, err) // still recorded: a later run may take it over
	}
	b.forgetLease(l.id)
	return nil
}

// setSequenceNumber sets the run's sequence number: Options.SequenceNumber,
// or milliseconds since 1970 (the current number plus one if that is not
// larger), so that every run has its own.
func (b *Blob) setSequenceNumber(ctx context.Context, current int64) error {
	seq := b.cl.opts.SequenceNumber
	if seq == 0 {
		seq = time.Now().UnixMilli()
		if seq <= current {
			seq = current + 1
		}
	}
	resp, err := b.pb.UpdateSequenceNumber(ctx, &pageblob.UpdateSequenceNumberOptions{
		ActionType:       to.Ptr(pageblob.SequenceNumberActionTypeUpdate),
		SequenceNumber:   to.Ptr(seq),
		AccessConditions: b.leaseCond(),
	})
	if err != nil {
		return b.wrap("sequence", 0, 0, err)
	}
	if resp.BlobSequenceNumber != nil && *resp.BlobSequenceNumber != seq {
		return b.wrap("sequence", 0, 0, fmt.Errorf("%w: set sequence number %d, Azure answered %d", ErrConcurrentWriter, seq, *resp.BlobSequenceNumber))
	}
	b.seq.Store(seq)
	return nil
}

// confirmLease proves that the run still holds its lease, with one
// renewal (Flush, Stopped): the renewing goroutine notices a broken lease only at
// its next renewal, up to a third of the lease's duration later. Without
// a lease (nothing changed yet, or a managed disk upload) it does nothing.
func (b *Blob) confirmLease(ctx context.Context, op string) error {
	l := b.lease.Load()
	if l == nil {
		return nil
	}
	if l.lost.Load() {
		return b.refuse(op, 0, 0, ErrLeaseLost, "the lease could not be renewed")
	}
	_, err := b.leaseRequest(ctx, map[string]string{"x-ms-lease-action": "renew", "x-ms-lease-id": l.id}, http.StatusOK)
	if err == nil {
		l.lastOK.Store(time.Now().UnixNano())
		return nil
	}
	if classify(err) == ErrLeaseLost {
		l.lost.Store(true)
	}
	return b.wrap(op, 0, 0, err)
}
