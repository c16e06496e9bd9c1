package patch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/transfer"
)

// DefaultWriteSize is the largest single write of Apply when
// ApplyOptions.WriteSize is 0 and the target allows it: transfer's.
const DefaultWriteSize = transfer.DefaultWriteSize

// ApplyOptions tune Apply. The zero value means the documented defaults;
// a nil *ApplyOptions is the zero value.
type ApplyOptions struct {
	// NoBaseCheck skips hashing the target before writing: the patch is
	// still read whole and every checksum checked before anything is
	// written, but the target is not proven to be the patch's base, nor
	// the result to be the patch's. A target of another size is grown or
	// cut to the result's size. Default false: the target is read once
	// and hashed first (see the package documentation).
	NoBaseCheck bool
	// KeepExcess keeps the tail of a target longer than the result
	// instead of cutting it (for a target that cannot shrink, such as a
	// block device): the target then reads as the result followed by its
	// old tail. Default false: the target is cut to the result's size,
	// and a target that cannot be (not a disk.Resizer) is refused.
	KeepExcess bool
	// Verify hashes the target again after the patch is applied and
	// flushed (its cache dropped first when it is a
	// disk.CacheDropper), and fails with ErrResultMismatch unless it
	// is the patch's result. Default false: it costs a second read of
	// the target.
	Verify bool
	// Concurrency is the number of workers hashing the target
	// (blockdiff.Options.Concurrency). Default max(4, GOMAXPROCS).
	Concurrency int
	// NoMmap makes blockdiff read a file target with pread instead of
	// memory mappings.
	NoMmap bool
	// WriteSize is the largest single write: lowered to the target's
	// WriteLimits maximum, rounded down to its alignment. Default
	// DefaultWriteSize (4 MiB).
	WriteSize int64
}

// ApplyStats is what Apply did.
type ApplyStats struct {
	// Header and Trailer are the patch's.
	Header  Header
	Trailer Trailer
	// BaseChecked: the target was hashed and proven to be the patch's
	// base (or already its result) before anything was written.
	BaseChecked bool
	// AlreadyApplied: the target was already the patch's result, and
	// nothing was written.
	AlreadyApplied bool
	// Records is the number of records applied.
	Records int64
	// Written and Zeroed are the bytes written and cleared.
	Written, Zeroed int64
	// Resized: the target was grown or cut to the result's size.
	Resized bool
	// Verified: the target was read back after the apply and found to be
	// the patch's result (ApplyOptions.Verify).
	Verified bool
	// Check, Write and Verify are the time spent checking the patch and
	// the target, applying, and verifying; Elapsed is the whole call.
	Check, Write, Verify, Elapsed time.Duration
}

// plan is what the first pass learnt.
type plan struct {
	hdr     Header
	g       grid
	tr      Trailer
	hsum    uint64
	hasher  blockdiff.Hasher
	size    int64 // the target's size before anything is written
	grow    bool  // resize the target to the result's size first
	cut     bool  // cut the target to the result's size last
	w       *transfer.Writer
	checked bool // the base was checked
	applied bool // the target is already the result
}

