package blockdiff

import (
	"cmp"
	"fmt"
	"slices"
)

// Kind says what a writer must do with an Extent.
type Kind uint8

const (
	// Data: the source holds bytes the target lacks; copy them.
	Data Kind = iota
	// Zero: the source reads as zeros and the target does not; clear the
	// range on the target (punch, zero-range, Clear Pages) instead of
	// writing zeros.
	Zero
	// Excess: the range exists only on the target, past the end of the
	// source. A writer truncates it, or keeps it, as its policy says.
	Excess
)

func (k Kind) String() string {
	switch k {
	case Data:
		return "data"
	case Zero:
		return "zero"
	case Excess:
		return "excess"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Extent is a byte range of the disks, [Off, Off+Len), and what differs there.
type Extent struct {
	Off  int64
	Len  int64
	Kind Kind
}

// End returns Off+Len.
func (e Extent) End() int64 { return e.Off + e.Len }

// IsZero reports whether the source reads as zeros over the extent.
func (e Extent) IsZero() bool { return e.Kind == Zero }

func (e Extent) String() string {
	return fmt.Sprintf("%s[%d,+%d)", e.Kind, e.Off, e.Len)
}

// Range is a plain byte range [Off, Off+Len).
type Range struct {
	Off int64
	Len int64
}

// End returns Off+Len.
func (r Range) End() int64 { return r.Off + r.Len }

// Normalize returns the ranges of rs sorted by offset, empty ones dropped
// and those that overlap or touch merged. rs is not modified.
func Normalize(rs []Range) []Range {
	out := make([]Range, 0, len(rs))
	for _, r := range rs {
		if r.Len > 0 {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Range) int { return cmp.Compare(a.Off, b.Off) })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && r.Off <= merged[n-1].End() {
			merged[n-1].Len = max(merged[n-1].End(), r.End()) - merged[n-1].Off
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

// coalescer merges adjacent extents of the same kind before handing them on.
type coalescer struct {
	cur  Extent
	have bool
	emit func(Extent) error
	n    int64 // extents emitted
	max  int64 // when > 0, emit a merged extent once it is this long
}

func (c *coalescer) add(e Extent) error {
	if e.Len == 0 {
		return nil
	}
	if c.have && c.cur.Kind == e.Kind && c.cur.End() == e.Off {
		c.cur.Len += e.Len
		if c.max > 0 && c.cur.Len >= c.max {
			return c.flush()
		}
		return nil
	}
	if err := c.flush(); err != nil {
		return err
	}
	c.cur, c.have = e, true
	return nil
}

// reached returns the offset below which every extent has been emitted,
// given that everything before end has been added.
func (c *coalescer) reached(end int64) int64 {
	if c.have {
		return c.cur.Off
	}
	return end
}

func (c *coalescer) flush() error {
	if !c.have {
		return nil
	}
	c.have = false
	c.n++
	return c.emit(c.cur)
}
