package pageblob

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/deltasync/deltasync/disk"
)

// AllocatedRanges returns the sorted, non-overlapping, merged ranges of
// [off, off+n) that hold pages (Get Page Ranges); everything else reads
// as zeros and need not be read. The blob is listed in segments of
// Options.ListSegment, following NextMarker paging inside each, and the
// last Options.RangeCacheSegments segments are cached, kept up to date
// with this Blob's own writes and clears. It may be called concurrently.
func (b *Blob) AllocatedRanges(ctx context.Context, off, n int64) ([]disk.Range, error) {
	end, err := b.span("ranges", off, n)
	if err != nil || off >= end {
		return nil, err
	}
	ctx, done := b.opCtx(ctx)
	defer done()
	seg, size := b.cl.opts.ListSegment, b.size.Load()
	var out []disk.Range
	for i := off / seg; i*seg < end; i++ {
		s, e := i*seg, min((i+1)*seg, size)
		rs, err := b.cache.get(ctx, i, func(ctx context.Context) ([]disk.Range, error) {
			return b.listSegment(ctx, s, e)
		})
		if err != nil {
			return nil, b.wrap("ranges", s, e-s, err)
		}
		for _, r := range rs {
			out = appendMerged(out, clip(r, off, end))
		}
	}
	return out, nil
}

// listSegment lists the page ranges of [s, e), following markers.
func (b *Blob) listSegment(ctx context.Context, s, e int64) ([]disk.Range, error) {
	if err := b.cl.limiter.Acquire(ctx); err != nil {
		return nil, err
	}
	defer b.cl.limiter.Release()
	o := &pageblob.GetPageRangesOptions{Range: blob.HTTPRange{Offset: s, Count: e - s}}
	if b.cl.opts.ListMaxResults > 0 {
		o.MaxResults = &b.cl.opts.ListMaxResults
	}
	pager := b.pb.NewGetPageRangesPager(o)
	var rs []disk.Range
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, pr := range page.PageRange {
			if rs, err = appendClipped(rs, pr.Start, pr.End, s, e); err != nil {
				return nil, err
			}
		}
	}
	b.cl.limiter.Success()
	return disk.Normalize(rs), nil
}

// Diff returns the ranges of [off, off+n) that changed since the snapshot
// prevSnapshot (a snapshot id of this blob, as Snapshot returns): Get Page
// Ranges Diff with prevsnapshot, listed in segments and following
// NextMarker. Azure answers PageRange entries (written since) and
// ClearRange entries (cleared since), interleaved; both mean changed and
// both are returned, merged and sorted. When b is itself a snapshot, the
// diff is between the two snapshots (prevSnapshot must be the older).
//
// Azurite answers a plain listing of b's current pages instead of a
// diff, without ClearRange entries: a range cleared since prevSnapshot is
// missing from that answer, which is then not even a superset of the
// changes. On Azurite (the development account on loopback) Diff adds the
// previous snapshot's own pages, which cover every cleared range: a
// superset again, correct but not minimal.
func (b *Blob) Diff(ctx context.Context, prevSnapshot string, off, n int64) ([]disk.Range, error) {
	if prevSnapshot == "" {
		return nil, b.refuse("diff", off, n, ErrNotFound, "no previous snapshot given")
	}
	rs, err := b.diff(ctx, &pageblob.GetPageRangesDiffOptions{PrevSnapshot: &prevSnapshot}, off, n)
	if err != nil || b.loc.Kind != Emulator || b.loc.Account != "devstoreaccount1" {
		return rs, err
	}
	prev, err := b.OpenSnapshot(ctx, prevSnapshot)
	if err != nil {
		return nil, err
	}
	defer prev.Close()
	old, err := prev.AllocatedRanges(ctx, off, min(n, prev.Size()-off))
	if err != nil {
		return nil, err
	}
	return disk.Normalize(append(rs, old...)), nil
}

