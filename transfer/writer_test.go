package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/deltasync/deltasync/disk/disktest"
)

// plainDisk has only the required methods: no Zeroer, Flusher, Resizer
// or WriteLimits.
type plainDisk struct{ m *disktest.Mem }

func (p plainDisk) Size() int64                              { return p.m.Size() }
func (p plainDisk) ReadAt(b []byte, off int64) (int, error)  { return p.m.ReadAt(b, off) }
func (p plainDisk) WriteAt(b []byte, off int64) (int, error) { return p.m.WriteAt(b, off) }

// shortDisk writes half of what it is given and says nothing.
type shortDisk struct{ plainDisk }

func (p shortDisk) WriteAt(b []byte, off int64) (int, error) { return p.m.WriteAt(b[:len(b)/2], off) }

// oddDisk reports an alignment no disk has.
type oddDisk struct{ plainDisk }

func (oddDisk) WriteLimits() (int64, int64) { return 3000, 0 }

func TestWriterSplits(t *testing.T) {
	ctx := context.Background()
	m := disktest.NewMem(make([]byte, 64<<10))
	m.Align, m.MaxWrite = 512, 8192
	rec := disktest.NewRecording(m)
	w, err := NewWriter(rec, &WriterOptions{WriteSize: 10000, ZeroSize: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if w.Alignment() != 512 || w.WriteSize() != 8192 || !w.CanZero() || !w.CanFlush() || !w.CanResize() {
		t.Fatalf("alignment %d, write size %d, zero %v, flush %v, resize %v", w.Alignment(), w.WriteSize(), w.CanZero(), w.CanFlush(), w.CanResize())
	}
	data := bytes.Repeat([]byte{7}, 20480)
	if err := w.WriteAt(ctx, data, 4096); err != nil {
		t.Fatal(err)
	}
	if err := w.Zero(ctx, 8192, 12288, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range rec.Ops() {
		got = append(got, o.String())
	}
	want := []string{"write[4096,+8192)", "write[12288,+8192)", "write[20480,+4096)", "zero[8192,+4608)", "zero[12800,+4608)", "zero[17408,+3072)", "flush[0,+0)"}
	if len(got) != len(want) {
		t.Fatalf("operations %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("operations %v, want %v", got, want)
		}
	}
	b := m.Bytes()
	if !bytes.Equal(b[4096:8192], data[:4096]) || !isZero(b[8192:20480]) || !bytes.Equal(b[20480:24576], data[:4096]) {
		t.Fatal("the content is not what was written and cleared")
	}
}

func TestWriterZeroWritesZeros(t *testing.T) {
	ctx := context.Background()
	m := disktest.NewMem(bytes.Repeat([]byte{9}, 40000))
	w, err := NewWriter(plainDisk{m}, &WriterOptions{WriteSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if w.CanZero() || w.CanFlush() || w.CanResize() {
		t.Fatal("a plain disk has no Zeroer, Flusher or Resizer")
	}
	if err := w.Zero(ctx, 1000, 10000, nil); err != nil {
		t.Fatal(err)
	}
	// With a buffer of the caller's, which holds garbage.
	if err := w.Zero(ctx, 20000, 5000, bytes.Repeat([]byte{1}, 3000)); err != nil {
		t.Fatal(err)
	}
	b := m.Bytes()
	if !isZero(b[1000:11000]) || !isZero(b[20000:25000]) || b[999] != 9 || b[11000] != 9 || b[19999] != 9 || b[25000] != 9 {
		t.Fatal("zeros were not written over exactly the ranges")
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatalf("Flush without a Flusher: %v", err)
	}
	if err := w.Resize(ctx, 50000); !errors.Is(err, ErrTargetTooSmall) {
		t.Fatalf("growing a disk that cannot grow: %v, want ErrTargetTooSmall", err)
	}
	if err := w.Resize(ctx, 30000); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("cutting a disk that cannot be cut: %v, want ErrBadOptions", err)
	}
}

func TestWriterErrors(t *testing.T) {
	ctx := context.Background()
	w, err := NewWriter(shortDisk{plainDisk{disktest.NewMem(make([]byte, 8192))}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var we *WriteError
	if err := w.WriteAt(ctx, make([]byte, 4096), 0); !errors.As(err, &we) || !errors.Is(err, io.ErrShortWrite) || we.Op != "write" || we.Len != 4096 {
		t.Fatalf("a short write: %v, want a *WriteError of io.ErrShortWrite", err)
	}
	if _, err := NewWriter(oddDisk{plainDisk{disktest.NewMem(nil)}}, nil); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("alignment 3000: %v, want ErrBadOptions", err)
	}
	f := disktest.NewFaulty(make([]byte, 8192))
	w, err = NewWriter(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.FailFlush.Store(true)
	if err := w.Flush(ctx); !errors.As(err, &we) || we.Op != "flush" || !errors.Is(err, disktest.ErrInjected) {
		t.Fatalf("a failed flush: %v, want a *WriteError of the fault", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := w.WriteAt(cctx, make([]byte, 512), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("a write under a cancelled context: %v", err)
	}
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
