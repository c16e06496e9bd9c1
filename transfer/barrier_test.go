package transfer

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// behindDisk writes behind as a remote agent's disk does: writes and
// zeroings are queued by the caller's process; Applied hands the queue to
// the host (memDisk.cur, the host's page cache); Flush applies and makes
// durable. A crash of the caller's process loses the queue; a crash of the
// host loses what it did not make durable, and the host boots again with
// another boot ID.
type behindDisk struct {
	*memDisk
	qmu      sync.Mutex
	queue    []func()
	hostBoot string
	queued   atomic.Int64
	barriers atomic.Int64
	onQueue  func(n int64)
}

func (b *behindDisk) WritesBehind() bool { return true }
func (b *behindDisk) HostBootID() string { return b.hostBoot }

func (b *behindDisk) enqueue(f func()) {
	b.qmu.Lock()
	b.queue = append(b.queue, f)
	b.qmu.Unlock()
	if n := b.queued.Add(1); b.onQueue != nil {
		b.onQueue(n)
	}
}

func (b *behindDisk) WriteAt(p []byte, off int64) (int, error) {
	c := bytes.Clone(p)
	b.enqueue(func() { b.memDisk.WriteAt(c, off) })
	return len(p), nil
}

// WriteAtContext is WriteAt: the memDisk's own would bypass the queue.
func (b *behindDisk) WriteAtContext(_ context.Context, p []byte, off int64) (int, error) {
	return b.WriteAt(p, off)
}

func (b *behindDisk) ZeroRange(ctx context.Context, off, n int64) error {
	b.enqueue(func() { b.memDisk.ZeroRange(context.Background(), off, n) })
	return nil
}

func (b *behindDisk) apply() {
	b.qmu.Lock()
	q := b.queue
	b.queue = nil
	b.qmu.Unlock()
	for _, f := range q {
		f()
	}
}

func (b *behindDisk) Applied(ctx context.Context) error {
	b.apply()
	b.barriers.Add(1)
	return ctx.Err()
}

func (b *behindDisk) Flush(ctx context.Context) error {
	b.apply()
	return b.memDisk.Flush(ctx)
}

// TestAppliedBarrier: a target that writes behind and has an applied
// barrier gets journal checkpoints without a flush: each waits for the
// queued writes to reach the host and is stamped with the host's boot.
// When the syncing process dies (its queue lost), a rerun resumes and
// ends identical without comparing again what the journal counts; when
// the host reboots (what it held unflushed lost), the journal is
// discarded and the rerun still ends identical. The reruns do not
// verify: a write the journal counted but the host never got would stay
// wrong.
func TestAppliedBarrier(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 4))
	const bs = 4096
	for _, hostCrash := range []bool{false, true} {
		var tally rerunTally
		for i := range 20 {
			src := randImage(rng, 1<<20, bs)
			s := newMemDisk(bytes.Clone(src), "src")
			d := &behindDisk{memDisk: newMemDisk(mutate(rng, src, bs, 60), "dst"), hostBoot: "host-boot-1"}
			store := &MemStore{}
			opts := &Options{BlockSize: bs, Journal: store, JournalBytes: 32 << 10, JournalInterval: time.Millisecond,
				WriteSize: 8 << 10, Concurrency: 3, bootID: func() string { return "this-machine" }}
			ctx, cancel := context.WithCancel(context.Background())
			stopAt := int64(5 + rng.IntN(40))
			var flushesAtStop atomic.Int64
			flushesAtStop.Store(-1)
			d.onQueue = func(n int64) {
				if n == stopAt {
					flushesAtStop.Store(d.Flushes())
					cancel()
				}
			}
			_, err := Sync(ctx, s, d, opts)
			cancel()
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("run %d: %v", i, err)
			}
			if n := flushesAtStop.Load(); n > 0 {
				t.Fatalf("run %d: %d flushes before the end of an interrupted run", i, n)
			}
			// The syncing process dies: whatever it still queued is gone.
			d.qmu.Lock()
			d.queue = nil
			d.qmu.Unlock()
			if hostCrash {
				d.crash()
				d.hostBoot = "host-boot-2"
			}
			d.onQueue = nil
			tally.rerun(t, i, src, d.memDisk, func() (Stats, error) { return Sync(context.Background(), s, d, opts) })
		}
		tally.check(t, "host crash", hostCrash)
	}
}
