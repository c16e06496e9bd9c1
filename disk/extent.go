package disk

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

// Subtract returns the ranges of rs without the bytes of r, in a new
// slice: sorted and merged when rs is.
func Subtract(rs []Range, r Range) []Range {
	out := make([]Range, 0, len(rs)+1)
	for _, x := range rs {
		if x.End() <= r.Off || x.Off >= r.End() {
			out = append(out, x)
			continue
		}
		if x.Off < r.Off {
			out = append(out, Range{Off: x.Off, Len: r.Off - x.Off})
		}
		if x.End() > r.End() {
			out = append(out, Range{Off: r.End(), Len: x.End() - r.End()})
		}
	}
	return out
}
