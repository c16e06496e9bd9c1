package blockdiff

import (
	"context"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/deltasync/deltasync/disk"
)

// chunk is one unit of work: a block-aligned slice [off, end) of the range.
type chunk struct {
	seq      int64
	off, end int64
	// direct tells that the source's ([0]) or the target's ([1]) part of
	// the chunk is read with O_DIRECT, and ahead holds that read when the
	// planner's prefetch started it; both set by prefetch.
	direct [2]bool
	ahead  [2]*readAhead
}

// planner yields the chunks of [lo, hi), restricted to hints when given.
// Chunk boundaries sit on the absolute chunk grid so that every worker of a
// sliced run agrees on them.
type planner struct {
	spans []disk.Range // merged, sorted, block-aligned spans to cover
	i     int
	pos   int64
	chunk int64
	seq   int64
}

func newPlanner(c *config, lo, hi int64) *planner {
	p := &planner{chunk: int64(c.chunk)}
	if hi <= lo {
		return p
	}
	if c.Hints == nil {
		p.spans = []disk.Range{{Off: lo, Len: hi - lo}}
	} else {
		bs := int64(c.bs)
		spans := make([]disk.Range, 0, len(c.Hints))
		for _, h := range c.Hints {
			s := h.Off / bs * bs
			e := (h.End() + bs - 1) / bs * bs
			if h.Len == 0 {
				continue
			}
			s, e = max(s, lo), min(e, hi)
			if s < e {
				spans = append(spans, disk.Range{Off: s, Len: e - s})
			}
		}
		p.spans = disk.Normalize(spans)
	}
	if len(p.spans) > 0 {
		p.pos = p.spans[0].Off
	}
	return p
}

func (p *planner) next() (chunk, bool) {
	for p.i < len(p.spans) {
		sp := p.spans[p.i]
		if p.pos >= sp.End() {
			p.i++
			if p.i < len(p.spans) {
				p.pos = p.spans[p.i].Off
			}
			continue
		}
		end := min((p.pos/p.chunk+1)*p.chunk, sp.End())
		ch := chunk{seq: p.seq, off: p.pos, end: end}
		p.seq++
		p.pos = end
		return ch, true
	}
	return chunk{}, false
}

// runOrdered runs work on every chunk with c.workers goroutines and hands the
// results to done in chunk order, on the calling goroutine. At most
// c.inflight chunks are between the planner and done at any time, which
// bounds memory. prefetch, when not nil, is called by the planner goroutine
// (and may record in the chunk how it is to be read)
// for each chunk before it is queued, ahead of the workers.
func runOrdered[R any](ctx context.Context, c *config, p *planner,
	prefetch func(context.Context, *chunk),
	work func(ctx context.Context, ch chunk) (R, error),
	done func(ch chunk, r R) error) error {

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)

	type result struct {
		ch chunk
		r  R
	}
	tokens := make(chan struct{}, c.inflight)
	// Buffered so that the planner (and its prefetch) runs up to
	// c.inflight chunks ahead, not one chunk ahead of the workers.
	jobs := make(chan chunk, c.inflight)
	results := make(chan result, c.inflight)

	g.Go(func() error {
		defer close(jobs)
		for {
			ch, ok := p.next()
			if !ok {
				return nil
			}
			select {
			case tokens <- struct{}{}:
			case <-gctx.Done():
				return gctx.Err()
			}
			if prefetch != nil {
				prefetch(gctx, &ch)
			}
			select {
			case jobs <- ch:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
	})
	var wg sync.WaitGroup
	for i := 0; i < c.workers; i++ {
		wg.Add(1)
		g.Go(func() error {
			defer wg.Done()
			for ch := range jobs {
				r, err := work(gctx, ch)
				if err != nil {
					return err
				}
				select {
				case results <- result{ch, r}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	go func() { wg.Wait(); close(results) }()

	var doneErr error
	pending := make(map[int64]result, c.inflight)
	var nextSeq int64
	for res := range results {
		if doneErr != nil {
			continue // drain until the workers have stopped
		}
		pending[res.ch.seq] = res
		for {
			r, ok := pending[nextSeq]
			if !ok {
				break
			}
			delete(pending, nextSeq)
			nextSeq++
			<-tokens
			if err := done(r.ch, r.r); err != nil {
				doneErr = err
				cancel()
				break
			}
		}
	}
	gerr := g.Wait()
	if doneErr != nil {
		return doneErr
	}
	if err := ctx.Err(); err != nil && gerr == nil {
		gerr = err
	}
	if gerr != nil {
		// Report the caller's cancellation as such, not our derived one.
		if perr := context.Cause(ctx); perr != nil && gerr == context.Canceled {
			return perr
		}
		return gerr
	}
	return nil
}
