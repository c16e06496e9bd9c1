package disktest

import (
	"context"
	"fmt"
	"sync"

	"github.com/deltasync/deltasync/disk"
)

// Op is one operation a Recording saw.
type Op struct {
	Kind     string // "read", "write", "zero", "flush", "resize"
	Off, Len int64  // the range (resize: Len is the new size)
	Err      error
}

func (o Op) String() string {
	if o.Err != nil {
		return fmt.Sprintf("%s[%d,+%d): %v", o.Kind, o.Off, o.Len, o.Err)
	}
	return fmt.Sprintf("%s[%d,+%d)", o.Kind, o.Off, o.Len)
}

// Recording is a target that passes everything to the disk under it and
// records each operation, in the order they ended. It has the optional
// capabilities Zeroer, Flusher and Resizer whether or not the disk under
// it does (they fail, recorded, when it does not), reports the limits of
// the disk under it (WriteLimits), and passes contexts on.
type Recording struct {
	disk.Target
	mu  sync.Mutex
	ops []Op
}

// NewRecording records the operations on d.
func NewRecording(d disk.Target) *Recording { return &Recording{Target: d} }

func (r *Recording) add(o Op) {
	r.mu.Lock()
	r.ops = append(r.ops, o)
	r.mu.Unlock()
}

// Ops returns the operations so far.
func (r *Recording) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// ReadAt reads from the disk under it.
func (r *Recording) ReadAt(p []byte, off int64) (int, error) {
	return r.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads from the disk under it under ctx.
func (r *Recording) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := disk.ReadAt(ctx, r.Target, p, off)
	r.add(Op{Kind: "read", Off: off, Len: int64(len(p)), Err: err})
	return n, err
}

// WriteAt writes to the disk under it.
func (r *Recording) WriteAt(p []byte, off int64) (int, error) {
	return r.WriteAtContext(context.Background(), p, off)
}

// WriteAtContext writes to the disk under it under ctx.
func (r *Recording) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := disk.WriteAt(ctx, r.Target, p, off)
	r.add(Op{Kind: "write", Off: off, Len: int64(len(p)), Err: err})
	return n, err
}

var errNoCapability = fmt.Errorf("disktest: the disk under the recording lacks the capability")

// ZeroRange zeroes through the disk under it.
func (r *Recording) ZeroRange(ctx context.Context, off, n int64) error {
	err := errNoCapability
	if z, ok := r.Target.(disk.Zeroer); ok {
		err = z.ZeroRange(ctx, off, n)
	}
	r.add(Op{Kind: "zero", Off: off, Len: n, Err: err})
	return err
}

// Flush flushes the disk under it (nothing to do when it has no Flush).
func (r *Recording) Flush(ctx context.Context) error {
	var err error
	if f, ok := r.Target.(disk.Flusher); ok {
		err = f.Flush(ctx)
	}
	r.add(Op{Kind: "flush", Err: err})
	return err
}

// Resize resizes the disk under it.
func (r *Recording) Resize(ctx context.Context, size int64) error {
	err := errNoCapability
	if z, ok := r.Target.(disk.Resizer); ok {
		err = z.Resize(ctx, size)
	}
	r.add(Op{Kind: "resize", Len: size, Err: err})
	return err
}

// WriteLimits reports the limits of the disk under it (alignment 1 and
// no maximum when it states none), so that writes through the recording
// are shaped as they would be without it.
func (r *Recording) WriteLimits() (align, maxWrite int64) {
	if wl, ok := r.Target.(disk.WriteLimits); ok {
		return wl.WriteLimits()
	}
	return 1, 0
}
