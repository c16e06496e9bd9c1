package transfer

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// interrupted runs a Sync of s onto d and cancels it after a few writes,
// as SIGINT would; it returns the watermark the journal was left at.
func interrupted(t *testing.T, s, d *memDisk, opts *Options, after int64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Stopped after that many writes and once a journal save holds a
	// watermark past 0, on a slowed target: on a loaded machine the
	// writes can come before the first save.
	ws, ok := opts.Journal.(*watermarkStore)
	if !ok {
		ws = &watermarkStore{JournalStore: opts.Journal}
		opts.Journal = ws
	}
	var n atomic.Int64
	d.AfterWrite = func(_, _ int64) { // called by several writers at once
		time.Sleep(200 * time.Microsecond)
		if n.Add(1) >= after && ws.max.Load() > 0 {
			cancel()
		}
	}
	_, err := Sync(ctx, s, d, opts)
	d.AfterWrite = nil
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: got %v, want context.Canceled", err)
	}
}

func evidenceCase(t *testing.T, seed uint64) (src []byte, s, d *memDisk, opts *Options) {
	rng := rand.New(rand.NewPCG(seed, 77))
	const bs = 4096
	src = randImage(rng, 2<<20, bs)
	s = newMemDisk(bytes.Clone(src), "src")
	d = newMemDisk(mutate(rng, src, bs, 200), "dst")
	opts = &Options{BlockSize: bs, Journal: &MemStore{}, JournalBytes: 64 << 10, JournalInterval: time.Millisecond,
		WriteSize: 8 << 10, Concurrency: 2}
	return
}

