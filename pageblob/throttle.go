package pageblob

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// ThrottleEvent is one answer of Azure that asks the client to slow down:
// 503 ServerBusy (the blob's or the account's request or bandwidth
// target), 429, or 500 OperationTimedOut.
type ThrottleEvent struct {
	Method     string        // HTTP method of the throttled request
	Status     int           // HTTP status
	Code       string        // x-ms-error-code, e.g. ServerBusy
	RetryAfter time.Duration // what Azure asked to wait (Retry-After, x-ms-retry-after-ms), 0 if nothing
	Limit      int           // the adapter's request cap after lowering it
}

// throttlePolicy runs on every try of every request, after the SDK's
// retry policy decided to send it: it notices throttling answers, lowers
// the limiter and tells the observer. It never retries by itself: azcore's
// retry policy (the only retry layer) waits, honouring Retry-After, and
// retries.
type throttlePolicy struct {
	limiter *Limiter
	notify  func(ThrottleEvent)
}

func (p *throttlePolicy) Do(req *policy.Request) (*http.Response, error) {
	resp, err := req.Next()
	if err != nil || resp == nil {
		return resp, err
	}
	code := resp.Header.Get("x-ms-error-code")
	throttled := resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests ||
		(resp.StatusCode == http.StatusInternalServerError && code == "OperationTimedOut")
	if !throttled {
		return resp, nil
	}
	ra := retryAfter(resp.Header)
	p.limiter.Throttled(ra)
	if p.notify != nil {
		p.notify(ThrottleEvent{Method: req.Raw().Method, Status: resp.StatusCode, Code: code, RetryAfter: ra, Limit: p.limiter.Limit()})
	}
	return resp, nil
}

// retryAfter reads the delays azcore honours, in its order of preference.
func retryAfter(h http.Header) time.Duration {
	for _, k := range []string{"retry-after-ms", "x-ms-retry-after-ms"} {
		if v, err := strconv.Atoi(h.Get(k)); err == nil && v > 0 {
			return time.Duration(v) * time.Millisecond
		}
	}
	v := h.Get("Retry-After")
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// Limiter bounds concurrent requests with a cap that adapts to throttling
// (AIMD: additive increase, multiplicative decrease). The cap halves when
// Azure throttles (at most once per cool-down, so that a burst of 503s
// from requests already in flight counts once) and grows by one after a
// cap's worth of successful requests, up to the maximum. A Limiter is safe
// for concurrent use; share one among the blobs of one storage account to
// respect the account's targets. The zero value is not usable: call
// NewLimiter.
type Limiter struct {
	mu        sync.Mutex
	max       int
	limit     int
	inUse     int
	successes int
	quietTill time.Time
	cooldown  time.Duration
	queue     []*waiter
}

type waiter struct {
	ch      chan struct{}
	granted bool
}

// NewLimiter returns a Limiter whose cap starts at, and never exceeds,
// maxConcurrency (at least 1).
func NewLimiter(maxConcurrency int) *Limiter {
	m := max(maxConcurrency, 1)
	return &Limiter{max: m, limit: m, cooldown: time.Second}
}

// Acquire waits for a slot. It returns ctx's error if ctx ends first.
func (l *Limiter) Acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	if l.inUse < l.limit && len(l.queue) == 0 {
		l.inUse++
		l.mu.Unlock()
		return nil
	}
	w := &waiter{ch: make(chan struct{})}
	l.queue = append(l.queue, w)
	l.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		if w.granted { // granted while we gave up: hand it on
			l.inUse--
			l.grantLocked()
			return ctx.Err()
		}
		for i, q := range l.queue {
			if q == w {
				l.queue = append(l.queue[:i], l.queue[i+1:]...)
				break
			}
		}
		return ctx.Err()
	}
}

// Release returns a slot taken by Acquire.
func (l *Limiter) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inUse <= 0 {
		panic("pageblob: Limiter.Release without Acquire")
	}
	l.inUse--
	l.grantLocked()
}

func (l *Limiter) grantLocked() {
	for l.inUse < l.limit && len(l.queue) > 0 {
		w := l.queue[0]
		l.queue = l.queue[1:]
		w.granted = true
		l.inUse++
		close(w.ch)
	}
}

// Success records a request that was not throttled: after Limit()
// successes in a row the cap grows by one.
func (l *Limiter) Success() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limit >= l.max {
		return
	}
	l.successes++
	if l.successes >= l.limit {
		l.successes = 0
		l.limit++
		l.grantLocked()
	}
}

// Throttled halves the cap (not below 1), unless it was already lowered
// within the cool-down (one second, or retryAfter if longer).
func (l *Limiter) Throttled(retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.successes = 0
	if now.Before(l.quietTill) {
		return
	}
	l.limit = max(l.limit/2, 1)
	l.quietTill = now.Add(max(l.cooldown, retryAfter))
}

// Limit returns the current cap.
func (l *Limiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}

// InUse returns the number of slots taken.
func (l *Limiter) InUse() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inUse
}
