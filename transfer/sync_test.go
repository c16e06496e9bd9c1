package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// randImage returns a disk image of n bytes: blocks of random data, runs
// of zeros, and blocks with a few bytes set.
func randImage(rng *rand.Rand, n, bs int) []byte {
	b := make([]byte, n)
	for off := 0; off < n; {
		l := min(bs*(1+rng.IntN(8)), n-off)
		switch rng.IntN(4) {
		case 0, 1:
			for i := off; i < off+l; i++ {
				b[i] = byte(rng.Uint32())
			}
		case 2: // zeros
		case 3:
			for range 3 {
				b[off+rng.IntN(l)] = byte(1 + rng.IntN(255))
			}
		}
		off += l
	}
	return b
}

// mutate returns a copy of img with k random changes: blocks rewritten,
// zeroed, or a single byte flipped.
func mutate(rng *rand.Rand, img []byte, bs, k int) []byte {
	b := bytes.Clone(img)
	if len(b) == 0 {
		return b
	}
	for range k {
		off := rng.IntN(len(b))
		l := min(1+rng.IntN(3*bs), len(b)-off)
		switch rng.IntN(3) {
		case 0:
			for i := off; i < off+l; i++ {
				b[i] = byte(rng.Uint32())
			}
		case 1:
			clear(b[off : off+l])
		case 2:
			b[off] ^= 0x5a
		}
	}
	return b
}

// expected returns the bytes of blocks of the absolute bs grid, over
// [0,len(src)), that differ between src and the old target (zeros past its
// end), split by whether the source block is all zeros.
func expected(src, old []byte, bs int) (data, zero int64) {
	for off := 0; off < len(src); off += bs {
		e := min(off+bs, len(src))
		t := make([]byte, e-off)
		if off < len(old) {
			copy(t, old[off:min(e, len(old))])
		}
		if bytes.Equal(src[off:e], t) {
			continue
		}
		if isZeroBytes(src[off:e]) {
			zero += int64(e - off)
		} else {
			data += int64(e - off)
		}
	}
	return data, zero
}

func TestSyncProperty(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	iters := 40
	if testing.Short() {
		iters = 12
	}
	for it := range iters {
		bs := []int{512, 4096, 16384, 65536}[rng.IntN(4)]
		align := []int64{1, 512, 4096}[rng.IntN(3)]
		maxWrite := []int64{0, 8192, 65536, 1 << 20}[rng.IntN(4)]
		maxWrite = max(maxWrite, align)
		if maxWrite == 1 {
			maxWrite = 0
		}
		zeroer := rng.IntN(2) == 0
		n := (64 + rng.IntN(1024)) * 1024
		if rng.IntN(3) == 0 {
			n += 512 * rng.IntN(8) // not a multiple of the block size
		}
		if rng.IntN(4) == 0 {
			n += 1 + rng.IntN(511) // not a multiple of 512
		}
		src := randImage(rng, n, bs)
		old := mutate(rng, src, bs, 1+rng.IntN(30))
		switch rng.IntN(4) {
		case 0: // a smaller target, grown
			old = old[:rng.IntN(len(old))]
		case 1: // a longer target, its excess kept
			old = append(old, randImage(rng, 1+rng.IntN(64<<10), bs)...)
		}
		name := fmt.Sprintf("%d/bs=%d,align=%d,max=%d,zeroer=%v,src=%d,dst=%d", it, bs, align, maxWrite, zeroer, len(src), len(old))
		t.Run(name, func(t *testing.T) {
			s := newMemDisk(bytes.Clone(src), "src")
			d := newMemDisk(bytes.Clone(old), "dst")
			d.Align, d.MaxWrite = align, maxWrite
			var dt disk.Target = d
			if !zeroer {
				dt = hideZero(d)
			}
			opts := &Options{
				BlockSize:          bs,
				Concurrency:        1 + rng.IntN(6),
				CompareConcurrency: 1 + rng.IntN(3),
				WriteSize:          int64(1+rng.IntN(8)) * 16 << 10,
				Journal:            &MemStore{},
				JournalBytes:       int64(64+rng.IntN(512)) << 10,
				Verify:             true,
			}
			st, err := Sync(context.Background(), s, dt, opts)
			if err != nil {
				t.Fatal(err)
			}
			got := d.Bytes()
			size := max(len(src), len(old))
			if len(got) != size {
				t.Fatalf("target size %d, want %d", len(got), size)
			}
			if !bytes.Equal(got[:len(src)], src) {
				t.Fatalf("target differs from source at %d", firstDiff(got, src))
			}
			if len(old) > len(src) && !bytes.Equal(got[len(src):], old[len(src):]) {
				t.Fatalf("excess not kept")
			}
			checkOps(t, d, align, maxWrite, int64(size))
			data, zero := expected(src, old, bs)
			exact := int64(bs)%align == 0 && int64(len(src))%align == 0 && int64(len(src))%512 == 0
			if exact {
				if st.Written != data || st.Zeroed != zero {
					t.Fatalf("written %d zeroed %d, want %d and %d (stats %+v)", st.Written, st.Zeroed, data, zero, st)
				}
				if want := st.Compared - data - zero - st.ExcessKept; st.Equal != want {
					t.Fatalf("equal %d, want %d", st.Equal, want)
				}
			} else if st.Written+st.Zeroed < data+zero {
				t.Fatalf("written %d + zeroed %d < changed %d", st.Written, st.Zeroed, data+zero)
			}
			if st.Compared != int64(size) {
				t.Fatalf("compared %d, want %d", st.Compared, size)
			}
			if !st.Verified {
				t.Fatal("not verified")
			}
		})
	}
}

