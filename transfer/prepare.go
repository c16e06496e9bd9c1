package transfer

import (
	"context"
	"errors"
	"fmt"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// limits reads the target's capabilities and sizes the writes.
func (r *run) limits() error {
	w, err := NewWriter(r.dst, &WriterOptions{WriteSize: min(r.c.writeSize, r.c.budget), ZeroSize: r.c.zeroSize})
	if err != nil {
		if errors.Is(err, ErrBadOptions) && r.c.budget < r.c.writeSize {
			return fmt.Errorf("%w (memory budget %d)", err, r.c.budget)
		}
		return err
	}
	r.w, r.align = w, w.Alignment()
	r.unit = max(r.align, blockdiff.SectorSize)
	if r.c.Offset%r.unit != 0 {
		return badOptions("offset %d is not a multiple of %d (the target's alignment)", r.c.Offset, r.unit)
	}
	// Segment boundaries on the alignment keep rounded writes inside.
	r.c.journalBytes = roundUp(r.c.journalBytes, lcm(int64(r.c.bs), r.unit))
	r.c.writeSize, r.c.zeroSize = w.WriteSize(), w.ZeroSize()
	if c, ok := r.dst.(disk.RangeCopier); ok {
		r.copier = c
	}
	r.pool = newBufPool(r.c.writeSize, r.c.budget)
	r.lim = newLimiter(r.c.BandwidthLimit, r.c.writeSize, r.c.clock)
	return nil
}

// identify takes the disks' identities, and the source's size and version.
func (r *run) identify(ctx context.Context) error {
	if id, ok := r.src.(disk.Identifier); ok {
		r.srcID = id.Identity()
	}
	if id, ok := r.dst.(disk.Identifier); ok {
		r.dstID = id.Identity()
	}
	if r.srcID != "" && r.srcID == r.dstID {
		return fmt.Errorf("%w: %q", ErrSameDisk, r.srcID)
	}
	r.srcSize = r.src.Size()
	if r.srcSize < 0 {
		return fmt.Errorf("transfer: source size %d is negative", r.srcSize)
	}
	if v, ok := r.src.(disk.Versioner); ok {
		ver, err := v.Version(ctx)
		if err != nil {
			return fmt.Errorf("transfer: reading the source's version: %w", err)
		}
		r.srcVersion = ver
	}
	return nil
}

// size decides the target's size (grown to the source's, its excess
// truncated when asked and the range reaches the end) and fixes the range.
// It does not change the target: resize does, once the journal has been
// accepted, so that a refused run leaves the target as it found it.
func (r *run) size(ctx context.Context) error {
	r.dstSize = r.dst.Size()
	if r.dstSize < 0 {
		return fmt.Errorf("transfer: target size %d is negative", r.dstSize)
	}
	off, length := r.c.Offset, r.c.Length
	toEnd := length == 0 || off+length >= max(r.srcSize, r.dstSize)
	if !toEnd && length%r.unit != 0 {
		return badOptions("length %d is not a multiple of %d (the target's alignment) and the range does not reach the end", length, r.unit)
	}
	// A target smaller than the source is grown whatever the range, so
	// that the slices of one disk see one target size.
	want := r.dstSize
	switch {
	case r.dstSize < r.srcSize:
		want = r.srcSize
	case r.dstSize > r.srcSize && r.c.TruncateExcess && toEnd:
		want = r.srcSize
	}
	if want != r.dstSize {
		if _, ok := r.dst.(disk.Resizer); !ok {
			if want > r.dstSize {
				return fmt.Errorf("%w: target is %d bytes, source %d, and the target cannot be grown", ErrTargetTooSmall, r.dstSize, r.srcSize)
			}
			want = r.dstSize
		}
	}
	// From here on dstSize is the size the target will have.
	r.sizeBefore, r.dstSize = r.dstSize, want
	r.excessKept = r.dstSize > r.srcSize
	r.lo = off
	r.hi = max(r.srcSize, r.dstSize)
	if length > 0 {
		r.hi = min(r.hi, off+length)
	}
	r.hi = max(r.lo, r.hi)
	r.start = r.lo
	r.track = newTracker(r.lo)
	return nil
}

// resize gives the target the size that size decided.
func (r *run) resize(ctx context.Context) error {
	if r.dstSize == r.sizeBefore {
		return nil
	}
	if err := r.w.Resize(ctx, r.dstSize); err != nil {
		return err
	}
	r.st.ResizedFrom = r.sizeBefore
	return nil
}

// chooseComparand decides what the target is compared as. Sync compares
// the target itself. Seed first tries to prove the rest of the target
// empty from its allocation map; then it is compared as zeros and never
// read. A target that cannot be proven empty is compared as it is, so
// its data is read only where it has some (blockdiff asks its allocation
// map) and every differing range, zeros included, is written or cleared.
func (r *run) chooseComparand(ctx context.Context) error {
	r.cmpDst = r.dst
	if r.mode != modeSeed {
		return nil
	}
	end := min(r.hi, r.dstSize)
	if r.start >= end {
		r.st.ProvenEmpty = true
		r.cmpDst = emptyDisk{}
		return nil
	}
	m, ok := r.dst.(disk.AllocationMapper)
	if !ok {
		return nil
	}
	rs, err := m.AllocatedRanges(ctx, r.start, end-r.start)
	if err != nil {
		return &ReadError{Side: blockdiff.TargetSide, Off: r.start, Len: end - r.start, Err: fmt.Errorf("listing allocated ranges: %w", err)}
	}
	for _, x := range rs {
		if x.Len > 0 {
			return nil
		}
	}
	r.st.ProvenEmpty = true
	r.cmpDst = emptyDisk{}
	return nil
}

// emptyDisk is a target proven empty: its allocation map is empty, so
// blockdiff never reads it; ReadAt reads zeros all the same.
type emptyDisk struct{}

func (emptyDisk) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

func (emptyDisk) AllocatedRanges(context.Context, int64, int64) ([]disk.Range, error) {
	return nil, nil
}
