package transfer

import (
	"context"
	"sync"
	"time"
)

// clock is the time source of the limiter and the journal timer.
type clock interface {
	Now() time.Time
	// Sleep waits d or until ctx is done, whichever comes first, and
	// returns ctx's error in the second case.
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// limiter is a token bucket of bytes. wait reserves n bytes at once,
// letting the bucket go into debt, and sleeps until the debt is paid: so a
// request larger than the burst still goes through, at the right rate, and
// concurrent callers queue behind each other's reservations. A cancelled
// wait does not give its reservation back (the rate errs low, never high).
type limiter struct {
	mu     sync.Mutex
	clock  clock
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
}

// newLimiter returns a limiter of rate bytes per second, or nil for no
// limit. The bucket starts full.
func newLimiter(rate, burst int64, c clock) *limiter {
	if rate <= 0 {
		return nil
	}
	return &limiter{clock: c, rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: c.Now()}
}

// wait takes n bytes from the bucket, waiting with ctx as long as needed.
// A nil limiter never waits.
func (l *limiter) wait(ctx context.Context, n int64) error {
	if l == nil {
		return ctx.Err()
	}
	l.mu.Lock()
	now := l.clock.Now()
	if el := now.Sub(l.last); el > 0 {
		l.tokens = min(l.burst, l.tokens+el.Seconds()*l.rate)
		l.last = now
	}
	l.tokens -= float64(n)
	debt := -l.tokens
	l.mu.Unlock()
	if debt <= 0 {
		return ctx.Err()
	}
	return l.clock.Sleep(ctx, time.Duration(debt/l.rate*float64(time.Second)))
}