// testSeed returns the seed of a randomised test: $TRANSFER_SEED, or the
// time. It is logged so that a failure can be replayed.
func testSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TRANSFER_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	t.Logf("seed %d (set TRANSFER_SEED to replay)", seed)
	return seed
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// checkOps asserts that every operation the target received was aligned
// (but for the end of the disk) and at most its maximum write, and that
// no two overlap.
func checkOps(t *testing.T, d *memDisk, align, maxWrite, size int64) {
	t.Helper()
	var prevEnd int64
	for _, o := range d.recorded() {
		if o.Off%align != 0 || (o.Len%align != 0 && o.Off+o.Len != size) {
			t.Fatalf("unaligned op %+v (align %d)", o, align)
		}
		if o.Kind != "zero" && maxWrite > 0 && o.Len > maxWrite {
			t.Fatalf("write %+v larger than %d", o, maxWrite)
		}
		if o.Off < prevEnd {
			t.Fatalf("op %+v overlaps the one ending at %d", o, prevEnd)
		}
		prevEnd = o.Off + o.Len
	}
}

func TestSeedEmptyTargetWritesNoZeroBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const bs = 4096
	src := randImage(rng, 2<<20, bs)
	s := newMemDisk(bytes.Clone(src), "src")
	d := newMemDisk(nil, "dst")
	d.Align = 512
	st, err := Seed(context.Background(), s, d, &Options{BlockSize: bs, Journal: &MemStore{}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.Bytes(), src) {
		t.Fatal("target differs")
	}
	if !st.ProvenEmpty || st.ResizedFrom != 0 || st.Zeroed != 0 || st.Zeroes != 0 {
		t.Fatalf("stats %+v", st)
	}
	var nonZero int64
	for off := 0; off < len(src); off += bs {
		if !isZeroBytes(src[off:min(off+bs, len(src))]) {
			nonZero += int64(min(bs, len(src)-off))
		}
	}
	if st.Written != nonZero {
		t.Fatalf("written %d, want the %d bytes of non-zero blocks", st.Written, nonZero)
	}
	for _, o := range d.recorded() {
		if o.Kind == "zero" {
			t.Fatalf("zero op %+v", o)
		}
		for off := o.Off; off < o.Off+o.Len; off += bs {
			if isZeroBytes(src[off:min(off+bs, int64(len(src)))]) {
				t.Fatalf("write %+v includes the zero block at %d", o, off)
			}
		}
	}
	// Nothing of the target was read.
	if st.TargetRead != 0 {
		t.Fatalf("target read %d bytes", st.TargetRead)
	}
	// The source's holes were not read: its allocation map skipped them.
	if st.SourceRead > 3*nonZero {
		t.Fatalf("source read %d bytes for %d of data", st.SourceRead, nonZero)
	}
}

