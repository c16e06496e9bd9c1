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

// Faulty is a Mem that fails or stalls on demand, and can lose what was
// written since its last Flush, as a disk loses its write cache when the
// power goes. Its knobs may be set while it is in use.
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

	written atomic.Int64
	mu      sync.Mutex
	unflush map[int64][]byte // sector offset -> what it held before its first change since the last Flush
}

// NewFaulty returns a Faulty holding b.
func NewFaulty(b []byte) *Faulty {
	return &Faulty{Mem: NewMem(b), unflush: map[int64][]byte{}}
}

// WriteAt writes p at off unless a fault says otherwise.
func (f *Faulty) WriteAt(p []byte, off int64) (int, error) {
	return f.WriteAtContext(context.Background(), p, off)
}

// WriteAtContext is WriteAt under ctx: a stalled write returns when ctx
// is done.
func (f *Faulty) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := f.fault(ctx, "write", off, int64(len(p))); err != nil {
		return 0, err
	}
	f.remember(off, int64(len(p)))
	n, err := f.Mem.WriteAtContext(ctx, p, off)
	f.written.Add(int64(n))
	return n, err
}

// ZeroRange clears [off, off+n) unless a fault says otherwise; like a
// write, it counts toward FailAfter and is lost by Lose.
func (f *Faulty) ZeroRange(ctx context.Context, off, n int64) error {
	if err := f.fault(ctx, "zero", off, n); err != nil {
		return err
	}
	f.remember(off, n)
	err := f.Mem.ZeroRange(ctx, off, n)
	if err == nil {
		f.written.Add(n)
	}
	return err
}

// fault applies Stall and FailAfter to a change of [off, off+n).
func (f *Faulty) fault(ctx context.Context, op string, off, n int64) error {
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
		k, _ := f.Mem.ReadAt(b, s)
		f.unflush[s] = b[:k]
	}
}

// Flush makes the writes so far durable, or, with FailFlush set, fails
// and loses them (once).
func (f *Faulty) Flush(ctx context.Context) error {
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
	_ disk.WriterAtContext = (*Faulty)(nil)
	_ disk.Flusher         = (*Faulty)(nil)
	_ disk.Zeroer          = (*Faulty)(nil)
)