// Apply applies a patch to dst, the base it was made for, making dst the
// source the patch was made from.
//
// It reads patch twice from its current position, which it must be able
// to seek back to. The first pass reads the whole patch and checks every
// record and the trailer; unless opts.NoBaseCheck, it also reads and hashes
// dst with the patch's key and proves that it is the patch's base, or
// already its result (see the package documentation). A damaged patch is
// refused (ErrCorrupt), and a target that is not its base (ErrBaseMismatch),
// before anything is written. A target already the result is left alone
// (ApplyStats.AlreadyApplied).
//
// The second pass applies the records in order, through the write path
// Seed and Sync use (transfer.Writer): the target is grown first
// when the result is longer (disk.Resizer), each data record written
// (in writes of at most WriteSize, aligned to the target's WriteLimits),
// each zero record cleared (disk.Zeroer, or zeros written), and a
// target longer than the result flushed and cut last (unless
// opts.KeepExcess). The target is flushed at the end (disk.Flusher).
// Every write is addressed by offset, so an interrupted Apply can be run
// again on the partly written target, and ends as if it had not been
// interrupted. Errors of the target are *transfer.WriteError.
//
// Memory is bounded: two records, blockdiff's hashing workers, and, for a
// target that cannot clear ranges itself, one zero buffer of WriteSize.
func Apply(ctx context.Context, patch io.ReadSeeker, dst disk.Target, opts *ApplyOptions) (st ApplyStats, err error) {
	t0 := time.Now()
	defer func() { st.Elapsed = time.Since(t0) }()
	var o ApplyOptions
	if opts != nil {
		o = *opts
	}
	if patch == nil || dst == nil {
		return st, badOptions("nil patch or target")
	}
	if o.WriteSize < 0 || o.Concurrency < 0 {
		return st, badOptions("write size %d, concurrency %d", o.WriteSize, o.Concurrency)
	}
	start, err := patch.Seek(0, io.SeekCurrent)
	if err != nil {
		return st, fmt.Errorf("patch: finding the patch's position: %w", err)
	}
	p, err := check(ctx, patch, dst, &o)
	st.Header, st.Trailer, st.BaseChecked = p.hdr, p.tr, p.checked
	st.Check = time.Since(t0)
	if err != nil {
		return st, err
	}
	if p.applied {
		st.AlreadyApplied = true
	} else {
		t1 := time.Now()
		err = p.apply(ctx, patch, start, dst, &st)
		st.Write = time.Since(t1)
		if err != nil {
			return st, err
		}
	}
	if o.Verify {
		t2 := time.Now()
		err = p.verify(ctx, dst, &o)
		st.Verify = time.Since(t2)
		st.Verified = err == nil
	}
	return st, err
}

// check is the first pass: it reads the whole patch and, unless
// NoBaseCheck, hashes the target, and says whether the patch may be
// applied.
func check(ctx context.Context, patch io.Reader, dst disk.Target, o *ApplyOptions) (p plan, err error) {
	rd, err := NewReader(bufio.NewReaderSize(patch, 256<<10))
	if err != nil {
		return p, err
	}
	defer rd.Close()
	p.hdr, p.g, p.hsum = rd.hdr, rd.g, rd.hsum
	p.hasher = blockdiff.Hasher{Alg: p.hdr.Alg, Key: p.hdr.Key}
	g := &p.g
	D, B, S := dst.Size(), g.base, g.result
	p.size = D
	if !o.NoBaseCheck && D != B && D != S {
		return p, fmt.Errorf("%w: the target has %d bytes; the patch's base has %d, its result %d", ErrBaseMismatch, D, B, S)
	}
	if err := p.limits(dst, o); err != nil {
		return p, err
	}
	if o.NoBaseCheck {
		for {
			if _, err := rd.Next(); err == io.EOF {
				break
			} else if err != nil {
				return p, err
			}
		}
		p.tr, _ = rd.Trailer()
		return p, nil
	}

	// Hash the target and walk the patch's blocks along: a block the
	// patch covers takes its base hash from the patch and its result
	// hash from the record; any other block takes both from the target.
	baseMode := D == B || (D == S && S > B)
	ok := baseMode
	baseD := newDigester(p.hdr.Alg, p.hdr.BlockSize, B)
	resD := newDigester(p.hdr.Alg, p.hdr.BlockSize, S)
	var dstD *digester
	if D == S {
		dstD = newDigester(p.hdr.Alg, p.hdr.BlockSize, S)
	}
	cur := &cursor{rd: rd, g: g, h: p.hasher}
	hopts := &blockdiff.Options{BlockSize: p.hdr.BlockSize, Concurrency: o.Concurrency, NoMmap: o.NoMmap}
	err = blockdiff.HashBlocks(ctx, dst, D, p.hasher, hopts, func(h blockdiff.BlockHash) error {
		i := h.Off / g.bs
		if dstD != nil {
			dstD.add(h)
		}
		t, err := cur.peek()
		if err != nil {
			return err
		}
		if t >= 0 && t < i {
			return fmt.Errorf("patch: internal error: block %d of the patch was passed by the target's block %d", t, i)
		}
		if t == i {
			e, r := cur.take()
			if i < g.nBase {
				baseD.addEntry(e)
			}
			if i < g.nResult {
				resD.add(r)
			}
			return nil
		}
		if i < g.nBase {
			ok = ok && int64(h.Len) == g.baseLen(i)
			baseD.add(h)
		}
		if i < g.nResult {
			ok = ok && int64(h.Len) == g.resultLen(i)
			resD.add(h)
		}
		return nil
	})
	if err != nil {
		return p, err
	}
	for {
		t, err := cur.peek()
		if err != nil {
			return p, err
		}
		if t < 0 {
			break
		}
		e, r := cur.take()
		if t < g.nBase {
			ok = false // a base block past the target's end
			baseD.addEntry(e)
		}
		if t < g.nResult {
			resD.add(r)
		}
	}
	p.tr, _ = rd.Trailer()
	p.checked = true
	if dstD != nil && dstD.sum() == p.tr.ResultDigest {
		p.applied = true
		return p, nil
	}
	ok = ok && baseD.n == g.nBase && resD.n == g.nResult
	if !ok || baseD.sum() != p.tr.BaseDigest {
		return p, fmt.Errorf("%w: the target (%d bytes) is neither the base the patch was made for (%d bytes, digest %s) nor its result (%d bytes): blocks that the patch does not rewrite differ",
			ErrBaseMismatch, D, B, p.tr.BaseDigest, S)
	}
	if resD.sum() != p.tr.ResultDigest {
		return p, fmt.Errorf("%w: the patch is inconsistent: applied to its base, proven by its digest, it would not give its result (digest %s)", ErrResultMismatch, p.tr.ResultDigest)
	}
	return p, nil
}