func TestSeedNonEmptyTargetIsCleared(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const bs = 4096
	src := randImage(rng, 1<<20, bs)
	garbage := randImage(rng, 1<<20, bs)
	for _, tc := range []struct {
		name string
		wrap func(*memDisk) disk.Target
	}{
		{"mapped", func(d *memDisk) disk.Target { return d }},
		{"unmapped", func(d *memDisk) disk.Target { return hideMap(d) }},
		{"nozeroer", func(d *memDisk) disk.Target { return hideZero(d) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newMemDisk(bytes.Clone(garbage), "dst")
			st, err := Seed(context.Background(), newMemDisk(bytes.Clone(src), "src"), tc.wrap(d), &Options{BlockSize: bs, Journal: &MemStore{}, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d.Bytes(), src) {
				t.Fatal("target differs")
			}
			if st.ProvenEmpty || st.Zeroed == 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestWriteFailureThenRerun(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const bs = 4096
	src := randImage(rng, 4<<20, bs)
	old := randImage(rng, 4<<20, bs)
	s := newMemDisk(bytes.Clone(src), "src")
	d := newMemDisk(bytes.Clone(old), "dst")
	d.FailAfter.Store(1 << 20)
	store := &MemStore{}
	opts := &Options{BlockSize: bs, Journal: store, JournalBytes: 128 << 10, WriteSize: 64 << 10, Concurrency: 3}
	_, err := Sync(context.Background(), s, d, opts)
	var we *WriteError
	if !errors.As(err, &we) || we.Op != "write" || !errors.Is(err, errInjected) {
		t.Fatalf("got %v, want a *WriteError wrapping the injected failure", err)
	}
	if we.Off < 0 || we.Len <= 0 {
		t.Fatalf("write error %+v", we)
	}
	if len(store.Keys()) != 1 {
		t.Fatal("no journal kept")
	}
	d.FailAfter.Store(0)
	opts.Verify = true
	st, err := Sync(context.Background(), s, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.Bytes(), src) {
		t.Fatal("target differs after rerun")
	}
	// A failed write poisons the journal: nothing the failed run wrote is
	// trusted, so the rerun compares everything.
	if st.Resumed || !st.JournalDiscarded || !strings.Contains(st.JournalDiscardedReason, "failed to write") {
		t.Fatalf("rerun resumed from a poisoned journal: %+v", st)
	}
	if len(store.Keys()) != 0 {
		t.Fatal("journal not removed after success")
	}
}

func TestSourceReadFailure(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	const bs = 4096
	src := randImage(rng, 1<<20, bs)
	for i := range src[300<<10 : 304<<10] {
		src[300<<10+i] = 0xaa // data where the read fails
	}
	for _, skip := range []int64{0, 1} { // 0: comparison fails; 1: the copy does
		s := newMemDisk(bytes.Clone(src), "src")
		s.FailReadsAt(301<<10, int64(skip))
		d := newMemDisk(make([]byte, len(src)), "dst")
		_, err := Sync(context.Background(), s, d, &Options{BlockSize: bs, NoJournal: true})
		var re *ReadError
		if !errors.As(err, &re) || re.Side != blockdiff.SourceSide || re.Off > 301<<10 || re.Off+re.Len <= 301<<10 {
			t.Fatalf("skip %d: got %v, want a source ReadError covering %d", skip, err, 301<<10)
		}
	}
}

func TestPowerLossResume(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	const bs = 4096
	resumed := 0
	for i := range 20 {
		src := randImage(rng, 1<<20+rng.IntN(4)*512, bs)
		old := mutate(rng, src, bs, 60)
		if i%3 == 0 {
			old = old[:len(old)/2] // grown first
		}
		s := newMemDisk(bytes.Clone(src), "src")
		d := newMemDisk(bytes.Clone(old), "dst")
		d.Align = 512
		copyFn := Sync
		if i%4 == 1 {
			copyFn, d = Seed, newMemDisk(nil, "dst") // a new target, seeded
		}
		store := &MemStore{}
		opts := &Options{BlockSize: bs, Journal: store, JournalBytes: 32 << 10, JournalInterval: time.Millisecond,
			WriteSize: 8 << 10, Concurrency: 3, CompareConcurrency: 2, Durability: DurableCheckpoint}
		ctx, cancel := context.WithCancel(context.Background())
		// Stop at a random write or flush: a flush interrupted is a
		// crash before the journal could be saved.
		stopAt := int64(1 + rng.IntN(60))
		var n atomic.Int64
		event := func() {
			if n.Add(1) == stopAt {
				cancel()
			}
		}
		d.AfterWrite = func(_, _ int64) { event() }
		d.BeforeFlush = event
		_, err := copyFn(ctx, s, d, opts)
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("run %d: %v", i, err)
		}
		d.crash()
		d.AfterWrite, d.BeforeFlush = nil, nil
		opts.Verify = true
		st, err := copyFn(context.Background(), s, d, opts)
		if err != nil {
			t.Fatalf("run %d (stopped after %d writes): rerun: %v", i, stopAt, err)
		}
		if !bytes.Equal(d.Bytes(), src) {
			t.Fatalf("run %d: target differs at %d after crash and rerun", i, firstDiff(d.Bytes(), src))
		}
		if st.Resumed {
			resumed++
		}
	}
	t.Logf("%d of 20 reruns resumed from a journal", resumed)
	if resumed == 0 {
		t.Fatal("no rerun resumed")
	}
}

func TestCancelReturnsPromptlyWithoutLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	rng := rand.New(rand.NewPCG(10, 11))
	const bs = 4096
	src := randImage(rng, 4<<20, bs)
	s := newMemDisk(bytes.Clone(src), "src")
	d := newMemDisk(make([]byte, len(src)), "dst")
	d.BeforeWrite = func(_, _ int64) { time.Sleep(2 * time.Millisecond) }
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int64
	var cancelled time.Time
	var once sync.Once
	d.AfterWrite = func(_, _ int64) {
		if n.Add(1) == 10 {
			once.Do(func() { cancelled = time.Now(); cancel() })
		}
	}
	_, err := Sync(ctx, s, d, &Options{BlockSize: bs, WriteSize: 16 << 10, Concurrency: 8, BandwidthLimit: 1 << 20, Journal: &MemStore{}})
	returned := time.Now()
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if el := returned.Sub(cancelled); el > time.Second {
		t.Fatalf("returned %v after cancellation", el)
	}
	waitGoroutines(t, before)
}

func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	var now int
	for range 200 {
		if now = runtime.NumGoroutine(); now <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	t.Fatalf("%d goroutines, %d before:\n%s", now, before, buf[:runtime.Stack(buf, true)])
}

func TestJournalFromAnotherRunRefused(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 13))
	const bs = 4096
	src := randImage(rng, 1<<20, bs)
	d := newMemDisk(randImage(rng, 1<<20, bs), "dst")
	d.FailAfter.Store(256 << 10)
	store := &MemStore{}
	// One writer: writes finish in order, so the failure leaves a
	// journal behind whatever the timing.
	opts := &Options{BlockSize: bs, Journal: store, JournalBytes: 64 << 10, WriteSize: 16 << 10, Concurrency: 1}
	if _, err := Sync(context.Background(), newMemDisk(bytes.Clone(src), "src-A"), d, opts); !errors.Is(err, errInjected) {
		t.Fatalf("first run: %v", err)
	}
	d.FailAfter.Store(0)
	other := newMemDisk(bytes.Clone(src), "src-B")
	_, err := Sync(context.Background(), other, d, opts)
	var je *JournalError
	if !errors.As(err, &je) || !errors.Is(err, ErrJournalMismatch) {
		t.Fatalf("got %v, want a journal mismatch", err)
	}
	t.Log(err)
	// Another block size is another run too.
	o2 := *opts
	o2.BlockSize = 8192
	if _, err := Sync(context.Background(), newMemDisk(bytes.Clone(src), "src-A"), d, &o2); !errors.Is(err, ErrJournalMismatch) {
		t.Fatalf("other block size: got %v", err)
	}
	o2 = *opts
	o2.DiscardBadJournal = true
	o2.Verify = true
	st, err := Sync(context.Background(), other, d, &o2)
	if err != nil {
		t.Fatal(err)
	}
	if !st.JournalDiscarded || st.Resumed {
		t.Fatalf("stats %+v", st)
	}
}

func TestCorruptJournalRefused(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 15))
	const bs = 4096
	src := randImage(rng, 1<<20, bs)
	s := newMemDisk(bytes.Clone(src), "src")
	d := newMemDisk(randImage(rng, 1<<20, bs), "dst")
	d.FailAfter.Store(256 << 10)
	store := &MemStore{}
	// One writer: writes finish in order, so the failure leaves a
	// journal behind whatever the timing.
	opts := &Options{BlockSize: bs, Journal: store, JournalBytes: 64 << 10, WriteSize: 16 << 10, Concurrency: 1}
	if _, err := Sync(context.Background(), s, d, opts); !errors.Is(err, errInjected) {
		t.Fatalf("first run: %v", err)
	}
	d.FailAfter.Store(0)
	key := store.Keys()[0]
	good, _ := store.Load(context.Background(), key)
	if _, err := decodeJournal(good); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"truncated": good[:len(good)-7],
		"flipped":   append(append([]byte(nil), good[:20]...), append([]byte{good[20] ^ 1}, good[21:]...)...),
		"empty":     {},
		"foreign":   []byte("not a journal at all, but long enough to have a header and a checksum......"),
	} {
		store.Save(context.Background(), key, bad)
		_, err := Sync(context.Background(), s, d, opts)
		if !errors.Is(err, ErrJournalMismatch) {
			t.Fatalf("%s journal: got %v", name, err)
		}
	}
	// A well-formed journal whose watermark is outside the range.
	rec, _ := decodeJournal(good)
	rec.Watermark = 1 << 40
	b, _ := encodeJournal(rec)
	store.Save(context.Background(), key, b)
	if _, err := Sync(context.Background(), s, d, opts); !errors.Is(err, ErrJournalMismatch) {
		t.Fatalf("out-of-range watermark: got %v", err)
	}
}

