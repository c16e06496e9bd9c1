package blockdiff

import "github.com/deltasync/deltasync/disk"

// coalescer merges adjacent extents of the same kind before handing them on.
type coalescer struct {
	cur  disk.Extent
	have bool
	emit func(disk.Extent) error
	n    int64 // extents emitted
	max  int64 // when > 0, emit a merged extent once it is this long
}

func (c *coalescer) add(e disk.Extent) error {
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
