package pageblob

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLimiterBoundsConcurrency(t *testing.T) {
	l := NewLimiter(4)
	var active, peak atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Acquire(context.Background()); err != nil {
				t.Error(err)
				return
			}
			n := active.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			active.Add(-1)
			l.Release()
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > 4 || p < 2 {
		t.Fatalf("peak concurrency %d with a cap of 4", p)
	}
	if l.InUse() != 0 {
		t.Fatalf("%d slots still taken", l.InUse())
	}
}

func TestLimiterAIMD(t *testing.T) {
	l := NewLimiter(16)
	l.Throttled(0)
	if l.Limit() != 8 {
		t.Fatalf("limit %d after one throttle, want 8", l.Limit())
	}
	l.Throttled(0) // within the cool-down: the same burst
	if l.Limit() != 8 {
		t.Fatalf("limit %d after a second throttle in the cool-down, want 8", l.Limit())
	}
	l.quietTill = time.Time{}
	l.Throttled(0)
	if l.Limit() != 4 {
		t.Fatalf("limit %d, want 4", l.Limit())
	}
	for i := 0; i < 4; i++ {
		l.Success()
	}
	if l.Limit() != 5 {
		t.Fatalf("limit %d after 4 successes at 4, want 5", l.Limit())
	}
	for i := 0; i < 1000; i++ {
		l.Success()
	}
	if l.Limit() != 16 {
		t.Fatalf("limit %d, want capped at 16", l.Limit())
	}
	for i := 0; i < 10; i++ {
		l.quietTill = time.Time{}
		l.Throttled(0)
	}
	if l.Limit() != 1 {
		t.Fatalf("limit %d, want floor 1", l.Limit())
	}
}

// A lowered cap holds back new requests until enough are released, and a
// waiter gives up when its context ends.
func TestLimiterLoweredAndCancelled(t *testing.T) {
	l := NewLimiter(4)
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		if err := l.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	l.Throttled(0) // cap 2, 4 in use
	got := make(chan struct{})
	go func() {
		l.Acquire(ctx)
		close(got)
	}()
	l.Release()
	l.Release()
	select {
	case <-got:
		t.Fatal("acquired with 2 in use and a cap of 2")
	case <-time.After(20 * time.Millisecond):
	}
	l.Release()
	select {
	case <-got:
	case <-time.After(time.Second):
		t.Fatal("not acquired after the release")
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	// 2 in use (one of the first four, and the goroutine's): full.
	if err := l.Acquire(cctx); err != context.DeadlineExceeded {
		t.Fatalf("Acquire with an ended context: %v", err)
	}
	l.Release()
	l.Release()
	if l.InUse() != 0 {
		t.Fatalf("%d in use", l.InUse())
	}
}

func TestRetryAfter(t *testing.T) {
	cases := []struct {
		h    http.Header
		want time.Duration
	}{
		{http.Header{"Retry-After": {"3"}}, 3 * time.Second},
		{http.Header{"X-Ms-Retry-After-Ms": {"250"}}, 250 * time.Millisecond},
		{http.Header{"Retry-After-Ms": {"5"}, "Retry-After": {"9"}}, 5 * time.Millisecond},
		{http.Header{}, 0},
	}
	for _, c := range cases {
		if got := retryAfter(c.h); got != c.want {
			t.Errorf("retryAfter(%v) = %v, want %v", c.h, got, c.want)
		}
	}
}