func TestLimiterFakeClock(t *testing.T) {
	c := &fakeClock{}
	l := newLimiter(1000, 100, c)
	ctx := context.Background()
	if err := l.wait(ctx, 100); err != nil || c.slept != 0 {
		t.Fatalf("burst waited %v", time.Duration(c.slept))
	}
	if err := l.wait(ctx, 500); err != nil || time.Duration(c.slept) != 500*time.Millisecond {
		t.Fatalf("500 bytes at 1000/s slept %v", time.Duration(c.slept))
	}
	// Tokens refill with time, up to the burst only.
	c.now += int64(10 * time.Second)
	c.slept = 0
	if err := l.wait(ctx, 300); err != nil || time.Duration(c.slept) != 200*time.Millisecond {
		t.Fatalf("after idling, 300 bytes slept %v, want 200ms", time.Duration(c.slept))
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.wait(cctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	var nl *limiter
	if err := nl.wait(ctx, 1<<40); err != nil {
		t.Fatal(err)
	}
}

func TestBandwidthLimitRespected(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 17))
	const bs = 4096
	src := randImage(rng, 2<<20, bs)
	c := &fakeClock{}
	const rate = 1 << 20
	d := newMemDisk(make([]byte, len(src)), "dst")
	st, err := Sync(context.Background(), newMemDisk(bytes.Clone(src), "src"), hideZero(d),
		&Options{BlockSize: bs, BandwidthLimit: rate, WriteSize: 64 << 10, Concurrency: 1, NoJournal: true, clock: c})
	if err != nil {
		t.Fatal(err)
	}
	sent := st.Written // zeros need no writing: the target already reads zeros
	want := time.Duration(float64(sent-64<<10) / rate * float64(time.Second))
	got := time.Duration(c.slept)
	if got < want*95/100 || got > want*105/100 {
		t.Fatalf("%d bytes at %d B/s slept %v, want about %v", sent, rate, got, want)
	}
}