// TestCleanStopResumes: a cancelled run records evidence and a rerun with
// nothing written in between resumes from the watermark.
func TestCleanStopResumes(t *testing.T) {
	src, s, d, opts := evidenceCase(t, 1)
	interrupted(t, s, d, opts, 40)
	opts.Verify = true
	st, err := Sync(context.Background(), s, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Resumed || st.ResumedFrom == 0 || st.JournalDiscarded {
		t.Fatalf("rerun after a clean stop did not resume: %+v", st)
	}
	if !bytes.Equal(d.Bytes(), src) {
		t.Fatal("target differs")
	}
	if d.incomplete {
		t.Fatal("target still marked incomplete after success")
	}
}

// TestForeignWriteBetweenRuns: a write to the target between an
// interrupted run and its rerun, below the watermark, must not be trusted
// away: the rerun compares everything and ends identical.
func TestForeignWriteBetweenRuns(t *testing.T) {
	src, s, d, opts := evidenceCase(t, 2)
	interrupted(t, s, d, opts, 40)
	// Another program writes below the watermark: block 0.
	d.WriteAt(bytes.Repeat([]byte{0xEE}, 4096), 0)
	st, err := Sync(context.Background(), s, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	if st.Resumed || !st.JournalDiscarded || !strings.Contains(st.JournalDiscardedReason, "written since") {
		t.Fatalf("rerun trusted a journal of a target written since: %+v", st)
	}
	if !bytes.Equal(d.Bytes(), src) {
		t.Fatal("target differs from the source after a rerun that exited without error")
	}
}

// TestNoWitnessNoResume: a target that cannot show that nothing else
// wrote it is compared again, unless the caller assumes exclusive use.
func TestNoWitnessNoResume(t *testing.T) {
	for _, assume := range []bool{false, true} {
		src, s, d, opts := evidenceCase(t, 3)
		tgt := bareTarget{d}
		ctx, cancel := context.WithCancel(context.Background())
		var n atomic.Int64
		d.AfterWrite = func(_, _ int64) { // called by several writers at once
			if n.Add(1) == 40 {
				cancel()
			}
		}
		// bareTarget hides the Identifier too: give it one back.
		idt := idTarget{tgt, "dst"}
		if _, err := Sync(ctx, s, idt, opts); !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		cancel()
		d.AfterWrite = nil
		opts.AssumeExclusive = assume
		st, err := Sync(context.Background(), s, idt, opts)
		if err != nil {
			t.Fatal(err)
		}
		if assume != st.Resumed || (!assume && !strings.Contains(st.JournalDiscardedReason, "cannot show")) {
			t.Fatalf("AssumeExclusive %v: %+v", assume, st)
		}
		if !bytes.Equal(d.Bytes(), src) {
			t.Fatal("target differs")
		}
	}
}

type idTarget struct {
	disk.Target
	id string
}

func (t idTarget) Identity() string { return t.id }

// TestFailedFlushPoisons: the final flush fails (EIO). The journal must
// not be trusted by the rerun, which reads the disks with O_DIRECT.
func TestFailedFlushPoisons(t *testing.T) {
	src, s, d, opts := evidenceCase(t, 4)
	d.FailFlush.Store(true)
	_, err := Sync(context.Background(), s, d, opts)
	var we *WriteError
	if !errors.As(err, &we) || we.Op != "flush" {
		t.Fatalf("got %v, want a failed flush", err)
	}
	d.FailFlush.Store(false)
	var direct blockdiff.DirectMode
	opts.hook = func(r *run) { direct = r.c.DirectReads }
	st, err := Sync(context.Background(), s, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	if st.Resumed || !st.JournalDiscarded || !strings.Contains(st.JournalDiscardedReason, "flush failed") {
		t.Fatalf("rerun after a failed flush: %+v", st)
	}
	if direct != blockdiff.DirectAlways {
		t.Fatalf("rerun after a failed flush read with direct mode %v, want DirectAlways", direct)
	}
	if !bytes.Equal(d.Bytes(), src) {
		t.Fatal("target differs")
	}
}

// TestDirStoreRefusesNonJournals: a FIFO, a device, a symlink to
// /dev/zero and an oversized file in a journal's place are refused before
// they are read; temporary files of killed saves are removed.
func TestDirStoreRefusesNonJournals(t *testing.T) {
	dir := t.TempDir()
	st := DirStore{Dir: dir}
	ctx := context.Background()
	key := "00ff"
	file := filepath.Join(dir, key+".journal")
	check := func(what string) {
		t.Helper()
		done := make(chan error, 1)
		go func() { _, err := st.Load(ctx, key); done <- err }()
		select {
		case err := <-done:
			if err == nil || !errors.Is(err, ErrJournalMismatch) || !strings.Contains(err.Error(), file) {
				t.Fatalf("%s: got %v, want a refusal naming %s", what, err, file)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Load blocked", what)
		}
		os.Remove(file)
	}
	if err := syscall.Mkfifo(file, 0o600); err != nil {
		t.Fatal(err)
	}
	check("a FIFO")
	if err := os.Symlink("/dev/zero", file); err != nil {
		t.Fatal(err)
	}
	check("a symlink to /dev/zero")
	if err := os.WriteFile(file, make([]byte, 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	check("an oversized file")

	stale := filepath.Join(dir, key+".tmp-12345")
	if err := os.WriteFile(stale, []byte("half a journal"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.Save(ctx, key, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary journal of a killed save left behind: %v", err)
	}
}

// TestBadOptionsChangeNothing: an option only blockdiff checks (a refine
// size that does not divide the block size) is refused before the target
// is grown, with transfer's sentinel.
func TestBadOptionsChangeNothing(t *testing.T) {
	s := newMemDisk(make([]byte, 64<<10), "src")
	d := newMemDisk(make([]byte, 16<<10), "dst")
	_, err := Sync(context.Background(), s, d, &Options{BlockSize: 4096, RefineSize: 1000, Journal: &MemStore{}})
	if !errors.Is(err, ErrBadOptions) || !errors.Is(err, blockdiff.ErrBadOptions) {
		t.Fatalf("got %v, want transfer.ErrBadOptions wrapping blockdiff's", err)
	}
	if d.Size() != 16<<10 || d.watches != 0 {
		t.Fatalf("the target was changed before the options were checked: size %d, %d watches", d.Size(), d.watches)
	}
}

// stallTarget is a target whose service stopped answering: WriteAt never
// returns; WriteAtContext returns when its context is cancelled.
type stallTarget struct {
	*memDisk
	never chan struct{}
}

func (s stallTarget) WriteAt(p []byte, off int64) (int, error) {
	<-s.never
	return 0, errors.New("unreachable")
}

func (s stallTarget) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.never:
		return 0, errors.New("unreachable")
	}
}

// TestCancelReachesStalledWrites: a cancelled run returns promptly even
// when its writes are stuck in a service that stopped answering.
func TestCancelReachesStalledWrites(t *testing.T) {
	_, s, d, opts := evidenceCase(t, 6)
	tgt := stallTarget{d, make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := Sync(ctx, s, tgt, opts); done <- err }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	began := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		t.Logf("returned %v after the cancel", time.Since(began))
	case <-time.After(2 * time.Second):
		t.Fatal("a cancelled run was still waiting for stalled writes 2 s later")
	}
}
