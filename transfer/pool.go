package transfer

import (
	"context"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
)

// bufPool hands out write buffers of one size within a byte budget: a
// buffer is taken only after its bytes are acquired from a weighted
// semaphore, so the bytes held never exceed the budget, and buffers are
// reused through a channel rather than reallocated.
type bufPool struct {
	size int64
	sem  *semaphore.Weighted
	free chan []byte
	held atomic.Int64 // bytes handed out and not yet returned
	peak atomic.Int64 // largest held seen (for tests)
}

func newBufPool(size, budget int64) *bufPool {
	n := max(budget/size, 1)
	return &bufPool{size: size, sem: semaphore.NewWeighted(n * size), free: make(chan []byte, n)}
}

// get waits with ctx for a buffer's bytes within the budget.
func (p *bufPool) get(ctx context.Context) ([]byte, error) {
	if err := p.sem.Acquire(ctx, p.size); err != nil {
		return nil, err
	}
	h := p.held.Add(p.size)
	for {
		pk := p.peak.Load()
		if h <= pk || p.peak.CompareAndSwap(pk, h) {
			break
		}
	}
	select {
	case b := <-p.free:
		return b, nil
	default:
		return make([]byte, p.size), nil
	}
}

// put returns a buffer from get.
func (p *bufPool) put(b []byte) {
	if b == nil {
		return
	}
	select {
	case p.free <- b[:cap(b)]:
	default:
	}
	p.held.Add(-p.size)
	p.sem.Release(p.size)
}