func TestMemoryBudgetNeverExceeded(t *testing.T) {
	rng := rand.New(rand.NewPCG(18, 19))
	const bs = 4096
	src := randImage(rng, 4<<20, bs)
	d := newMemDisk(make([]byte, len(src)), "dst")
	var maxConc atomic.Int64
	d.BeforeWrite = func(_, _ int64) {
		time.Sleep(100 * time.Microsecond)
	}
	var r *run
	const budget = 128 << 10
	opts := &Options{BlockSize: bs, MemoryBudget: budget, WriteSize: 32 << 10, Concurrency: 8, NoJournal: true,
		hook: func(x *run) { r = x }}
	d.AfterWrite = func(_, _ int64) {
		if c := d.InFlight(); c > maxConc.Load() {
			maxConc.Store(c)
		}
	}
	if _, err := Sync(context.Background(), newMemDisk(bytes.Clone(src), "src"), hideZero(d), opts); err != nil {
		t.Fatal(err)
	}
	if pk := r.pool.peak.Load(); pk > budget || pk < 32<<10 {
		t.Fatalf("peak buffer bytes %d, budget %d", pk, budget)
	}
	if r.pool.held.Load() != 0 {
		t.Fatalf("%d bytes not returned to the pool", r.pool.held.Load())
	}
	t.Logf("peak %d bytes of %d, writes in flight at most %d", r.pool.peak.Load(), budget, maxConc.Load())
}

func TestVerifyFindsMismatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 21))
	const bs = 4096
	src := randImage(rng, 1<<20, bs)
	for i := range src[500<<10 : 504<<10] {
		src[500<<10+i] = byte(i | 1)
	}
	d := newMemDisk(make([]byte, len(src)), "dst")
	d.DropWritesAt(501 << 10) // a lying target: acknowledges, writes nothing
	_, err := Sync(context.Background(), newMemDisk(bytes.Clone(src), "src"), d, &Options{BlockSize: bs, Verify: true, WriteSize: 4096, NoJournal: true})
	var ve *VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, ErrVerifyMismatch) || ve.Off != 500<<10 {
		t.Fatalf("got %v, want a VerifyError at %d", err, 500<<10)
	}
	if d.CacheDrops() == 0 || d.Flushes() == 0 {
		t.Fatal("target not flushed and its cache not dropped before verifying")
	}
}

func TestLiveSource(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 23))
	const bs = 4096
	src := randImage(rng, 1<<20, bs)
	for _, allow := range []bool{false, true} {
		s := newMemDisk(bytes.Clone(src), "src")
		d := newMemDisk(make([]byte, len(src)), "dst")
		var once sync.Once
		d.AfterWrite = func(_, _ int64) {
			once.Do(func() { s.WriteAt([]byte{1, 2, 3}, 12345) })
		}
		store := &MemStore{}
		st, err := Sync(context.Background(), s, d, &Options{BlockSize: bs, AllowLive: allow, Journal: store})
		if allow {
			if err != nil || !st.SourceChanged {
				t.Fatalf("AllowLive: %v, %+v", err, st)
			}
		} else if !errors.Is(err, ErrSourceChanged) {
			t.Fatalf("got %v, want ErrSourceChanged", err)
		}
		if len(store.Keys()) != 0 {
			t.Fatal("journal kept")
		}
	}
}

func TestTargetSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(24, 25))
	const bs = 4096
	src := randImage(rng, 256<<10, bs)
	ctx := context.Background()
	opts := &Options{BlockSize: bs, NoJournal: true, Verify: true}

	small := newMemDisk(make([]byte, 100<<10), "dst")
	if _, err := Sync(ctx, newMemDisk(bytes.Clone(src), "src"), hideResize(small), opts); !errors.Is(err, ErrTargetTooSmall) {
		t.Fatalf("got %v, want ErrTargetTooSmall", err)
	}
	if small.Size() != 100<<10 || len(small.recorded()) != 0 {
		t.Fatal("refused target was changed")
	}
	st, err := Sync(ctx, newMemDisk(bytes.Clone(src), "src"), small, opts)
	if err != nil || st.ResizedFrom != 100<<10 || !bytes.Equal(small.Bytes(), src) {
		t.Fatalf("grown: %v %+v", err, st)
	}

	tail := randImage(rng, 64<<10, bs)
	for _, trunc := range []bool{false, true} {
		long := newMemDisk(append(bytes.Clone(src), tail...), "dst")
		o := *opts
		o.TruncateExcess = trunc
		st, err := Sync(ctx, newMemDisk(bytes.Clone(src), "src"), long, &o)
		if err != nil {
			t.Fatal(err)
		}
		got := long.Bytes()
		if trunc {
			if !bytes.Equal(got, src) || st.ResizedFrom != int64(len(src)+len(tail)) {
				t.Fatalf("truncated: %+v", st)
			}
		} else if !bytes.Equal(got, append(bytes.Clone(src), tail...)) || st.ExcessKept != int64(len(tail)) {
			t.Fatalf("kept: %+v", st)
		}
	}
}

func TestSameDiskRefused(t *testing.T) {
	d := newMemDisk(make([]byte, 4096), "disk")
	if _, err := Sync(context.Background(), d, d, nil); !errors.Is(err, ErrSameDisk) {
		t.Fatalf("got %v", err)
	}
}

func TestRangesByConcurrentWorkers(t *testing.T) {
	rng := rand.New(rand.NewPCG(26, 27))
	const bs = 4096
	src := randImage(rng, 2<<20, bs)
	s := newMemDisk(bytes.Clone(src), "src")
	d := newMemDisk(mutate(rng, src, bs, 50), "dst")
	store := &MemStore{}
	const slices = 3
	size := int64(len(src))
	step := roundUp(size/slices, bs)
	var wg sync.WaitGroup
	errs := make([]error, slices)
	stats := make([]Stats, slices)
	for i := range slices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(i) * step
			length := step
			if i == slices-1 {
				length = 0
			}
			stats[i], errs[i] = Sync(context.Background(), s, d, &Options{BlockSize: bs, Offset: off, Length: length, Journal: store, Verify: true})
		}()
	}
	wg.Wait()
	var compared int64
	for i := range slices {
		if errs[i] != nil {
			t.Fatalf("slice %d: %v", i, errs[i])
		}
		compared += stats[i].Compared
	}
	if compared != size || !bytes.Equal(d.Bytes(), src) {
		t.Fatalf("compared %d of %d; equal %v", compared, size, bytes.Equal(d.Bytes(), src))
	}
	if a, b := journalKey("dst", 0, step), journalKey("dst", step, step); a == b {
		t.Fatal("slices share a journal key")
	}
	if _, err := Sync(context.Background(), s, d, &Options{Offset: 1000}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("unaligned offset: %v", err)
	}
}

