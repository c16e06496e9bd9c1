// Package disktest is test support for the words of package disk: an
// in-memory disk (Mem), a disk that fails, stalls or lies on demand and
// loses unflushed writes (Faulty), one that records what was done to it
// (Recording), readers that compare a disk with the bytes it must hold
// (ReadAll, SameBytes), and a conformance checker (Check, TestTarget) that every
// Source and Target implementation runs in its own tests, so that local
// files, page blobs, agent disks and patch's targets behave alike on the
// same edge cases.
//
//	func TestConformance(t *testing.T) {
//		disktest.TestTarget(t, func(ctx context.Context, size int64) (disk.Target, func(), error) {
//			d, err := openMyTarget(ctx, size) // zeros, size bytes, writable
//			return d, func() { d.Close() }, err
//		})
//	}
//
//	d := disktest.NewFaulty(old)
//	d.FailAfter.Store(1 << 20) // writes fail after 1 MiB
//	_, err := transfer.Sync(ctx, disktest.NewMem(src), d, opts)
//	d.Lose()                   // the power went: unflushed writes are gone
//
// It is imported by tests only (internal/layering holds the rule).
package disktest

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/deltasync/deltasync/disk"
)

// Mem is a disk in memory. It is a disk.Target with every optional
// capability: Zeroer, Flusher, Resizer, WriteLimits, Identifier,
// Versioner, AllocationMapper (the ranges ever written, less those
// zeroed; Trim forgets zero pages), CacheDropper (counted), and the
// context-aware reads and writes. The zero value is not
// usable: use NewMem. Safe for concurrent use.
type Mem struct {
	mu      sync.RWMutex
	b       []byte
	written []disk.Range // may hold data; sorted, merged
	id      string
	version atomic.Int64
	// Align and MaxWrite are what WriteLimits reports (defaults 1 and
	// 0, no limit); writes that break them fail.
	Align, MaxWrite int64
	flushes         atomic.Int64
	reads, drops    atomic.Int64
}

var memSeq atomic.Int64

// NewMem returns a Mem holding b (a copy), with a name unique in the
// process as its Identity.
func NewMem(b []byte) *Mem {
	m := &Mem{b: append([]byte(nil), b...), id: fmt.Sprintf("mem:%d", memSeq.Add(1)), Align: 1}
	if len(b) > 0 {
		m.written = []disk.Range{{Off: 0, Len: int64(len(b))}}
	}
	return m
}

// Bytes returns a copy of the disk's content.
func (m *Mem) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.b...)
}

// Size returns the disk's size.
func (m *Mem) Size() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.b))
}

// ReadAt reads under the io.ReaderAt contract: fewer bytes only with an
// error, io.EOF at the end.
func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	return m.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt that fails at once when ctx is done.
func (m *Mem) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	m.reads.Add(1)
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return m.read(p, off)
}

// read is ReadAt, uncounted.
func (m *Mem) read(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("disktest: read at negative offset %d", off)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off >= int64(len(m.b)) {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes all of p at off, or fails: it never grows the disk, and
// refuses writes that break WriteLimits.
func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	return m.WriteAtContext(context.Background(), p, off)
}

// WriteAtContext is WriteAt that fails at once when ctx is done.
func (m *Mem) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkWriteLocked(off, int64(len(p))); err != nil {
		return 0, err
	}
	copy(m.b[off:], p)
	m.written = disk.Normalize(append(m.written, disk.Range{Off: off, Len: int64(len(p))}))
	m.version.Add(1)
	return len(p), nil
}

// checkWrite returns the error a write of [off, off+n) would fail with.
func (m *Mem) checkWrite(off, n int64) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.checkWriteLocked(off, n)
}

func (m *Mem) checkWriteLocked(off, n int64) error {
	if err := m.checkLimits(off, n); err != nil {
		return err
	}
	if off < 0 || off > int64(len(m.b))-n {
		return fmt.Errorf("disktest: write [%d,+%d) outside the disk's %d bytes", off, n, len(m.b))
	}
	return nil
}

// checkLimits refuses a change of [off, off+n) that breaks the limits;
// the tail of a disk whose size is not a multiple of Align may be
// changed in one piece that ends at the end.
func (m *Mem) checkLimits(off, n int64) error {
	if a := m.Align; a > 1 && (off%a != 0 || (n%a != 0 && off+n != int64(len(m.b)))) {
		return fmt.Errorf("disktest: [%d,+%d) is not aligned to %d", off, n, a)
	}
	if m.MaxWrite > 0 && n > m.MaxWrite {
		return fmt.Errorf("disktest: a write of %d bytes is longer than %d", n, m.MaxWrite)
	}
	return nil
}

