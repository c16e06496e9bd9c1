package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/deltasync/deltasync/disk"
)

// sideReader is one side of a comparison, with the way it is read.
type sideReader struct {
	side   Side
	r      io.ReaderAt
	size   int64
	mapper disk.AllocationMapper
	mm     *mmapFile   // not nil when read through mappings
	direct *directFile // not nil when cold chunks may be read with O_DIRECT
	file   *os.File    // the *os.File behind the disk, if any (DropBehind)
	// always: DirectAlways on a file. A chunk it cannot read directly
	// (the file system refuses O_DIRECT) has its clean cached pages
	// dropped first, so that it is read from the file system: after a
	// failed write-back the page cache may hold data the disk has not.
	always bool
	pool   chan []byte
	bufLen int
	read   atomic.Int64 // bytes actually read (or touched through a mapping)
	noMap  atomic.Bool  // the mapper said it has no allocation map

	aheadSlots chan struct{} // direct reads started ahead of the workers
	aheadWG    sync.WaitGroup
}

// readAhead is a direct read of a chunk started by the planner: it keeps
// reads in flight while the workers compare (page faults and direct reads
// are synchronous, so the workers alone keep only one read per side each).
type readAhead struct {
	done  chan struct{}
	alloc []disk.Range
	all   bool
	v     view
	err   error
}

func newDisk(side Side, r io.ReaderAt, size int64, c *config) (*sideReader, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: %s reader is nil", ErrBadOptions, side)
	}
	if size < 0 {
		return nil, fmt.Errorf("%w: %s size %d is negative", ErrBadOptions, side, size)
	}
	d := &sideReader{side: side, r: r, size: size, bufLen: c.chunk}
	if m, ok := r.(disk.AllocationMapper); ok {
		d.mapper = m
	}
	f, ok := r.(*os.File)
	if fb, isFB := r.(FileBacked); !ok && isFB {
		f, ok = fb.BackingFile(), fb.BackingFile() != nil
	}
	if ok {
		d.file = f
		if d.mapper == nil {
			d.mapper = newSeekMapper(f)
		}
		if !c.NoMmap {
			d.mm = newMmapFile(f, size)
		}
		d.direct = openDirect(f, c)
		d.always = c.Direct == DirectAlways
		if d.always && d.direct == nil && !canDropPages {
			// Neither a direct read nor a drop of the cached pages: the
			// bytes would come from the cache the caller asked to avoid.
			return nil, fmt.Errorf("%w: %s: DirectAlways asks to read around the page cache, which this system cannot do", ErrBadOptions, side)
		}
		if d.direct != nil {
			d.aheadSlots = make(chan struct{}, c.directAhead)
		}
	}
	if d.mm == nil {
		d.pool = make(chan []byte, c.workers+1)
	}
	return d, nil
}

// close releases what newDisk opened (not the caller's reader), once the
// reads started ahead have ended.
func (d *sideReader) close() {
	d.aheadWG.Wait()
	d.direct.close()
}

// plan decides, ahead of the workers, how [off,end) will be read. A chunk
// mostly absent from the page cache is read directly: the read starts now
// when a read-ahead slot is free (ReadAhead of them), else the worker
// does it. Other chunks are mapped, and the page cache's reads of them
// start now.
func (d *sideReader) plan(ctx context.Context, off, end int64) (direct bool, ra *readAhead) {
	if end <= off {
		return false, nil
	}
	if d.direct.cold(off, end) {
		select {
		case d.aheadSlots <- struct{}{}:
		default:
			return true, nil
		}
		ra = &readAhead{done: make(chan struct{})}
		d.aheadWG.Add(1)
		go func() {
			defer d.aheadWG.Done()
			defer close(ra.done)
			free := func() { <-d.aheadSlots }
			ra.alloc, ra.all, ra.err = d.allocated(ctx, off, end)
			if ra.err == nil && (ra.all || len(ra.alloc) > 0) {
				ra.v, ra.err = d.window(ctx, off, end, ra.alloc, ra.all, true)
			}
			if ra.err != nil || ra.v.free == nil {
				free()
				return
			}
			vfree := ra.v.free
			ra.v.free = func() { vfree(); free() }
		}()
		return true, ra
	}
	if d.always {
		dropPages(d.file, off, end-off)
	}
	// WILLNEED on pages already cached still looks each one up (a tenth
	// of a warm hashing pass's CPU time): ask first.
	if d.mm != nil && !cached(d.file, off, end) {
		d.mm.prefetch(off, end)
	}
	return false, nil
}