func TestProgressPhases(t *testing.T) {
	rng := rand.New(rand.NewPCG(28, 29))
	const bs = 4096
	src := randImage(rng, 1<<20, bs)
	d := newMemDisk(mutate(rng, src, bs, 10), "dst")
	var phases []Phase
	var last ProgressReport
	st, err := Sync(context.Background(), newMemDisk(bytes.Clone(src), "src"), d, &Options{
		BlockSize: bs, Verify: true, NoJournal: true, ProgressInterval: time.Hour,
		Progress: ProgressFunc(func(s ProgressReport) {
			if n := len(phases); n == 0 || phases[n-1] != s.Phase {
				phases = append(phases, s.Phase)
			}
			last = s
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Phase{PhasePrepare, PhaseCopy, PhaseFlush, PhaseVerify, PhaseDone}
	if fmt.Sprint(phases) != fmt.Sprint(want) {
		t.Fatalf("phases %v, want %v", phases, want)
	}
	if last.Written != st.Written || last.Zeroed != st.Zeroed || last.Extents != st.Extents {
		t.Fatalf("last snapshot %+v, stats %+v", last, st)
	}
}

func TestBadOptions(t *testing.T) {
	s, d := newMemDisk(make([]byte, 8192), "a"), newMemDisk(make([]byte, 8192), "b")
	for _, o := range []Options{
		{BlockSize: 1000},
		{Concurrency: -1},
		{MemoryBudget: -5},
		{BandwidthLimit: -1},
		{Offset: 100},
		{Offset: 4096, Length: 100},
		{JournalInterval: time.Microsecond},
	} {
		if _, err := Sync(context.Background(), s, d, &o); !errors.Is(err, ErrBadOptions) {
			t.Errorf("%+v: got %v", o, err)
		}
	}
	d.Align = 4096
	if _, err := Sync(context.Background(), s, d, &Options{MemoryBudget: 1024}); !errors.Is(err, ErrBadOptions) {
		t.Errorf("budget below alignment: got %v", err)
	}
}

// TestCrashModes covers the default durability (DurableEnd): checkpoints
// are saved without flushing, stamped with the boot ID. A process killed
// in the same boot loses no write and must resume; a power loss (unflushed
// writes dropped, then a new boot) must discard the journal and still end
// identical. Either way no flush happens before the end of the run.
func TestCrashModes(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 3))
	const bs = 4096
	for _, powerLoss := range []bool{false, true} {
		var tally rerunTally
		for i := range 20 {
			src := randImage(rng, 1<<20, bs)
			s := newMemDisk(bytes.Clone(src), "src")
			d := newMemDisk(mutate(rng, src, bs, 60), "dst")
			boot := "boot-1"
			store := &MemStore{}
			opts := &Options{BlockSize: bs, Journal: store, JournalBytes: 32 << 10, JournalInterval: time.Millisecond,
				WriteSize: 8 << 10, Concurrency: 3, bootID: func() string { return boot }}
			ctx, cancel := context.WithCancel(context.Background())
			stopAt := int64(5 + rng.IntN(40))
			var writes, flushes, flushesAtStop atomic.Int64
			flushesAtStop.Store(-1)
			d.AfterWrite = func(_, _ int64) {
				if writes.Add(1) == stopAt {
					flushesAtStop.Store(flushes.Load())
					cancel()
				}
			}
			d.BeforeFlush = func() { flushes.Add(1) }
			_, err := Sync(ctx, s, d, opts)
			cancel()
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("run %d: %v", i, err)
			}
			if n := flushesAtStop.Load(); n > 0 {
				t.Fatalf("run %d: %d flushes before the end of an interrupted run", i, n)
			}
			if powerLoss {
				d.crash()
				boot = "boot-2"
			}
			d.AfterWrite, d.BeforeFlush = nil, nil
			opts.Verify = true
			tally.rerun(t, i, src, d, func() (Stats, error) { return Sync(context.Background(), s, d, opts) })
		}
		tally.check(t, "power loss", powerLoss)
	}
}

// rerunTally checks the reruns of a crash test: each must end identical;
// after a reboot no journal may be trusted and some must be discarded;
// without one, some rerun must resume.
type rerunTally struct{ runs, resumed, discarded int }

func (rt *rerunTally) rerun(t *testing.T, i int, src []byte, d *memDisk, run func() (Stats, error)) {
	t.Helper()
	st, err := run()
	if err != nil {
		t.Fatalf("run %d: rerun: %v", i, err)
	}
	if !bytes.Equal(d.Bytes(), src) {
		t.Fatalf("run %d: target differs at %d after the rerun", i, firstDiff(d.Bytes(), src))
	}
	rt.runs++
	if st.Resumed {
		rt.resumed++
	}
	if st.JournalDiscarded {
		rt.discarded++
	}
}

func (rt *rerunTally) check(t *testing.T, crash string, reboot bool) {
	t.Helper()
	t.Logf("%s %v: %d of %d resumed, %d journals discarded", crash, reboot, rt.resumed, rt.runs, rt.discarded)
	switch {
	case reboot && rt.resumed > 0:
		t.Fatalf("%s: a journal saved before the reboot was trusted after it", crash)
	case reboot && rt.discarded == 0:
		t.Fatalf("%s: no journal was discarded after the reboot", crash)
	case !reboot && rt.resumed == 0:
		t.Fatalf("no rerun resumed without a %s", crash)
	}
}
