package transfer

import "github.com/deltasync/deltasync/disk"

// opKind is what an operation does to the target.
type opKind uint8

const (
	opWrite opKind = iota // copy source bytes
	opZero                // clear: ZeroRange, or write zeros
)

// op is one operation on the target: [off, end), at most one write or one
// ZeroRange. buf is its buffer from the pool (nil for a ZeroRange).
type op struct {
	off, end int64
	kind     opKind
	buf      []byte
	done     bool // set by the tracker
}

func (o *op) len() int64 { return o.end - o.off }

// planner turns the extents of a comparison, which arrive in ascending
// order, into operations the target accepts, in ascending order and not
// overlapping:
//
//   - A Data extent is rounded outward to the alignment (the extra bytes
//     are read from the source too; they equal the target's or belong to a
//     neighbouring extent), and clipped to the target's end.
//   - A Zero extent is cleared over its aligned interior; its unaligned
//     edges are rounded outward and written as data instead, since
//     clearing past the extent could erase source data.
//   - Pieces of one kind that touch or overlap (after rounding) are merged;
//     a piece overlapping what was already issued is clipped (the bytes
//     there were already written from the source).
//   - A run of one kind is issued in pieces of at most writeSize (data, or
//     zeros written as data) or zeroSize (ZeroRange) as soon as a full
//     piece is known, so a long extent starts flowing before it ends.
//
// Excess extents are not the planner's business.
type planner struct {
	align     int64
	writeSize int64
	zeroSize  int64 // 0: zeros are written, in pieces of writeSize
	limit     int64 // the target's size: nothing is issued past it
	cur       op    // held run, not yet issued; valid when have
	have      bool
	issued    int64 // end of the last issued operation
	emit      func(*op) error
}

// add plans one extent.
func (p *planner) add(e disk.Extent) error {
	a := p.align
	switch e.Kind {
	case disk.Data:
		return p.push(roundDown(e.Off, a), min(roundUp(e.End(), a), p.limit), opWrite)
	case disk.Zero:
		za, zb := roundUp(e.Off, a), roundDown(e.End(), a)
		if za >= zb {
			return p.push(roundDown(e.Off, a), min(roundUp(e.End(), a), p.limit), opWrite)
		}
		if e.Off < za {
			if err := p.push(roundDown(e.Off, a), za, opWrite); err != nil {
				return err
			}
		}
		if err := p.push(za, zb, opZero); err != nil {
			return err
		}
		if zb < e.End() {
			return p.push(zb, min(roundUp(e.End(), a), p.limit), opWrite)
		}
	}
	return nil
}

func (p *planner) push(off, end int64, k opKind) error {
	off = max(off, p.issued)
	if off >= end {
		return nil
	}
	if p.have && p.cur.kind == k && off <= p.cur.end {
		p.cur.end = max(p.cur.end, end)
	} else {
		if err := p.flush(); err != nil {
			return err
		}
		p.cur, p.have = op{off: off, end: end, kind: k}, true
	}
	// Issue whole pieces as soon as they are known.
	size := p.size(k)
	for p.have && p.cur.len() >= size {
		if err := p.issue(p.cur.off, p.cur.off+size, k); err != nil {
			return err
		}
	}
	return nil
}

func (p *planner) size(k opKind) int64 {
	if k == opZero && p.zeroSize > 0 {
		return p.zeroSize
	}
	return p.writeSize
}

// issue emits [off,end) from the front of the held run.
func (p *planner) issue(off, end int64, k opKind) error {
	p.cur.off = end
	if p.cur.off >= p.cur.end {
		p.have = false
	}
	p.issued = end
	return p.emit(&op{off: off, end: end, kind: k})
}

// flush issues the held run.
func (p *planner) flush() error {
	for p.have {
		if err := p.issue(p.cur.off, min(p.cur.end, p.cur.off+p.size(p.cur.kind)), p.cur.kind); err != nil {
			return err
		}
	}
	return nil
}

// held returns the offset of the first byte planned but not yet issued,
// or the given frontier when nothing is held.
func (p *planner) held(frontier int64) int64 {
	if p.have {
		return min(frontier, p.cur.off)
	}
	return frontier
}
