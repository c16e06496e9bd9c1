package patch

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/deltasync/deltasync/disk/disktest"
)

// The in-memory target is disktest.Mem (every capability Apply uses).

// plainDisk is a target with no optional capability: zeros are written.
type plainDisk struct{ d *disktest.Mem }

func (p plainDisk) ReadAt(b []byte, off int64) (int, error)  { return p.d.ReadAt(b, off) }
func (p plainDisk) WriteAt(b []byte, off int64) (int, error) { return p.d.WriteAt(b, off) }
func (p plainDisk) Size() int64                              { return p.d.Size() }

// spyDisk wraps a disktest.Mem, counts what is done to it, and fails once
// budget bytes have been written or cleared (budget < 0: never); the write
// that crosses the budget writes its part below the budget first, as a
// torn write would. failResize fails every Resize.
type spyDisk struct {
	d          *disktest.Mem
	budget     int64
	failResize bool
	align      int64
	maxWrite   int64

	read, written, zeroed, resizes, writes atomic.Int64
}

var errInjected = errors.New("injected failure")

func (s *spyDisk) Size() int64 { return s.d.Size() }

func (s *spyDisk) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.d.ReadAt(p, off)
	s.read.Add(int64(n))
	return n, err
}

// take reserves n bytes of the budget and returns how many may be done.
func (s *spyDisk) take(n int64) int64 {
	if s.budget < 0 {
		return n
	}
	left := s.budget - (s.written.Load() + s.zeroed.Load())
	return max(0, min(n, left))
}

func (s *spyDisk) WriteAt(p []byte, off int64) (int, error) {
	s.writes.Add(1)
	if s.align > 1 && (off%s.align != 0 || (int64(len(p))%s.align != 0 && off+int64(len(p)) != s.d.Size())) {
		return 0, fmt.Errorf("unaligned write [%d,+%d)", off, len(p))
	}
	if s.maxWrite > 0 && int64(len(p)) > s.maxWrite {
		return 0, fmt.Errorf("write of %d bytes, over %d", len(p), s.maxWrite)
	}
	ok := s.take(int64(len(p)))
	n, err := s.d.WriteAt(p[:ok], off)
	s.written.Add(int64(n))
	if err == nil && ok < int64(len(p)) {
		err = errInjected
	}
	return n, err
}

func (s *spyDisk) ZeroRange(ctx context.Context, off, n int64) error {
	s.writes.Add(1)
	ok := s.take(n)
	if err := s.d.ZeroRange(ctx, off, ok); err != nil {
		return err
	}
	s.zeroed.Add(ok)
	if ok < n {
		return errInjected
	}
	return nil
}

func (s *spyDisk) Resize(ctx context.Context, size int64) error {
	if s.failResize {
		return errInjected
	}
	s.resizes.Add(1)
	return s.d.Resize(ctx, size)
}

func (s *spyDisk) Flush(ctx context.Context) error { return s.d.Flush(ctx) }

func (s *spyDisk) WriteLimits() (int64, int64) { return max(s.align, 1), s.maxWrite }

// touched reports whether anything was written, cleared or resized.
func (s *spyDisk) touched() bool {
	return s.writes.Load() > 0 || s.resizes.Load() > 0
}
