package transfer

import "sync"

// tracker computes the watermark: the offset below which everything is
// compared and written. Comparison advances the frontier (everything below
// it compared and planned) in ascending order; operations are issued in
// ascending order too, but finish in any order, so the watermark is the
// frontier or the start of the oldest unfinished operation, whichever is
// lower. An operation that failed stays unfinished: the watermark never
// passes it.
type tracker struct {
	mu       sync.Mutex
	frontier int64
	ops      []*op // issued, in ascending order; ops[head:] may be unfinished
	head     int
}

func newTracker(start int64) *tracker { return &tracker{frontier: start} }

// add registers an issued operation, before it may finish.
func (t *tracker) add(o *op) {
	t.mu.Lock()
	t.ops = append(t.ops, o)
	t.mu.Unlock()
}

// finish marks an operation done.
func (t *tracker) finish(o *op) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o.done = true
	for t.head < len(t.ops) && t.ops[t.head].done {
		t.ops[t.head] = nil
		t.head++
	}
	if t.head > 64 && t.head > len(t.ops)/2 {
		n := copy(t.ops, t.ops[t.head:])
		clear(t.ops[n:])
		t.ops, t.head = t.ops[:n], 0
	}
}

// advance moves the frontier up to f (never down).
func (t *tracker) advance(f int64) {
	t.mu.Lock()
	t.frontier = max(t.frontier, f)
	t.mu.Unlock()
}

// watermark returns the offset below which all is compared and written.
func (t *tracker) watermark() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.frontier
	if t.head < len(t.ops) {
		w = min(w, t.ops[t.head].off)
	}
	return w
}
