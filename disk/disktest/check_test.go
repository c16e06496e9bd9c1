package disktest

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/disk"
)

func openMem(ctx context.Context, size int64) (disk.Target, func(), error) {
	return NewMem(make([]byte, size)), func() {}, nil
}

func TestMemConforms(t *testing.T) {
	TestTarget(t, openMem)
	TestTarget(t, func(ctx context.Context, size int64) (disk.Target, func(), error) {
		m := NewMem(make([]byte, size))
		m.Align, m.MaxWrite = 512, 4096 // as a page blob's
		return m, func() {}, nil
	})
}

// Deliberately broken adapters, each breaking one rule.
type shortRead struct{ *Mem }

// ReadAt returns fewer bytes than asked, without an error.
func (s shortRead) ReadAt(p []byte, off int64) (int, error) {
	if len(p) > 512 {
		p = p[:len(p)-512]
	}
	n, err := s.Mem.ReadAt(p, off)
	if err == io.EOF {
		err = nil
	}
	return n, err
}

type growingWrite struct{ *Mem }

// WriteAt past the end grows the disk instead of failing.
func (g growingWrite) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > g.Size() {
		g.Resize(context.Background(), end)
	}
	return g.Mem.WriteAt(p, off)
}

type lazyZero struct{ *Mem }

// ZeroRange leaves the data where it was.
func (lazyZero) ZeroRange(ctx context.Context, off, n int64) error { return nil }

// plain hides Mem's context-aware methods, so that the broken methods
// above are the ones called.
type plain struct {
	disk.Target
}

func TestCheckCatchesBrokenAdapters(t *testing.T) {
	for _, c := range []struct {
		name string
		wrap func(*Mem) disk.Target
		want string
	}{
		{"short read", func(m *Mem) disk.Target { return plain{shortRead{m}} }, "read"},
		{"write past the end grows", func(m *Mem) disk.Target { return plain{growingWrite{m}} }, "writes past the end"},
		{"zeroing leaves data", func(m *Mem) disk.Target {
			return struct {
				plain
				disk.Zeroer
			}{plain{m}, lazyZero{m}}
		}, "zeroing clears"},
	} {
		t.Run(c.name, func(t *testing.T) {
			errs := Check(context.Background(), func(ctx context.Context, size int64) (disk.Target, func(), error) {
				return c.wrap(NewMem(make([]byte, size))), func() {}, nil
			})
			found := false
			for _, e := range errs {
				t.Logf("found: %v", e)
				found = found || strings.Contains(e.Error(), c.want)
			}
			if !found {
				t.Errorf("the checker did not find the broken rule (%q) in %d errors", c.want, len(errs))
			}
		})
	}
	if errs := Check(context.Background(), openMem); len(errs) != 0 {
		t.Errorf("a conforming Mem: %v", errs)
	}
}
