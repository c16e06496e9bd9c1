package patch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/deltasync/deltasync/disk"
)

// memDisk is an in-memory target with every capability Apply uses.
type memDisk struct {
	mu      sync.RWMutex
	b       []byte
	noZero  bool // behave as if it were not a Zeroer (see plainDisk)
	flushes atomic.Int64
}

var (
	_ disk.Target  = (*memDisk)(nil)
	_ disk.Zeroer  = (*memDisk)(nil)
	_ disk.Resizer = (*memDisk)(nil)
	_ disk.Flusher = (*memDisk)(nil)
)

func newMemDisk(b []byte) *memDisk { return &memDisk{b: append([]byte(nil), b...)} }

func (d *memDisk) bytes() []byte {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return append([]byte(nil), d.b...)
}

func (d *memDisk) Size() int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return int64(len(d.b))
}

func (d *memDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(d.b)) {
		return 0, io.EOF
	}
	n := copy(p, d.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *memDisk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(d.b)) {
		return 0, fmt.Errorf("write [%d,+%d) past the size %d", off, len(p), len(d.b))
	}
	return copy(d.b[off:], p), nil
}

func (d *memDisk) ZeroRange(ctx context.Context, off, n int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off < 0 || off+n > int64(len(d.b)) {
		return fmt.Errorf("zero [%d,+%d) past the size %d", off, n, len(d.b))
	}
	clear(d.b[off : off+n])
	return nil
}

func (d *memDisk) Resize(ctx context.Context, size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if size <= int64(len(d.b)) {
		d.b = d.b[:size:size]
		return nil
	}
	d.b = append(d.b, make([]byte, size-int64(len(d.b)))...)
	return nil
}

func (d *memDisk) Flush(ctx context.Context) error {
	d.flushes.Add(1)
	return nil
}

// plainDisk is a target with no optional capability: zeros are written.
type plainDisk struct{ d *memDisk }

func (p plainDisk) ReadAt(b []byte, off int64) (int, error)  { return p.d.ReadAt(b, off) }
func (p plainDisk) WriteAt(b []byte, off int64) (int, error) { return p.d.WriteAt(b, off) }
func (p plainDisk) Size() int64                              { return p.d.Size() }

// spyDisk wraps a memDisk, counts what is done to it, and fails once
// budget bytes have been written or cleared (budget < 0: never); the write
// that crosses the budget writes its part below the budget first, as a
// torn write would. failResize fails every Resize.
type spyDisk struct {
	d          *memDisk
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

func (s *spyDisk) WriteLimits() (int64, int64) { return s.align, s.maxWrite }

// touched reports whether anything was written, cleared or resized.
func (s *spyDisk) touched() bool {
	return s.writes.Load() > 0 || s.resizes.Load() > 0
}
