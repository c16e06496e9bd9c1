package disktest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deltasync/deltasync/disk"
)

// ErrInjected is wrapped by every error a Faulty makes up.
var ErrInjected = errors.New("disktest: injected fault")

// Faulty is a Mem that fails, stalls or lies on demand, and can lose what
// was written since its last Flush, as a disk loses its write cache when
// the power goes. Its knobs (the atomic fields and the Fail/Drop methods)
// may be set while it is in use; its hooks must be set before.
//
// A test type that embeds a Faulty or a Mem and overrides ReadAt or
// WriteAt must override ReadAtContext or WriteAtContext too: the engines
// call those when a disk has them, and would bypass the override.
type Faulty struct {
	*Mem
	// FailAfter, when positive, makes writes fail once that many bytes
	// have been written in all (the write that crosses it writes
	// nothing).
	FailAfter atomic.Int64
	// Stall makes writes wait until their context is cancelled (a
	// service that stopped answering); plain WriteAt calls wait until
	// Stall is cleared.
	Stall atomic.Bool
	// FailFlush makes the next Flush fail and lose the unflushed writes
	// (the disk's write-back failed).
	FailFlush atomic.Bool

	// BeforeWrite, when set, is called before each write and zeroing,
	// outside any lock: to slow writes down, or to change the disk
	// underneath a run.
	BeforeWrite func(off, n int64)
	// AfterWrite, when set, is called after each write and zeroing that
	// succeeded, while InFlight still counts it.
	AfterWrite func(off, n int64)
	// BeforeFlush, when set, is called when Flush starts.
	BeforeFlush func()

	written  atomic.Int64
	inFlight atomic.Int64
	mu       sync.Mutex
	unflush  map[int64][]byte // sector offset -> what it held before its first change since the last Flush
	ops      []Op
	// Faults at a byte (-1: none): see FailWritesAt, DropWritesAt and
	// FailReadsAt.
	failWriteAt, dropWriteAt, failReadAt, readSkip int64
}

// NewFaulty returns a Faulty holding b, with no fault set.
func NewFaulty(b []byte) *Faulty {
	return &Faulty{Mem: NewMem(b), unflush: map[int64][]byte{}, failWriteAt: -1, dropWriteAt: -1, failReadAt: -1}
}

// FailWritesAt makes every write and zeroing that covers byte off fail,
// writing nothing; a negative off clears the fault.
func (f *Faulty) FailWritesAt(off int64) {
	f.mu.Lock()
	f.failWriteAt = off
	f.mu.Unlock()
}

// DropWritesAt makes every write that covers byte off be acknowledged
// but not stored (a disk that lies; Verify must catch it); a negative
// off clears the fault.
func (f *Faulty) DropWritesAt(off int64) {
	f.mu.Lock()
	f.dropWriteAt = off
	f.mu.Unlock()
}

// FailReadsAt makes reads that cover byte off fail, but for the first
// skip of them (a sector that reads once, then goes bad); a negative off
// clears the fault.
func (f *Faulty) FailReadsAt(off, skip int64) {
	f.mu.Lock()
	f.failReadAt, f.readSkip = off, skip
	f.mu.Unlock()
}

// ReadAt reads p at off unless a fault says otherwise.
func (f *Faulty) ReadAt(p []byte, off int64) (int, error) {
	return f.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt under ctx.
func (f *Faulty) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	f.mu.Lock()
	at := f.failReadAt
	fail := at >= 0 && off <= at && at < off+int64(len(p))
	if fail && f.readSkip > 0 {
		f.readSkip--
		fail = false
	}
	f.mu.Unlock()
	if fail {
		f.Mem.reads.Add(1)
		return 0, fmt.Errorf("disktest: read [%d,+%d) covers the bad byte %d: %w", off, len(p), at, ErrInjected)
	}
	return f.Mem.ReadAtContext(ctx, p, off)
}

// covers reports whether [off, off+n) holds byte at (at >= 0).
func covers(at, off, n int64) bool { return at >= 0 && off <= at && at < off+n }

// Ops returns the writes and zeroings the Faulty accepted, in the order
// they were accepted (Kind "write" or "zero").
func (f *Faulty) Ops() []Op {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Op(nil), f.ops...)
}

// InFlight returns the writes and zeroings in progress.
func (f *Faulty) InFlight() int64 { return f.inFlight.Load() }

// WriteAt writes p at off unless a fault says otherwise.
func (f *Faulty) WriteAt(p []byte, off int64) (int, error) {
	return f.WriteAtContext(context.Background(), p, off)
}