// limits finds what the target can do, through the write path Seed and
// Sync use (transfer.Writer), and refuses a target that cannot take the
// patch.
func (p *plan) limits(dst disk.Target, o *ApplyOptions) error {
	D, S := p.size, p.g.result
	w, err := transfer.NewWriter(dst, &transfer.WriterOptions{WriteSize: o.WriteSize})
	if err != nil {
		return err
	}
	p.w = w
	p.grow = D < S
	p.cut = D > S && !o.KeepExcess
	if p.grow && !w.CanResize() {
		return fmt.Errorf("%w: the target has %d bytes, the result %d, and the target cannot grow", transfer.ErrTargetTooSmall, D, S)
	}
	if p.cut && !w.CanResize() {
		return badOptions("the target has %d bytes, the result %d, and the target cannot be cut (keep its tail with KeepExcess)", D, S)
	}
	if p.g.bs%w.Alignment() != 0 {
		return badOptions("the patch's block size %d is not a multiple of the target's alignment %d", p.g.bs, w.Alignment())
	}
	return nil
}

// apply is the second pass: it reads the patch again and writes it.
func (p *plan) apply(ctx context.Context, patch io.ReadSeeker, start int64, dst disk.Target, st *ApplyStats) error {
	if _, err := patch.Seek(start, io.SeekStart); err != nil {
		return fmt.Errorf("patch: seeking back to the patch's start: %w", err)
	}
	changed := func(err error) error {
		return fmt.Errorf("patch: reading the patch again: %w", err)
	}
	rd, err := NewReader(bufio.NewReaderSize(patch, 256<<10))
	if err != nil {
		return changed(err)
	}
	defer rd.Close()
	if rd.hsum != p.hsum {
		return changed(fmt.Errorf("%w: its header changed since it was checked", ErrCorrupt))
	}
	S := p.g.result
	if p.grow {
		if err := p.w.Resize(ctx, S); err != nil {
			return err
		}
		st.Resized = true
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return changed(err)
		}
		st.Records++
		switch rec.Kind {
		case Data:
			if err := p.w.WriteAt(ctx, rec.Data[:rec.Len], rec.Off); err != nil {
				return err
			}
			st.Written += rec.Len
		case Zero:
			if err := p.w.Zero(ctx, rec.Off, rec.Len, nil); err != nil {
				return err
			}
			st.Zeroed += rec.Len
		}
	}
	if tr, _ := rd.Trailer(); tr != p.tr {
		return changed(fmt.Errorf("%w: its trailer changed since it was checked", ErrCorrupt))
	}
	if p.cut {
		// Data first, then the cut: a crash cannot leave a target of the
		// result's size whose writes were lost.
		if err := p.w.Flush(ctx); err != nil {
			return err
		}
		if err := p.w.Resize(ctx, S); err != nil {
			return err
		}
		st.Resized = true
	}
	return p.w.Flush(ctx)
}

