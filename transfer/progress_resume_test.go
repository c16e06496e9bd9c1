package transfer

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestProgressReportsResume: the progress reports of a run that resumed carry
// the offset it restarted at and its journal's key from its first report
// in PhaseCopy on, so that a caller can say "resuming at X" before the
// copy and draw its progress from the absolute position; a stopped run's
// Stats.JournalWatermark is where its rerun resumes.
func TestProgressReportsResume(t *testing.T) {
	src, s, d, opts := evidenceCase(t, 3)
	var first []ProgressReport
	opts.Progress = ProgressFunc(func(sn ProgressReport) {
		if sn.Phase == PhaseCopy && len(first) == 0 {
			first = append(first, sn)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	// Stopped once a journal save holds a watermark past 0 (not after a
	// number of writes: on a loaded machine forty writes can come before
	// the first save, and the rerun then rightly resumes from 0).
	ws := &watermarkStore{JournalStore: opts.Journal}
	opts.Journal = ws
	var n atomic.Int64
	d.AfterWrite = func(_, _ int64) { // called by several writers at once
		time.Sleep(200 * time.Microsecond) // a slow disk: the journal saves between writes
		if n.Add(1) >= 10 && ws.max.Load() > 0 {
			cancel()
		}
	}
	stopped, err := Sync(ctx, s, d, opts)
	d.AfterWrite = nil
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	if len(first) != 1 || first[0].ResumedFrom != 0 || first[0].Journal == "" {
		t.Fatalf("the first run's first copy snapshot: %+v; want ResumedFrom 0 and a journal key", first)
	}
	key := first[0].Journal
	first = nil
	st, err := Sync(context.Background(), s, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Resumed || st.ResumedFrom == 0 || st.ResumedFrom != stopped.JournalWatermark {
		t.Fatalf("the rerun resumed %v from %d; the stopped run's journal was saved at %d", st.Resumed, st.ResumedFrom, stopped.JournalWatermark)
	}
	if len(first) != 1 {
		t.Fatal("no snapshot in PhaseCopy")
	}
	sn := first[0]
	if sn.ResumedFrom != st.ResumedFrom || sn.Journal != key || sn.Compared != 0 || sn.Total != int64(len(src))-st.ResumedFrom {
		t.Errorf("first copy snapshot of the rerun: %+v; want ResumedFrom %d, journal %s, Total %d", sn, st.ResumedFrom, key, int64(len(src))-st.ResumedFrom)
	}
	if !bytes.Equal(d.Bytes(), src) {
		t.Fatal("target differs")
	}
}

// watermarkStore keeps the highest watermark saved through it.
type watermarkStore struct {
	JournalStore
	max atomic.Int64
}

func (s *watermarkStore) Save(ctx context.Context, key string, data []byte) error {
	err := s.JournalStore.Save(ctx, key, data)
	if rec, derr := decodeJournal(data); err == nil && derr == nil && rec.Watermark > s.max.Load() {
		s.max.Store(rec.Watermark)
	}
	return err
}
