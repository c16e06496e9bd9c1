package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/deltasync/deltasync/disk"
)

// linkTarget is a memDisk reached over a connection that drops after
// some writes: later writes fail with disk.ErrDisconnected, as an agent
// disk's do.
type linkTarget struct {
	*memDisk
	left atomic.Int64 // writes before the link drops
}

func (l *linkTarget) WriteAt(p []byte, off int64) (int, error) {
	if l.left.Add(-1) < 0 {
		return 0, fmt.Errorf("link lost: %w", disk.ErrDisconnected)
	}
	return l.memDisk.WriteAt(p, off)
}

// WriteAtContext is WriteAt: the memDisk's own would bypass the link.
func (l *linkTarget) WriteAtContext(_ context.Context, p []byte, off int64) (int, error) {
	return l.WriteAt(p, off)
}

// TestDisconnectDoesNotPoison: a run whose remote target's connection
// drops keeps its journal trusted (the target's witness decides on the
// rerun), where a failed write of the target itself poisons it.
func TestDisconnectDoesNotPoison(t *testing.T) {
	for _, lost := range []bool{true, false} {
		src, s, d, opts := evidenceCase(t, 5)
		var err error
		if lost {
			l := &linkTarget{memDisk: d}
			l.left.Store(40)
			_, err = Sync(context.Background(), s, l, opts)
			if !errors.Is(err, disk.ErrDisconnected) {
				t.Fatalf("got %v, want a lost connection", err)
			}
		} else {
			d.FailAfter.Store(40 * 8 << 10)
			_, err = Sync(context.Background(), s, d, opts)
			if !errors.Is(err, errInjected) {
				t.Fatalf("got %v, want a failed write", err)
			}
			d.FailAfter.Store(0)
		}
		st, err := Sync(context.Background(), s, d, opts)
		if err != nil {
			t.Fatal(err)
		}
		if lost && !st.Resumed { // from 0 when the link dropped before the first save
			t.Fatalf("rerun after a lost connection did not resume: %+v", st)
		}
		if !lost && (st.Resumed || !st.JournalDiscarded) {
			t.Fatalf("rerun after a failed write resumed: %+v", st)
		}
		if !bytes.Equal(d.Bytes(), src) {
			t.Fatal("target differs")
		}
	}
}