// WriteAtContext is WriteAt under ctx: a stalled write returns when ctx
// is done.
func (f *Faulty) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	n := int64(len(p))
	f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	if err := f.fault(ctx, "write", off, n); err != nil {
		return 0, err
	}
	f.mu.Lock()
	drop := covers(f.dropWriteAt, off, n)
	f.mu.Unlock()
	if drop {
		if err := f.Mem.checkWrite(off, n); err != nil {
			return 0, err
		}
		f.accepted("write", off, n)
		return len(p), nil
	}
	f.remember(off, n)
	k, err := f.Mem.WriteAtContext(ctx, p, off)
	if err == nil {
		f.accepted("write", off, n)
	}
	return k, err
}

// accepted counts and records a change that succeeded, and calls
// AfterWrite.
func (f *Faulty) accepted(kind string, off, n int64) {
	f.written.Add(n)
	f.mu.Lock()
	f.ops = append(f.ops, Op{Kind: kind, Off: off, Len: n})
	f.mu.Unlock()
	if f.AfterWrite != nil {
		f.AfterWrite(off, n)
	}
}

// ZeroRange clears [off, off+n) unless a fault says otherwise; like a
// write, it counts toward FailAfter and is lost by Lose.
func (f *Faulty) ZeroRange(ctx context.Context, off, n int64) error {
	f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	if err := f.fault(ctx, "zero", off, n); err != nil {
		return err
	}
	f.remember(off, n)
	err := f.Mem.ZeroRange(ctx, off, n)
	if err == nil {
		f.accepted("zero", off, n)
	}
	return err
}

// fault calls BeforeWrite and applies Stall, FailAfter and FailWritesAt
// to a change of [off, off+n).
func (f *Faulty) fault(ctx context.Context, op string, off, n int64) error {
	if f.BeforeWrite != nil {
		f.BeforeWrite(off, n)
	}
	for f.Stall.Load() {
		if ctx.Done() == nil {
			time.Sleep(time.Millisecond) // no way to give up: wait for the stall to end
			continue
		}
		<-ctx.Done()
		return fmt.Errorf("disktest: stalled %s [%d,+%d): %w", op, off, n, ctx.Err())
	}
	if lim := f.FailAfter.Load(); lim > 0 && f.written.Load()+n > lim {
		return fmt.Errorf("disktest: %s [%d,+%d) after %d bytes: %w", op, off, n, f.written.Load(), ErrInjected)
	}
	f.mu.Lock()
	at := f.failWriteAt
	f.mu.Unlock()
	if covers(at, off, n) {
		return fmt.Errorf("disktest: %s [%d,+%d) covers the bad byte %d: %w", op, off, n, at, ErrInjected)
	}
	return nil
}

// remember keeps, for each 512-byte sector of [off, off+n) not yet
// changed since the last Flush, what it holds now.
func (f *Faulty) remember(off, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := off &^ 511; s < off+n; s += 512 {
		if _, ok := f.unflush[s]; ok {
			continue
		}
		b := make([]byte, 512)
		k, _ := f.Mem.read(b, s)
		f.unflush[s] = b[:k]
	}
}

// Flush makes the writes so far durable, or, with FailFlush set, fails
// and loses them (once).
func (f *Faulty) Flush(ctx context.Context) error {
	if f.BeforeFlush != nil {
		f.BeforeFlush()
	}
	if f.FailFlush.CompareAndSwap(true, false) {
		f.Lose()
		return fmt.Errorf("disktest: flush: %w", ErrInjected)
	}
	f.mu.Lock()
	clear(f.unflush)
	f.mu.Unlock()
	return f.Mem.Flush(ctx)
}

// Lose puts back what every sector written since the last Flush held
// before: the power went.
func (f *Faulty) Lose() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s, b := range f.unflush {
		n := min(int64(len(b)), f.Mem.Size()-s)
		if n > 0 {
			f.Mem.WriteAt(b[:n], s)
		}
	}
	clear(f.unflush)
}

// Written returns the bytes written through the Faulty so far.
func (f *Faulty) Written() int64 { return f.written.Load() }

var (
	_ disk.Target          = (*Faulty)(nil)
	_ disk.ReaderAtContext = (*Faulty)(nil)
	_ disk.WriterAtContext = (*Faulty)(nil)
	_ disk.Flusher         = (*Faulty)(nil)
	_ disk.Zeroer          = (*Faulty)(nil)
)
