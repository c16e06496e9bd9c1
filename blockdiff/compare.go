package blockdiff

import (
	"bytes"
	"context"
	"io"
	"time"
	"unsafe"

	"github.com/deltasync/deltasync/disk"
)

// Stats describe a finished (or stopped) comparison.
type Stats struct {
	// Compared is the number of bytes of the range examined (hinted
	// ranges only, when hints were given), including bytes known equal
	// from allocation maps without being read.
	Compared int64
	// SourceRead and TargetRead are the bytes actually read from each side.
	SourceRead, TargetRead int64
	// Differ is the total length of the Data, Zero and Excess extents.
	Differ int64
	// Extents is the number of extents reported (after merging).
	Extents int64
	// Elapsed is the wall time of the comparison.
	Elapsed time.Duration
}

// Compare reads src and dst at the same offsets, in parallel, and calls fn
// with every extent where they differ, in ascending offset order, adjacent
// extents of one kind merged. It is exact: bytes are compared, not hashes.
//
// fn is called from the calling goroutine while comparison goes on, so a
// consumer can start writing before it ends; an error from fn stops the
// comparison and is returned as is.
//
// Sizes need not be multiples of 512: the last block is then short and is
// compared over its real length; refusing odd sizes is a writer's business
// (page blobs, for example, need 512-byte multiples). When the sizes
// differ, the source's tail is reported as Data and Zero extents and the
// target's tail as one Excess extent.
//
// *os.File sides (files and block devices) are read through bounded
// memory-mapped windows unless Options.NoMmap is set; a fault under a
// mapping (a truncated file, a failing device) is returned as a
// *FaultError. Other io.ReaderAt sides are read into pooled buffers with
// up to Concurrency reads outstanding per side.
func Compare(ctx context.Context, src io.ReaderAt, srcSize int64, dst io.ReaderAt, dstSize int64, opts *Options, fn func(disk.Extent) error) (Stats, error) {
	start := time.Now()
	var st Stats
	c, err := opts.config()
	if err != nil {
		return st, err
	}
	s, err := newDisk(SourceSide, src, srcSize, &c)
	if err != nil {
		return st, err
	}
	defer s.close()
	d, err := newDisk(TargetSide, dst, dstSize, &c)
	if err != nil {
		return st, err
	}
	defer d.close()
	lo, hi := c.bounds(max(srcSize, dstSize))
	co := &coalescer{emit: fn, max: c.MaxExtent}
	var prefetch func(context.Context, *chunk)
	if s.mm != nil || d.mm != nil || s.direct != nil || d.direct != nil {
		// The ranges compareChunk reads: the target only where the
		// source also is (past it, the target's tail is not read).
		common := min(srcSize, dstSize)
		prefetch = func(ctx context.Context, ch *chunk) {
			ch.direct[0], ch.ahead[0] = s.plan(ctx, ch.off, min(ch.end, srcSize))
			ch.direct[1], ch.ahead[1] = d.plan(ctx, ch.off, min(ch.end, common))
		}
	}
	err = runOrdered(ctx, &c, newPlanner(&c, lo, hi), prefetch,
		func(ctx context.Context, ch chunk) ([]disk.Extent, error) {
			return compareChunk(ctx, &c, s, d, ch)
		},
		func(ch chunk, exts []disk.Extent) error {
			st.Compared += ch.end - ch.off
			if c.Progress != nil {
				c.Progress(ch.end - ch.off)
			}
			for _, e := range exts {
				st.Differ += e.Len
				if err := co.add(e); err != nil {
					return err
				}
			}
			if c.Reached != nil {
				c.Reached(co.reached(ch.end))
			}
			return nil
		})
	if err == nil {
		err = co.flush()
	}
	st.Extents = co.n
	st.SourceRead, st.TargetRead = s.read.Load(), d.read.Load()
	st.Elapsed = time.Since(start)
	return st, err
}

// bounds returns the range [lo, hi) to work on for a disk of size n.
func (c *config) bounds(n int64) (lo, hi int64) {
	lo, hi = c.Offset, n
	if c.Length > 0 {
		hi = min(hi, c.Offset+c.Length)
	}
	return lo, max(lo, hi)
}

