package disktest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/deltasync/deltasync/disk"
)

// Open returns a new writable target of size bytes, all zeros, and a
// function that releases it (closing it, deleting what it made). The
// checker opens one per case.
type Open func(ctx context.Context, size int64) (disk.Target, func(), error)

// CheckSize is the size of the targets the checker asks for: 1 MiB and
// 4 KiB, a size every kind of target can have (a page blob's is a
// multiple of 512).
const CheckSize = 1<<20 + 4096

// TestTarget runs Check on open as subtests of t, one per case, and
// reports each broken rule as an error.
func TestTarget(t *testing.T, open Open) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := runCase(context.Background(), c, open); err != nil {
				if errors.Is(err, errSkip) {
					t.Skip(err)
				}
				t.Error(err)
			}
		})
	}
}

// Check runs every case on targets made by open and returns the rules
// they broke, each naming its case (nil: the target conforms). Cases for
// a capability the target lacks are skipped.
func Check(ctx context.Context, open Open) []error {
	var errs []error
	for _, c := range cases {
		if err := runCase(ctx, c, open); err != nil && !errors.Is(err, errSkip) {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
	}
	return errs
}

var errSkip = errors.New("disktest: the target lacks the capability")

type checkCase struct {
	name string
	run  func(ctx context.Context, d disk.Target, lim limits) error
}

// limits are the target's write limits, with the checker's own writes
// sized to them.
type limits struct{ align, max int64 }

// block is the length of one write of the checker: 4 KiB, or the
// target's alignment when that is larger, cut to its maximum.
func (l limits) block() int64 {
	b := max(int64(4096), l.align)
	if l.max > 0 {
		b = min(b, l.max)
	}
	return b
}

func runCase(ctx context.Context, c checkCase, open Open) (err error) {
	d, release, err := open(ctx, CheckSize)
	if err != nil {
		return fmt.Errorf("opening a target of %d bytes: %w", CheckSize, err)
	}
	defer release()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	if got := d.Size(); got != CheckSize {
		return fmt.Errorf("a new target of %d bytes has Size %d", CheckSize, got)
	}
	lim := limits{align: 1}
	if wl, ok := d.(disk.WriteLimits); ok {
		lim.align, lim.max = wl.WriteLimits()
		lim.align = max(lim.align, 1)
	}
	return c.run(ctx, d, lim)
}

func pattern(seed uint64, n int64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readAll reads [off, off+n) and insists on the io.ReaderAt contract.
func readAll(ctx context.Context, d disk.Target, off, n int64) ([]byte, error) {
	b := make([]byte, n)
	got, err := disk.ReadAt(ctx, d, b, off)
	if got != len(b) {
		return nil, fmt.Errorf("ReadAt [%d,+%d) read %d bytes (err %v)", off, n, got, err)
	}
	if err != nil {
		return nil, fmt.Errorf("ReadAt [%d,+%d) inside the disk: %w", off, n, err)
	}
	return b, nil
}

// writeAll writes p at off, in writes of at most the checker's block.
func writeAll(ctx context.Context, d disk.Target, p []byte, off int64) error {
	step := len(p)
	if wl, ok := d.(disk.WriteLimits); ok {
		if _, m := wl.WriteLimits(); m > 0 {
			step = min(step, int(m))
		}
	}
	for len(p) > 0 {
		q := p[:min(step, len(p))]
		n, err := disk.WriteAt(ctx, d, q, off)
		if err != nil {
			return fmt.Errorf("WriteAt [%d,+%d): %w", off, len(q), err)
		}
		if n != len(q) {
			return fmt.Errorf("WriteAt [%d,+%d) wrote %d bytes and no error", off, len(q), n)
		}
		p, off = p[len(q):], off+int64(len(q))
	}
	return nil
}

func expect(ctx context.Context, d disk.Target, off int64, want []byte, what string) error {
	got, err := readAll(ctx, d, off, int64(len(want)))
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		return fmt.Errorf("%s: byte %d differs (read %#x, want %#x)", what, off+int64(i), got[i], want[i])
	}
	return nil
}

var cases = []checkCase{
	{"new target reads as zeros", func(ctx context.Context, d disk.Target, _ limits) error {
		return expect(ctx, d, 0, make([]byte, CheckSize), "a new target")
	}},
	{"reads at and past the end", func(ctx context.Context, d disk.Target, _ limits) error {
		size := d.Size()
		b := make([]byte, 8192)
		n, err := disk.ReadAt(ctx, d, b, size-4096)
		if n != 4096 || err == nil {
			return fmt.Errorf("ReadAt across the end: %d bytes, err %v; want 4096 and an error (io.EOF)", n, err)
		}
		n, err = disk.ReadAt(ctx, d, b, size)
		if n != 0 || err == nil {
			return fmt.Errorf("ReadAt at the end: %d bytes, err %v; want 0 and an error (io.EOF)", n, err)
		}
		n, err = disk.ReadAt(ctx, d, b[:512], size+(1<<20))
		if n != 0 || err == nil {
			return fmt.Errorf("ReadAt past the end: %d bytes, err %v; want 0 and an error", n, err)
		}
		return nil
	}},
	{"write then read back", func(ctx context.Context, d disk.Target, lim limits) error {
		bl := lim.block()
		p := pattern(1, bl)
		for _, off := range []int64{0, bl, CheckSize - bl} {
			off -= off % lim.align
			if err := writeAll(ctx, d, p, off); err != nil {
				return err
			}
			if err := expect(ctx, d, off, p, "after a write"); err != nil {
				return err
			}
		}
		// Neighbours untouched.
		return expect(ctx, d, 2*bl, make([]byte, bl), "the range next to a write")
	}},
	{"writes past the end fail and change nothing", func(ctx context.Context, d disk.Target, lim limits) error {
		size := d.Size()
		bl := lim.block()
		p := pattern(2, bl)
		off := size - bl + lim.align // crosses the end
		if lim.align >= bl {
			off = size
		}
		if n, err := disk.WriteAt(ctx, d, p, off); err == nil {
			return fmt.Errorf("WriteAt [%d,+%d) across the end of %d bytes wrote %d bytes and no error", off, bl, size, n)
		}
		if n, err := disk.WriteAt(ctx, d, p, size+(1<<20)); err == nil {
			return fmt.Errorf("WriteAt 1 MiB past the end wrote %d bytes and no error", n)
		}
		if got := d.Size(); got != size {
			return fmt.Errorf("a refused write past the end changed Size from %d to %d", size, got)
		}
		return expect(ctx, d, size-bl, make([]byte, bl), "the last block after refused writes past the end")
	}},
	{"concurrent disjoint writes", func(ctx context.Context, d disk.Target, lim limits) error {
		bl := lim.block()
		const k = 16
		var wg sync.WaitGroup
		errs := make([]error, k)
		for i := range k {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = writeAll(ctx, d, pattern(uint64(100+i), bl), int64(i)*bl)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		for i := range k {
			if err := expect(ctx, d, int64(i)*bl, pattern(uint64(100+i), bl), fmt.Sprintf("block %d of %d written at once", i, k)); err != nil {
				return err
			}
		}
		return nil
	}},
	{"zeroing clears the range and only it", func(ctx context.Context, d disk.Target, lim limits) error {
		z, ok := d.(disk.Zeroer)
		if !ok {
			return errSkip
		}
		bl := lim.block()
		p := pattern(3, 4*bl)
		if err := writeAll(ctx, d, p, 0); err != nil {
			return err
		}
		if err := z.ZeroRange(ctx, bl, 2*bl); err != nil {
			return fmt.Errorf("ZeroRange [%d,+%d): %w", bl, 2*bl, err)
		}
		want := append(append(append([]byte(nil), p[:bl]...), make([]byte, 2*bl)...), p[3*bl:]...)
		return expect(ctx, d, 0, want, "after ZeroRange")
	}},
	{"allocated ranges cover every byte that is not zero", func(ctx context.Context, d disk.Target, lim limits) error {
		am, ok := d.(disk.AllocationMapper)
		if !ok {
			return errSkip
		}
		bl := lim.block()
		if err := writeAll(ctx, d, pattern(4, bl), 8*bl); err != nil {
			return err
		}
		rs, err := am.AllocatedRanges(ctx, 0, d.Size())
		if err != nil {
			return fmt.Errorf("AllocatedRanges: %w", err)
		}
		end := int64(0)
		for _, r := range rs {
			if r.Off < end || r.Len <= 0 || r.End() > d.Size() {
				return fmt.Errorf("AllocatedRanges %v: not sorted, overlapping, empty or past the end", rs)
			}
			end = r.End()
		}
		covered := false
		for _, r := range rs {
			covered = covered || (r.Off <= 8*bl && r.End() >= 9*bl)
		}
		if !covered {
			return fmt.Errorf("AllocatedRanges %v leave out the block written at %d", rs, 8*bl)
		}
		return nil
	}},
	{"resize grows with zeros and shrinks", func(ctx context.Context, d disk.Target, lim limits) error {
		rz, ok := d.(disk.Resizer)
		if !ok {
			return errSkip
		}
		size := d.Size()
		bl := lim.block()
		p := pattern(5, bl)
		if err := writeAll(ctx, d, p, size-bl); err != nil {
			return err
		}
		grown := size + 4*bl
		if err := rz.Resize(ctx, grown); err != nil {
			// A disk of a fixed size (a block device) refuses another
			// size: then nothing may have changed.
			if got := d.Size(); got != size {
				return fmt.Errorf("a refused Resize to %d (%v) changed Size from %d to %d", grown, err, size, got)
			}
			if err := expect(ctx, d, size-bl, p, "after a refused Resize"); err != nil {
				return err
			}
			if err := rz.Resize(ctx, size); err != nil {
				return fmt.Errorf("a disk that refuses Resize to %d also refuses its own size %d: %w", grown, size, err)
			}
			return errSkip
		}
		if got := d.Size(); got != grown {
			return fmt.Errorf("after Resize to %d, Size is %d", grown, got)
		}
		if err := expect(ctx, d, size-bl, append(append([]byte(nil), p...), make([]byte, 4*bl)...), "after growing"); err != nil {
			return err
		}
		small := size - 2*bl
		if err := rz.Resize(ctx, small); err != nil {
			return fmt.Errorf("Resize to %d: %w", small, err)
		}
		if got := d.Size(); got != small {
			return fmt.Errorf("after Resize to %d, Size is %d", small, got)
		}
		if n, err := disk.ReadAt(ctx, d, make([]byte, 512), small); n != 0 || err == nil {
			return fmt.Errorf("ReadAt at the end after shrinking: %d bytes, err %v", n, err)
		}
		// Grown again, the dropped tail reads as zeros.
		if err := rz.Resize(ctx, size); err != nil {
			return fmt.Errorf("Resize back to %d: %w", size, err)
		}
		return expect(ctx, d, small, make([]byte, size-small), "a tail dropped by shrinking, then grown again")
	}},
	{"flush after writes", func(ctx context.Context, d disk.Target, lim limits) error {
		f, ok := d.(disk.Flusher)
		if !ok {
			return errSkip
		}
		if err := writeAll(ctx, d, pattern(6, lim.block()), 0); err != nil {
			return err
		}
		if err := f.Flush(ctx); err != nil {
			return fmt.Errorf("Flush: %w", err)
		}
		return expect(ctx, d, 0, pattern(6, lim.block()), "after Flush")
	}},
	{"identity is stable and version moves with writes", func(ctx context.Context, d disk.Target, lim limits) error {
		if id, ok := d.(disk.Identifier); ok {
			a, b := id.Identity(), id.Identity()
			if a == "" || a != b {
				return fmt.Errorf("Identity %q then %q: want the same, not empty", a, b)
			}
		}
		v, ok := d.(disk.Versioner)
		if !ok {
			return nil
		}
		before, err := v.Version(ctx)
		if err != nil {
			return fmt.Errorf("Version: %w", err)
		}
		if err := writeAll(ctx, d, pattern(7, lim.block()), 0); err != nil {
			return err
		}
		after, err := v.Version(ctx)
		if err != nil {
			return fmt.Errorf("Version: %w", err)
		}
		if before == after {
			return fmt.Errorf("Version %q did not change after a write", before)
		}
		return nil
	}},
	{"a cancelled context stops reads and writes", func(ctx context.Context, d disk.Target, lim limits) error {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		p := pattern(8, lim.block())
		if _, err := disk.WriteAt(cctx, d, p, 0); err == nil {
			return errors.New("WriteAt under a cancelled context: no error")
		}
		if _, err := disk.ReadAt(cctx, d, p, 0); err == nil {
			return errors.New("ReadAt under a cancelled context: no error")
		}
		return nil
	}},
}
