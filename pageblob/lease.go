package pageblob

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

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

// acquireLease takes the lease for the run and, for a finite lease,
// starts the goroutine that renews it every third of its duration.
func (b *Blob) acquireLease(ctx context.Context) (*lease, error) {
	l := &lease{id: newLeaseID(), dur: b.cl.opts.LeaseDuration, done: make(chan struct{})}
	secs := "-1"
	if l.dur > 0 {
		secs = strconv.Itoa(int(l.dur / time.Second))
	}
	_, err := b.leaseRequest(ctx, map[string]string{
		"x-ms-lease-action":      "acquire",
		"x-ms-lease-duration":    secs,
		"x-ms-proposed-lease-id": l.id,
	}, http.StatusCreated)
	if err != nil {
		return nil, b.wrap("lease", 0, 0, err)
	}
	l.lastOK.Store(time.Now().UnixNano())
	rctx, cancel := context.WithCancel(context.Background())
	l.stop = cancel
	if l.dur < 0 {
		close(l.done)
		return l, nil
	}
	go b.renewLoop(rctx, l)
	return l, nil
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
// lost is not an error of Close: the writes said so when it mattered.
func (b *Blob) releaseLease(ctx context.Context) error {
	l := b.lease
	l.stop()
	<-l.done
	if l.lost.Load() {
		return nil
	}
	_, err := b.leaseRequest(ctx, map[string]string{"x-ms-lease-action": "release", "x-ms-lease-id": l.id}, http.StatusOK)
	if err != nil && classify(err) == ErrLeaseLost {
		return nil
	}
	return b.wrap("lease", 0, 0, err)
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
	b.seq = seq
	return nil
}
