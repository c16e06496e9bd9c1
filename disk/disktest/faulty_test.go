package disktest

import (
	"bytes"
	"context"
	"errors"
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