// verify hashes the target's first ResultSize bytes and compares them
// with the patch's result.
func (p *plan) verify(ctx context.Context, dst disk.Target, o *ApplyOptions) error {
	S := p.g.result
	if n := dst.Size(); n < S {
		return fmt.Errorf("%w: the target has %d bytes after the apply, the result %d", ErrResultMismatch, n, S)
	}
	if cd, ok := dst.(disk.CacheDropper); ok {
		_ = cd.DropCache(0, S) // best effort: verify still reads
	}
	d := newDigester(p.hdr.Alg, p.hdr.BlockSize, S)
	hopts := &blockdiff.Options{BlockSize: p.hdr.BlockSize, Concurrency: o.Concurrency, NoMmap: o.NoMmap}
	if err := blockdiff.HashBlocks(ctx, dst, S, p.hasher, hopts, func(h blockdiff.BlockHash) error {
		d.add(h)
		return nil
	}); err != nil {
		return err
	}
	if got := d.sum(); got != p.tr.ResultDigest {
		return fmt.Errorf("%w: after the apply the target's digest is %s, the result's %s", ErrResultMismatch, got, p.tr.ResultDigest)
	}
	return nil
}

// cursor walks the blocks that a patch's data and zero records cover, in
// order, with their base hash entries and their result hashes.
type cursor struct {
	rd        *Reader
	g         *grid
	h         blockdiff.Hasher
	rec       Record
	next, end int64 // block indexes left in rec
	ent       []byte
	done      bool
}

// peek returns the index of the next covered block, or -1 after the last
// (the patch's trailer then checked).
func (c *cursor) peek() (int64, error) {
	for !c.done && c.next == c.end {
		rec, err := c.rd.Next()
		if errors.Is(err, io.EOF) {
			c.done = true
			break
		}
		if err != nil {
			return -1, err
		}
		if rec.Kind != Data && rec.Kind != Zero {
			continue
		}
		c.rec, c.ent = rec, rec.base
		c.next, c.end = rec.Off/c.g.bs, blocksOf(rec.End(), c.g.bs)
	}
	if c.done {
		return -1, nil
	}
	return c.next, nil
}

// take returns the base hash entry (nil past the base's end) and the
// result hash of the block peek returned.
func (c *cursor) take() (entry []byte, rh blockdiff.BlockHash) {
	i := c.next
	c.next++
	off := i * c.g.bs
	end := min(off+c.g.bs, c.rec.End())
	rh = blockdiff.BlockHash{Off: off, Len: int32(end - off)}
	if c.rec.Kind == Zero {
		rh.Zero = true
	} else if b := c.rec.Data[off-c.rec.Off : end-c.rec.Off]; blockdiff.IsZero(b) {
		rh.Zero = true
	} else {
		rh.Sum = c.h.Sum(b)
	}
	if i < c.g.nBase {
		n := 1
		if c.ent[0] == flagHashed {
			n += c.g.hashSize
		}
		entry, c.ent = c.ent[:n], c.ent[n:]
	}
	return entry, rh
}
