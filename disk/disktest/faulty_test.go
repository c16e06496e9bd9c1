package disktest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/disk"
)

func TestFaultyConforms(t *testing.T) {
	TestTarget(t, func(ctx context.Context, size int64) (disk.Target, func(), error) {
		return NewFaulty(make([]byte, size)), func() {}, nil
	})
	TestTarget(t, func(ctx context.Context, size int64) (disk.Target, func(), error) {
		return NewRecording(NewMem(make([]byte, size))), func() {}, nil
	})
}

func TestFaultyFailAfter(t *testing.T) {
	f := NewFaulty(make([]byte, 8192))
	f.FailAfter.Store(5000)
	if _, err := f.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 4096), 4096); !errors.Is(err, ErrInjected) {
		t.Fatalf("the write past FailAfter: %v, want ErrInjected", err)
	}
	if b := f.Bytes(); b[4096] != 0 {
		t.Fatal("the failed write changed the disk")
	}
}

func TestFaultyStallUntilCancelled(t *testing.T) {
	f := NewFaulty(make([]byte, 8192))
	f.Stall.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := f.WriteAtContext(ctx, make([]byte, 512), 0); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("a stalled write returned before the cancel: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("stalled write after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stalled write did not return after its context was cancelled")
	}
}

func TestFaultyLosesUnflushed(t *testing.T) {
	old := bytes.Repeat([]byte{7}, 8192)
	f := NewFaulty(old)
	f.WriteAt(bytes.Repeat([]byte{1}, 1000), 100)
	if err := f.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{2}, 3000), 2000)
	f.ZeroRange(context.Background(), 6144, 1024)
	f.FailFlush.Store(true)
	if err := f.Flush(context.Background()); !errors.Is(err, ErrInjected) {
		t.Fatalf("the armed flush: %v", err)
	}
	want := bytes.Clone(old)
	copy(want[100:1100], bytes.Repeat([]byte{1}, 1000)) // flushed before: kept
	if got := f.Bytes(); !bytes.Equal(got, want) {
		t.Fatal("after a failed flush, the disk is not what the last good flush left")
	}
}

func TestRecordingRecords(t *testing.T) {
	r := NewRecording(NewMem(make([]byte, 4096)))
	ctx := context.Background()
	r.WriteAt(make([]byte, 512), 512)
	r.ZeroRange(ctx, 0, 512)
	r.Flush(ctx)
	r.Resize(ctx, 8192)
	r.ReadAt(make([]byte, 10), 8190)
	got := r.Ops()
	want := []string{"write[512,+512)", "zero[0,+512)", "flush[0,+0)", "resize[0,+8192)", "read[8190,+10): EOF"}
	if len(got) != len(want) {
		t.Fatalf("ops %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("op %d: %s, want %s", i, got[i], want[i])
		}
	}
}

func TestFaultyAtAByte(t *testing.T) {
	ctx := context.Background()
	f := NewFaulty(make([]byte, 16384))
	f.FailWritesAt(5000)
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 4096), 4096); !errors.Is(err, ErrInjected) {
		t.Fatalf("a write over the bad byte: %v", err)
	}
	if err := f.ZeroRange(ctx, 4096, 4096); !errors.Is(err, ErrInjected) {
		t.Fatalf("a zeroing over the bad byte: %v", err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 4096), 0); err != nil {
		t.Fatalf("a write beside the bad byte: %v", err)
	}
	f.FailWritesAt(-1)
	f.DropWritesAt(9000)
	if n, err := f.WriteAt(bytes.Repeat([]byte{2}, 4096), 8192); n != 4096 || err != nil {
		t.Fatalf("a dropped write must look written: %d, %v", n, err)
	}
	if b := f.Bytes(); b[9000] != 0 || b[0] != 1 {
		t.Fatal("the dropped write was stored, or the good one lost")
	}
	if _, err := f.WriteAt(make([]byte, 4096), 16384); err == nil {
		t.Fatal("a dropped write past the end must still fail")
	}
	if ops := f.Ops(); len(ops) != 2 || ops[0].Off != 0 || ops[1].Off != 8192 || ops[1].Kind != "write" {
		t.Fatalf("ops %v, want the two accepted writes", ops)
	}
	f.FailReadsAt(100, 1)
	p := make([]byte, 512)
	if _, err := f.ReadAt(p, 0); err != nil {
		t.Fatalf("the first read over the bad byte is spared: %v", err)
	}
	if _, err := f.ReadAt(p, 0); !errors.Is(err, ErrInjected) {
		t.Fatalf("the second read over the bad byte: %v", err)
	}
	if _, err := f.ReadAt(p, 512); err != nil {
		t.Fatalf("a read beside the bad byte: %v", err)
	}
	if f.Reads() != 3 {
		t.Fatalf("%d reads counted, want 3", f.Reads())
	}
}

func TestFaultyHooks(t *testing.T) {
	f := NewFaulty(make([]byte, 8192))
	var before, after, flushes int
	f.BeforeWrite = func(off, n int64) { before++ }
	f.AfterWrite = func(off, n int64) {
		after++
		if f.InFlight() != 1 {
			t.Errorf("in flight %d during AfterWrite, want 1", f.InFlight())
		}
	}
	f.BeforeFlush = func() { flushes++ }
	f.FailAfter.Store(5000)
	f.WriteAt(make([]byte, 4096), 0)
	f.WriteAt(make([]byte, 4096), 4096) // fails: FailAfter
	f.Flush(context.Background())
	if before != 2 || after != 1 || flushes != 1 || f.InFlight() != 0 {
		t.Fatalf("before %d after %d flushes %d in flight %d, want 2 1 1 0", before, after, flushes, f.InFlight())
	}
}

func TestMemTrimAndDrops(t *testing.T) {
	b := make([]byte, 16384)
	b[4096+7] = 1
	m := NewMem(b)
	m.Trim(4096)
	got, _ := m.AllocatedRanges(context.Background(), 0, 16384)
	if len(got) != 1 || got[0] != (disk.Range{Off: 4096, Len: 4096}) {
		t.Fatalf("allocated after Trim: %v, want the one page with data", got)
	}
	m.DropCache(0, 100)
	if m.CacheDrops() != 1 {
		t.Fatal("DropCache not counted")
	}
}

func TestSameBytes(t *testing.T) {
	ctx := context.Background()
	m := NewMem([]byte("abcdef"))
	if err := SameBytes(ctx, m, []byte("abcdef")); err != nil {
		t.Fatal(err)
	}
	if err := SameBytes(ctx, m, []byte("abcxef")); err == nil || !strings.Contains(err.Error(), "byte 3") {
		t.Fatalf("got %v, want a difference at byte 3", err)
	}
	if err := SameBytes(ctx, m, []byte("abcdefg")); err == nil || !strings.Contains(err.Error(), "sizes 6, want 7") {
		t.Fatalf("got %v, want the sizes named", err)
	}
}