// chunkView returns the allocation of [off,end) and a view of it (the zero
// view when nothing is allocated), from the read started ahead if any.
func (d *sideReader) chunkView(ctx context.Context, off, end int64, direct bool, ra *readAhead) (alloc []disk.Range, all bool, v view, err error) {
	if ra != nil {
		select {
		case <-ra.done:
			return ra.alloc, ra.all, ra.v, ra.err
		case <-ctx.Done():
			// The read ends on its own; close waits for it.
			return nil, false, view{}, ctx.Err()
		}
	}
	if alloc, all, err = d.allocated(ctx, off, end); err != nil {
		return nil, false, view{}, err
	}
	if all || len(alloc) > 0 {
		v, err = d.window(ctx, off, end, alloc, all, direct)
	}
	return alloc, all, v, err
}

// allocated returns the allocated ranges of [off,end), or nil with all=true
// when the disk cannot tell (everything may hold data).
func (d *sideReader) allocated(ctx context.Context, off, end int64) (rs []disk.Range, all bool, err error) {
	if d.mapper == nil || d.noMap.Load() {
		return nil, true, nil
	}
	rs, err = d.mapper.AllocatedRanges(ctx, off, end-off)
	if errors.Is(err, errNoAllocationMap) {
		// Workers and reads ahead ask at once: a flag, not d.mapper = nil.
		d.noMap.Store(true)
		return nil, true, nil
	}
	if err != nil {
		return nil, false, &ReadError{Side: d.side, Off: off, Len: end - off, Err: fmt.Errorf("listing allocated ranges: %w", err)}
	}
	if len(rs) == 1 && rs[0].Off <= off && rs[0].End() >= end {
		return nil, true, nil
	}
	return rs, false, nil
}

// view is a readable window of one disk.
type view struct {
	b    []byte // bytes of [off, off+len(b))
	off  int64
	free func() // nil for the zero view
}

// release gives the view's memory back; the zero view has none.
func (v view) release() {
	if v.free != nil {
		v.free()
	}
}

// window returns [off,end) of the disk. alloc (when all is false) lists the
// allocated ranges; bytes outside them are not read (the buffered path
// fills zeros; the mapped path leaves them untouched, the caller must not
// look at them).
func (d *sideReader) window(ctx context.Context, off, end int64, alloc []disk.Range, all, direct bool) (view, error) {
	if direct {
		v, err := d.direct.read(ctx, d.side, off, end, alloc, all, &d.read)
		if !errors.Is(err, errDirectRefused) {
			return v, err
		}
		if d.always {
			dropPages(d.file, off, end-off)
		}
	}
	if d.mm != nil {
		b, rel, err := d.mm.mapRange(off, end)
		if err != nil {
			return view{}, &ReadError{Side: d.side, Off: off, Len: end - off, Err: err}
		}
		// Only allocated bytes are touched (and so read).
		n := end - off
		if !all {
			n = 0
			for _, r := range alloc {
				n += max(0, min(r.End(), end)-max(r.Off, off))
			}
		}
		d.read.Add(n)
		return view{b: b, off: off, free: rel}, nil
	}
	var buf []byte
	select {
	case buf = <-d.pool:
	default:
		buf = make([]byte, d.bufLen)
	}
	buf = buf[:end-off]
	rel := func() {
		select {
		case d.pool <- buf[:cap(buf)]:
		default:
		}
	}
	readAt := func(o, e int64) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := disk.ReadAt(ctx, d.r, buf[o-off:e-off], o)
		d.read.Add(int64(n))
		if n == int(e-o) {
			return nil
		}
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return &ReadError{Side: d.side, Off: o, Len: e - o, Err: err}
	}
	if all {
		if err := readAt(off, end); err != nil {
			rel()
			return view{}, err
		}
		return view{b: buf, off: off, free: rel}, nil
	}
	pos := off
	for _, r := range alloc {
		s, e := max(r.Off, off), min(r.End(), end)
		if s >= e {
			continue
		}
		clear(buf[pos-off : s-off])
		if err := readAt(s, e); err != nil {
			rel()
			return view{}, err
		}
		pos = e
	}
	clear(buf[pos-off:])
	return view{b: buf, off: off, free: rel}, nil
}

// dropCache drops [off,end) from the page cache, when the disk is a file
// and the range was read through it.
func (d *sideReader) dropCache(off, end int64, direct bool) {
	if d.file != nil && end > off && !direct {
		dropPages(d.file, off, end-off)
	}
}

// allocCursor answers "may [s,e) hold data?" for ascending queries.
type allocCursor struct {
	rs  []disk.Range
	all bool
	i   int
}

func (a *allocCursor) any(s, e int64) bool {
	if a.all {
		return true
	}
	for a.i < len(a.rs) && a.rs[a.i].End() <= s {
		a.i++
	}
	return a.i < len(a.rs) && a.rs[a.i].Off < e
}

// FileBacked is an optional capability of a disk whose bytes [0, size) are
// those of an *os.File (a regular file or a block device), for wrappers that
// are not themselves an *os.File: the file is then read through memory
// mappings like a bare *os.File.
type FileBacked interface {
	BackingFile() *os.File
}