// ZeroRange clears [off, off+n).
func (m *Mem) ZeroRange(ctx context.Context, off, n int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.Align; a > 1 && (off%a != 0 || (n%a != 0 && off+n != int64(len(m.b)))) {
		return fmt.Errorf("disktest: zero [%d,+%d) is not aligned to %d", off, n, a)
	}
	if off < 0 || n < 0 || off > int64(len(m.b))-n {
		return fmt.Errorf("disktest: zero [%d,+%d) outside the disk's %d bytes", off, n, len(m.b))
	}
	clear(m.b[off : off+n])
	m.written = disk.Subtract(m.written, disk.Range{Off: off, Len: n})
	m.version.Add(1)
	return nil
}

// Resize sets the size: growth reads as zeros, shrinking drops the tail.
func (m *Mem) Resize(ctx context.Context, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("disktest: resize to %d", size)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if size <= int64(len(m.b)) {
		m.b = m.b[:size:size]
		m.written = disk.Subtract(m.written, disk.Range{Off: size, Len: 1 << 62})
	} else {
		m.b = append(m.b, make([]byte, size-int64(len(m.b)))...)
	}
	m.version.Add(1)
	return nil
}

// Flush counts the call; a Mem's writes are durable when they return.
func (m *Mem) Flush(ctx context.Context) error {
	m.flushes.Add(1)
	return ctx.Err()
}

// Flushes returns how many times Flush was called.
func (m *Mem) Flushes() int64 { return m.flushes.Load() }

// Reads returns how many reads were asked of the disk.
func (m *Mem) Reads() int64 { return m.reads.Load() }

// DropCache counts the call: a Mem has no cache.
func (m *Mem) DropCache(off, n int64) error {
	m.drops.Add(1)
	return nil
}

// CacheDrops returns how many times DropCache was called.
func (m *Mem) CacheDrops() int64 { return m.drops.Load() }

// Trim forgets the allocation of every page of the given size that holds
// only zeros, as a thin disk does when its zero pages are discarded (a
// NewMem disk reports all of its initial content allocated).
func (m *Mem) Trim(page int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var keep []disk.Range
	for s := int64(0); s < int64(len(m.b)); s += page {
		e := min(s+page, int64(len(m.b)))
		for _, c := range m.b[s:e] {
			if c != 0 {
				keep = append(keep, disk.Range{Off: s, Len: e - s})
				break
			}
		}
	}
	m.written = disk.Normalize(keep)
}

// WriteLimits returns Align (at least 1) and MaxWrite.
func (m *Mem) WriteLimits() (align, maxWrite int64) { return max(m.Align, 1), m.MaxWrite }

// Identity returns the disk's name, unique in the process.
func (m *Mem) Identity() string { return m.id }

// Version returns a counter of the changes made to the disk.
func (m *Mem) Version(ctx context.Context) (string, error) {
	return fmt.Sprintf("v%d", m.version.Load()), ctx.Err()
}

// AllocatedRanges returns the ranges written and not zeroed since.
func (m *Mem) AllocatedRanges(ctx context.Context, off, n int64) ([]disk.Range, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	end := min(off+n, int64(len(m.b)))
	var out []disk.Range
	for _, r := range m.written {
		s, e := max(r.Off, off), min(r.End(), end)
		if s < e {
			out = append(out, disk.Range{Off: s, Len: e - s})
		}
	}
	return out, nil
}

var (
	_ disk.Target           = (*Mem)(nil)
	_ disk.Zeroer           = (*Mem)(nil)
	_ disk.Flusher          = (*Mem)(nil)
	_ disk.Resizer          = (*Mem)(nil)
	_ disk.WriteLimits      = (*Mem)(nil)
	_ disk.Identifier       = (*Mem)(nil)
	_ disk.Versioner        = (*Mem)(nil)
	_ disk.AllocationMapper = (*Mem)(nil)
	_ disk.ReaderAtContext  = (*Mem)(nil)
	_ disk.WriterAtContext  = (*Mem)(nil)
	_ disk.CacheDropper     = (*Mem)(nil)
)