// DiffFromURL is Diff against a previous snapshot given by URL
// (x-ms-previous-snapshot-url), the way managed disk incremental
// snapshots are compared: b is the newer snapshot (opened by its SAS
// URL) and prevSnapshotURL the older one's SAS URL. A previous snapshot
// that was deleted answers 409 PreviousSnapshotNotFound (ErrNotFound).
func (b *Blob) DiffFromURL(ctx context.Context, prevSnapshotURL string, off, n int64) ([]disk.Range, error) {
	if _, err := ParseURL(prevSnapshotURL); err != nil {
		return nil, b.wrap("diff", off, n, err)
	}
	return b.diff(ctx, &pageblob.GetPageRangesDiffOptions{PrevSnapshotURL: &prevSnapshotURL}, off, n)
}

// span checks the range of a listing and returns its end, clipped to the
// blob's size.
func (b *Blob) span(op string, off, n int64) (int64, error) {
	if off < 0 || n < 0 {
		return 0, b.refuse(op, off, n, ErrPastEnd, "negative offset or length")
	}
	if b.closed.Load() {
		return 0, b.wrap(op, off, n, ErrClosed)
	}
	return min(off+n, b.size.Load()), nil
}

func (b *Blob) diff(ctx context.Context, o *pageblob.GetPageRangesDiffOptions, off, n int64) ([]disk.Range, error) {
	end, err := b.span("diff", off, n)
	if err != nil || off >= end {
		return nil, err
	}
	ctx, done := b.opCtx(ctx)
	defer done()
	if b.cl.opts.ListMaxResults > 0 {
		o.MaxResults = &b.cl.opts.ListMaxResults
	}
	seg := b.cl.opts.ListSegment
	var all []disk.Range
	for s := off; s < end; s = min(s+seg, end) {
		e := min(s+seg, end)
		rs, err := b.diffSegment(ctx, *o, s, e)
		if err != nil {
			return nil, b.wrap("diff", s, e-s, err)
		}
		all = append(all, rs...)
	}
	return disk.Normalize(all), nil
}

func (b *Blob) diffSegment(ctx context.Context, o pageblob.GetPageRangesDiffOptions, s, e int64) ([]disk.Range, error) {
	if err := b.cl.limiter.Acquire(ctx); err != nil {
		return nil, err
	}
	defer b.cl.limiter.Release()
	o.Range = blob.HTTPRange{Offset: s, Count: e - s}
	pager := b.pb.NewGetPageRangesDiffPager(&o)
	var rs []disk.Range
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, pr := range page.PageRange {
			if rs, err = appendClipped(rs, pr.Start, pr.End, s, e); err != nil {
				return nil, err
			}
		}
		for _, cr := range page.ClearRange {
			if rs, err = appendClipped(rs, cr.Start, cr.End, s, e); err != nil {
				return nil, err
			}
		}
	}
	b.cl.limiter.Success()
	return rs, nil
}

// appendClipped appends Azure's inclusive [start, end], clipped to [s, e).
func appendClipped(rs []disk.Range, start, end *int64, s, e int64) ([]disk.Range, error) {
	r, err := pageRange(start, end)
	if err != nil {
		return rs, err
	}
	return append(rs, clip(r, s, e)), nil
}

// pageRange converts Azure's inclusive [Start, End] to a Range.
func pageRange(start, end *int64) (disk.Range, error) {
	if start == nil || end == nil || *end < *start {
		return disk.Range{}, errors.New("malformed page range in Azure's answer")
	}
	return disk.Range{Off: *start, Len: *end - *start + 1}, nil
}

// clip returns r cut to [s, e) (Len 0 if outside).
func clip(r disk.Range, s, e int64) disk.Range {
	lo, hi := max(r.Off, s), min(r.End(), e)
	if lo >= hi {
		return disk.Range{Off: lo}
	}
	return disk.Range{Off: lo, Len: hi - lo}
}