// compareChunk compares one chunk and returns its extents, merged.
func compareChunk(ctx context.Context, c *config, s, d *sideReader, ch chunk) (exts []disk.Extent, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.DropBehind {
		// After the windows are released (deferred calls run last in,
		// first out, so this runs after them).
		defer func() {
			s.dropCache(ch.off, min(ch.end, s.size), ch.direct[0])
			d.dropCache(ch.off, min(ch.end, d.size), ch.direct[1])
		}()
	}
	common := min(s.size, d.size)
	add := func(e disk.Extent) {
		if n := len(exts); n > 0 && exts[n-1].Kind == e.Kind && exts[n-1].End() == e.Off {
			exts[n-1].Len += e.Len
			return
		}
		exts = append(exts, e)
	}
	// The target's tail past the source's end: nothing to read.
	if d.size > s.size && ch.end > s.size {
		defer func() {
			if err == nil {
				add(disk.Extent{Off: max(ch.off, s.size), Len: ch.end - max(ch.off, s.size), Kind: disk.Excess})
			}
		}()
	}
	sEnd := min(ch.end, s.size)
	if ch.off >= sEnd {
		return exts, nil
	}
	dEnd := min(ch.end, common)
	var sAlloc, dAlloc []disk.Range
	var sAll, dAll bool
	var sv, dv view
	err = both(ch.direct[0] || ch.direct[1],
		func() (err error) {
			sAlloc, sAll, sv, err = s.chunkView(ctx, ch.off, sEnd, ch.direct[0], ch.ahead[0])
			return err
		},
		func() (err error) {
			if ch.off < dEnd {
				dAlloc, dAll, dv, err = d.chunkView(ctx, ch.off, dEnd, ch.direct[1], ch.ahead[1])
			}
			return err
		})
	defer sv.release()
	defer dv.release()
	if err != nil {
		return nil, err
	}
	sc := allocCursor{rs: sAlloc, all: sAll}
	dc := allocCursor{rs: dAlloc, all: dAll}
	sw, dw := newFaultWindow(SourceSide, sv), newFaultWindow(TargetSide, dv)
	bs := int64(c.bs)
	withFaults(func() {
		defer catchFault(&err, &sw, &dw)
		for b := ch.off; b < sEnd; {
			e := min((b/bs+1)*bs, sEnd)
			var sb, db []byte
			sKnown := !sc.any(b, e) // source known zero
			if !sKnown {
				sb = sv.b[b-ch.off : e-ch.off]
			}
			if b >= dEnd {
				// Past the target's end: only the source's content matters.
				diffBlock(c, b, sb, nil, true, false, add)
				b = e
				continue
			}
			if e > dEnd {
				// A block straddling the target's end: compare the
				// part the target has, then the rest as source-only.
				e = dEnd
				if sb != nil {
					sb = sb[:e-b]
				}
			}
			dKnown := !dc.any(b, e)
			if !dKnown {
				db = dv.b[b-ch.off : e-ch.off]
			}
			diffBlock(c, b, sb, db, false, sKnown && dKnown, add)
			b = e
		}
	})
	return exts, err
}

// both runs the source's and the target's reads of a chunk, at once when
// either is direct (a direct read waits for the disk, so a worker then has
// a read in flight on each side), and returns the first error.
func both(parallel bool, src, dst func() error) error {
	if !parallel {
		if err := src(); err != nil {
			return err
		}
		return dst()
	}
	done := make(chan error, 1)
	go func() { done <- dst() }()
	err := src()
	if derr := <-done; err == nil {
		err = derr
	}
	return err
}

// diffBlock reports the differences of one block. sb or db nil means that
// side is known to be zeros; noTarget means the target does not extend
// here at all; bothZero short-cuts two unallocated blocks.
func diffBlock(c *config, off int64, sb, db []byte, noTarget, bothZero bool, add func(disk.Extent)) {
	if bothZero {
		return
	}
	n := int64(max(len(sb), len(db)))
	if sb != nil && db != nil && bytes.Equal(sb, db) {
		return
	}
	if sb == nil && !noTarget && isZero(db) {
		return // source known zero, target zero
	}
	if db == nil && !noTarget && isZero(sb) {
		return // target known zero, source zero
	}
	if c.refine == 0 {
		add(disk.Extent{Off: off, Len: n, Kind: classify(sb)})
		return
	}
	r := int64(c.refine)
	for o := int64(0); o < n; {
		// Sub-blocks sit on the absolute refine grid even when the block
		// starts off it (split where the target ends).
		e := min(((off+o)/r+1)*r-off, n)
		var ss, ds []byte
		if sb != nil {
			ss = sb[o:e]
		}
		if db != nil {
			ds = db[o:e]
		}
		switch {
		case ss != nil && ds != nil:
			if bytes.Equal(ss, ds) {
				o = e
				continue
			}
		case ss == nil && !noTarget:
			if isZero(ds) {
				o = e
				continue
			}
		case ds == nil && !noTarget:
			if isZero(ss) {
				o = e
				continue
			}
		}
		add(disk.Extent{Off: off + o, Len: e - o, Kind: classify(ss)})
		o = e
	}
}

func classify(src []byte) disk.Kind {
	if src == nil || isZero(src) {
		return disk.Zero
	}
	return disk.Data
}

var zeros [64 << 10]byte

// IsZero reports whether b is all zeros, at memory speed (a comparison
// with a static block of zeros).
func IsZero(b []byte) bool { return isZero(b) }

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// faultWindow records where a view lives in memory, to attribute a fault.
type faultWindow struct {
	side     Side
	lo, hi   uintptr
	off, len int64
}

func newFaultWindow(side Side, v view) faultWindow {
	if len(v.b) == 0 {
		return faultWindow{side: side}
	}
	p := uintptr(unsafe.Pointer(&v.b[0]))
	return faultWindow{side: side, lo: p, hi: p + uintptr(len(v.b)), off: v.off, len: int64(len(v.b))}
}

func (w *faultWindow) contains(a uintptr) bool {
	// Faults are reported at page granularity; widen by a page.
	return w.hi > w.lo && a+uintptr(pageSize) > w.lo && a < w.hi
}