// appendMerged appends r to sorted rs, merging it with the last range if
// they touch. Empty ranges are dropped.
func appendMerged(rs []disk.Range, r disk.Range) []disk.Range {
	if r.Len <= 0 {
		return rs
	}
	if n := len(rs); n > 0 && rs[n-1].End() >= r.Off {
		rs[n-1].Len = max(rs[n-1].End(), r.End()) - rs[n-1].Off
		return rs
	}
	return append(rs, r)
}

// addRange returns sorted, merged rs with r added (a new slice).
func addRange(rs []disk.Range, r disk.Range) []disk.Range {
	out := make([]disk.Range, 0, len(rs)+1)
	out = append(out, rs...)
	return disk.Normalize(append(out, r))
}

// rangeCache keeps the page ranges of a few listed segments. Each
// segment's generation counts this Blob's writes and clears into it; a
// listing that raced with one is returned but not kept. Cached lists
// follow the Blob's own writes (added: a failed write may have written)
// and successful clears (removed). Lists are never modified in place.
type rangeCache struct {
	seg      int64
	max      int
	mu       sync.Mutex
	epoch    uint64
	gens     map[int64]uint64
	segs     map[int64][]disk.Range
	lru      []int64 // most recent last
	inflight map[int64]*segCall
}

type segCall struct {
	done chan struct{}
	rs   []disk.Range
	err  error
}

func newRangeCache(seg int64, max int) *rangeCache {
	return &rangeCache{seg: seg, max: max, gens: map[int64]uint64{}, segs: map[int64][]disk.Range{}, inflight: map[int64]*segCall{}}
}

func (c *rangeCache) get(ctx context.Context, i int64, fetch func(context.Context) ([]disk.Range, error)) ([]disk.Range, error) {
	if c.max <= 0 {
		return fetch(ctx)
	}
	for {
		c.mu.Lock()
		if rs, ok := c.segs[i]; ok {
			c.touchLocked(i)
			c.mu.Unlock()
			return rs, nil
		}
		if call, ok := c.inflight[i]; ok {
			c.mu.Unlock()
			select {
			case <-call.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if call.err != nil && (errors.Is(call.err, context.Canceled) || errors.Is(call.err, context.DeadlineExceeded)) {
				continue // the caller that listed gave up; list again
			}
			return call.rs, call.err
		}
		call := &segCall{done: make(chan struct{})}
		c.inflight[i] = call
		epoch, gen := c.epoch, c.gens[i]
		c.mu.Unlock()

		call.rs, call.err = fetch(ctx)

		c.mu.Lock()
		delete(c.inflight, i)
		if call.err == nil && epoch == c.epoch && gen == c.gens[i] {
			c.segs[i] = call.rs
			c.touchLocked(i)
			for len(c.lru) > c.max {
				delete(c.segs, c.lru[0])
				c.lru = c.lru[1:]
			}
		}
		close(call.done)
		c.mu.Unlock()
		return call.rs, call.err
	}
}

func (c *rangeCache) touchLocked(i int64) {
	if k := slices.Index(c.lru, i); k >= 0 {
		c.lru = append(c.lru[:k], c.lru[k+1:]...)
	}
	c.lru = append(c.lru, i)
}

// update applies f to every cached segment overlapping [off, off+n) and
// bumps their generations.
func (c *rangeCache) update(off, n int64, f func([]disk.Range, disk.Range) []disk.Range) {
	if n <= 0 || c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := off / c.seg; i*c.seg < off+n; i++ {
		c.gens[i]++
		if rs, ok := c.segs[i]; ok && f != nil {
			c.segs[i] = f(rs, clip(disk.Range{Off: off, Len: n}, i*c.seg, (i+1)*c.seg))
		}
	}
}

func (c *rangeCache) wrote(off, n int64)   { c.update(off, n, addRange) }
func (c *rangeCache) cleared(off, n int64) { c.update(off, n, disk.Subtract) }
func (c *rangeCache) touched(off, n int64) { c.update(off, n, nil) }

// reset drops everything (after a resize).
func (c *rangeCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	clear(c.segs)
	c.lru = nil
}
