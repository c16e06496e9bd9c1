package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/internal/bootid"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// The contracts a Disk implements, checked at compile time.
var (
	_ disk.Target           = (*Disk)(nil)
	_ disk.Source           = (*Disk)(nil)
	_ disk.Flusher          = (*Disk)(nil)
	_ disk.Zeroer           = (*Disk)(nil)
	_ disk.Resizer          = (*Disk)(nil)
	_ disk.WriteLimits      = (*Disk)(nil)
	_ disk.Identifier       = (*Disk)(nil)
	_ disk.Versioner        = (*Disk)(nil)
	_ transfer.BlockHasher  = (*Disk)(nil)
	_ disk.AllocationMapper = (*Disk)(nil)
	_ disk.CacheDropper     = (*Disk)(nil)
	_ serverDisk            = (*localdisk.Disk)(nil)
)

func newRand(t testing.TB) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, 7))
}

// syncTo runs transfer.Sync from the local file src to the agent's disk.
func syncTo(ctx context.Context, t testing.TB, c *Client, src, disk string, o *transfer.Options) (transfer.Stats, error) {
	t.Helper()
	s, err := localdisk.OpenSource(src, localdisk.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := c.OpenTarget(ctx, disk)
	if err != nil {
		return transfer.Stats{}, err
	}
	st, err := transfer.Sync(ctx, s, d, o)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return st, err
}

// TestSync syncs through an agent: data changes, zeros over data, data
// over zeros, compressible and random data, a target that grows and one
// that is longer; the agent's file ends identical and the engine never
// read the target for comparison.
func TestSync(t *testing.T) {
	rng := newRand(t)
	const bs = 64 << 10
	for _, tc := range []struct {
		name          string
		size, dstSize int
		verify        bool
	}{
		{"same size", 8 << 20, 8 << 20, true},
		{"grows", 6<<20 + 512*3, 5 << 20, false},
		{"longer target", 5 << 20, 6 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := randBytes(rng, tc.size)
			// Compressible stretches, and zeros.
			for i := 0; i < tc.size/bs; i += 5 {
				copy(src[i*bs:], bytes.Repeat([]byte("compressible text "), bs/18))
			}
			for i := 3; i < tc.size/bs; i += 7 {
				clear(src[i*bs : (i+1)*bs])
			}
			dst := make([]byte, tc.dstSize)
			copy(dst, src)
			changeBlocks(rng, dst[:min(tc.size, tc.dstSize)], bs, 10)
			for i := 4; i < tc.dstSize/bs && i < tc.size/bs; i += 11 {
				clear(dst[i*bs : (i+1)*bs]) // data over zeros
			}
			for i := 3; i < tc.dstSize/bs && i < tc.size/bs; i += 7 {
				copy(dst[i*bs:], randBytes(rng, bs)) // zeros over data
			}
			a := startAgent(t, map[string][]byte{"d": dst}, nil)
			srcPath := writeTemp(t, "src.img", src)
			st, err := syncTo(withTimeout(t, 30*time.Second), t, a.client(), srcPath, "d",
				&transfer.Options{NoJournal: true, Verify: tc.verify})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", st)
			want := src
			if tc.dstSize > tc.size {
				want = append(bytes.Clone(src), dst[tc.size:]...)
			}
			sameBytes(t, "agent's disk", a.bytes(t, "d"), want)
			if st.Written == 0 || st.Zeroed == 0 {
				t.Fatalf("nothing written or zeroed: %+v", st)
			}
			if st.TargetRead > 512 {
				t.Fatalf("the engine read %d bytes of the target", st.TargetRead)
			}
			if tc.verify && !st.Verified {
				t.Fatal("not verified")
			}
		})
	}
}

// TestWireBytes counts the bytes between client and agent with a proxy:
// a 64 MiB disk with 1% of its 64 KiB blocks changed (random data, so
// nothing compresses) costs at most 1.02 times the changed bytes, plus
// the hashes, plus a small fixed overhead.
func TestWireBytes(t *testing.T) {
	rng := newRand(t)
	const size, bs = 64 << 20, 64 << 10
	src := randBytes(rng, size)
	dst := bytes.Clone(src)
	changed := changeBlocks(rng, dst, bs, size/bs/100)
	a := startAgent(t, map[string][]byte{"d": dst}, nil)
	p := startProxy(t, a.addr)
	c := a.client()
	c.Addr = p.addr
	srcPath := writeTemp(t, "src.img", src)
	st, err := syncTo(withTimeout(t, 30*time.Second), t, c, srcPath, "d", &transfer.Options{NoJournal: true})
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "agent's disk", a.bytes(t, "d"), src)
	hashes := int64(size / bs * (blockdiff.XXH3.Size() + 1))
	const fixed = 16 << 10
	limit := int64(1.02*float64(changed)) + hashes + fixed
	t.Logf("changed %d B, wrote %d B; wire: up %d B, down %d B, total %d B = %.4f x changed; hashes %d B; limit %d B; sync %v",
		changed, st.Written, p.up.Load(), p.down.Load(), p.total(), float64(p.total())/float64(changed), hashes, limit, st.Elapsed)
	if p.total() > limit {
		t.Fatalf("%d bytes on the wire, more than %d", p.total(), limit)
	}
	if st.Written != changed {
		t.Fatalf("wrote %d bytes, changed %d", st.Written, changed)
	}

	// The same again moves only hashes.
	p.up.Store(0)
	p.down.Store(0)
	if _, err := syncTo(withTimeout(t, 30*time.Second), t, c, srcPath, "d", &transfer.Options{NoJournal: true}); err != nil {
		t.Fatal(err)
	}
	t.Logf("identical rerun: %d B on the wire", p.total())
	if p.total() > hashes+fixed {
		t.Fatalf("identical disks: %d bytes on the wire", p.total())
	}
}

// TestDropResume cuts the connection mid-run: the run fails, and a rerun
// resumes from the journal and ends identical.
func TestDropResume(t *testing.T) {
	rng := newRand(t)
	const size, bs = 32 << 20, 64 << 10
	src := randBytes(rng, size)
	dst := bytes.Clone(src)
	changed := changeBlocks(rng, dst, bs, size/bs/2)
	a := startAgent(t, map[string][]byte{"d": dst}, nil)
	p := startProxy(t, a.addr)
	p.cut.Store(changed * 6 / 10)
	c := a.client()
	c.Addr = p.addr
	c.WriteBuffer = 4 << 20
	srcPath := writeTemp(t, "src.img", src)
	journal := &transfer.MemStore{}
	// The default durability: checkpoints wait until the agent applied
	// the writes queued (disk.AppliedBarrier); that is what makes the
	// resume below safe.
	o := &transfer.Options{Journal: journal, JournalBytes: 2 << 20}
	st, err := syncTo(withTimeout(t, 30*time.Second), t, c, srcPath, "d", o)
	if err == nil {
		t.Fatalf("the run survived the cut: %+v", st)
	}
	t.Logf("cut after %d B: %v (%+v)", p.up.Load(), err, st)
	if !errors.Is(err, ErrDisconnected) {
		t.Fatalf("error does not wrap ErrDisconnected: %v", err)
	}
	if len(journal.Keys()) != 1 {
		t.Fatalf("no journal after the cut")
	}
	p.cut.Store(0)
	st, err = syncTo(withTimeout(t, 30*time.Second), t, c, srcPath, "d", o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rerun: %+v", st)
	if !st.Resumed || st.ResumedFrom == 0 {
		t.Fatalf("the rerun did not resume: %+v", st)
	}
	sameBytes(t, "agent's disk", a.bytes(t, "d"), src)
}

// flushCounter counts the flushes of an agent's disk.
type flushCounter struct {
	*localdisk.Disk
	n *atomic.Int64
}

func (f flushCounter) Flush(ctx context.Context) error {
	f.n.Add(1)
	return f.Disk.Flush(ctx)
}

// TestJournalAgentBoot: journal checkpoints of a sync through an agent
// wait for the agent to apply the writes and are stamped with the agent
// machine's boot ID, without flushing the agent's disk. After a cut, a
// rerun resumes while that machine keeps its boot, and starts over,
// comparing everything, once it has another (a reboot, which may have
// lost what the agent held unflushed).
func TestJournalAgentBoot(t *testing.T) {
	rng := newRand(t)
	const size, bs = 32 << 20, 64 << 10
	src := randBytes(rng, size)
	srcPath := writeTemp(t, "src.img", src)
	for _, reboot := range []bool{false, true} {
		dst := bytes.Clone(src)
		changed := changeBlocks(rng, dst, bs, size/bs/2)
		var boot atomic.Value
		boot.Store("boot-1")
		var flushes atomic.Int64
		var ends *endings
		a := startAgent(t, map[string][]byte{"d": dst}, func(o *ServerOptions) {
			ends = logEndings(o)
			o.bootID = func() string { return boot.Load().(string) }
			o.open = func(path string, write bool) (serverDisk, error) {
				if !write {
					return localdisk.OpenSource(path, localdisk.SourceOptions{})
				}
				d, err := localdisk.OpenTarget(path, localdisk.TargetOptions{})
				if err != nil {
					return nil, err
				}
				return flushCounter{d, &flushes}, nil
			}
		})
		p := startProxy(t, a.addr)
		p.cut.Store(changed * 6 / 10)
		c := a.client()
		c.Addr = p.addr
		c.WriteBuffer = 4 << 20
		journal := &transfer.MemStore{}
		o := &transfer.Options{Journal: journal, JournalBytes: 2 << 20}
		st, err := syncTo(withTimeout(t, 30*time.Second), t, c, srcPath, "d", o)
		if err == nil {
			t.Fatalf("the run survived the cut: %+v", st)
		}
		// The checkpoints did not flush; the agent flushed once, when
		// the cut session ended, before recording its evidence.
		ends.wait(t, 1)
		if n := flushes.Load(); n != 1 {
			t.Fatalf("the agent's disk was flushed %d times for an interrupted run, want once at its session's end", n)
		}
		if len(journal.Keys()) != 1 {
			t.Fatalf("no journal after the cut")
		}
		if reboot {
			boot.Store("boot-2")
		}
		p.cut.Store(0)
		flushes.Store(0)
		st, err = syncTo(withTimeout(t, 30*time.Second), t, c, srcPath, "d", o)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("reboot %v: rerun %+v", reboot, st)
		switch {
		case reboot && (st.Resumed || !st.JournalDiscarded):
			t.Fatal("a journal saved before the agent's machine rebooted was trusted after it")
		case !reboot && (!st.Resumed || st.ResumedFrom == 0):
			t.Fatal("the rerun did not resume")
		}
		if flushes.Load() == 0 {
			t.Fatal("a finished run did not flush the agent's disk")
		}
		sameBytes(t, "agent's disk", a.bytes(t, "d"), src)
	}
}

// TestTargetWritesBehind: a target has an Identity (runs onto it are
// journaled) and says it writes behind, so transfer flushes it before
// every journal save; a disk being written cannot be opened again.
func TestTargetWritesBehind(t *testing.T) {
	a := startAgent(t, map[string][]byte{"d": make([]byte, 1<<20)}, nil)
	ctx := withTimeout(t, 10*time.Second)
	d, err := a.client().OpenTarget(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if id := d.Identity(); id == "" || !d.WritesBehind() {
		t.Fatalf("identity %q, writes behind %v", id, d.WritesBehind())
	}
	var _ disk.WriteBehind = d
	var _ disk.AppliedBarrier = d
	if b := d.HostBootID(); b == "" || b != bootid.Read() {
		t.Fatalf("host boot ID %q, want this machine's %q", b, bootid.Read())
	}
	if err := d.Applied(ctx); err != nil {
		t.Fatalf("Applied with nothing queued: %v", err)
	}
	c := a.client()
	if _, err := c.OpenSource(ctx, "d"); !errors.Is(err, ErrBusy) {
		t.Fatalf("opening a disk being written: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2, err := c.OpenSource(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	id := d2.Identity()
	if id == "" || bytes.Contains([]byte(id), []byte(a.token)) {
		t.Fatalf("source identity %q", id)
	}
	t.Log(id)
}

// TestPull syncs from an agent's disk to a local file.
func TestPull(t *testing.T) {
	rng := newRand(t)
	const size, bs = 6 << 20, 64 << 10
	src := randBytes(rng, size)
	clear(src[1<<20 : 3<<20]) // zeros
	copy(src[4<<20:], bytes.Repeat([]byte("abcdefgh"), 1<<17))
	dst := bytes.Clone(src)
	changeBlocks(rng, dst, bs, 8)
	a := startAgent(t, map[string][]byte{"s": src}, nil)
	ctx := withTimeout(t, 30*time.Second)
	s, err := a.client().OpenSource(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write to a source: %v", err)
	}
	dstPath := writeTemp(t, "dst.img", dst)
	d, err := localdisk.OpenTarget(dstPath, localdisk.TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := transfer.Sync(ctx, s, d, &transfer.Options{Verify: true, Journal: &transfer.MemStore{}})
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", st)
	got, _ := readFile(dstPath)
	sameBytes(t, "pulled", got, src)
}

// TestWriteErrorSurfaces: a write the agent fails is reported by a later
// call and by Flush, with its offset, and nothing after it is applied.
func TestWriteErrorSurfaces(t *testing.T) {
	md := newMemDisk(make([]byte, 4<<20))
	md.FailWritesAt(1<<20 + 100)
	a := startAgent(t, map[string][]byte{"d": nil}, func(o *ServerOptions) {
		o.open = func(string, bool) (serverDisk, error) { return md, nil }
	})
	ctx := withTimeout(t, 10*time.Second)
	d, err := a.client().OpenTarget(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	block := bytes.Repeat([]byte{7}, 64<<10)
	for off := int64(0); off < 4<<20; off += int64(len(block)) {
		if _, err := d.WriteAt(block, off); err != nil {
			var re *RemoteError
			if !errors.As(err, &re) || re.Off != 1<<20 {
				t.Fatalf("write at %d: %v", off, err)
			}
			break
		}
	}
	// Applied, which journal checkpoints wait for, must report the
	// failure, never count the failed write applied.
	err = d.Applied(ctx)
	var re *RemoteError
	if !errors.As(err, &re) || re.Op != "write" || re.Off != 1<<20 {
		t.Fatalf("applied: %v", err)
	}
	err = d.Flush(ctx)
	if !errors.As(err, &re) || re.Op != "write" || re.Off != 1<<20 {
		t.Fatalf("flush: %v", err)
	}
	t.Log(err)
	b := md.Bytes()
	if b[1<<20-1] != 7 || b[1<<20+64<<10] != 0 {
		t.Fatal("writes before the failure missing, or writes after it applied")
	}
	if _, err := d.WriteAt(block, 0); err == nil {
		t.Fatal("a write after the failure was accepted")
	}
}

// TestWriteBufferBounds: WriteAt waits while the write buffer is full,
// and never holds more than it (plus one write).
func TestWriteBufferBounds(t *testing.T) {
	md := newMemDisk(make([]byte, 16<<20))
	gate := make(chan struct{})
	a := startAgent(t, map[string][]byte{"d": nil}, func(o *ServerOptions) {
		o.open = func(string, bool) (serverDisk, error) { return &slowDisk{memDisk: md, gate: gate}, nil }
	})
	ctx := withTimeout(t, 10*time.Second)
	c := a.client()
	c.WriteBuffer = 1 << 20
	d, err := c.OpenTarget(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	rng := newRand(t)
	block := randBytes(rng, 256<<10)
	done := make(chan int)
	go func() {
		n := 0
		for off := int64(0); off < 16<<20; off += int64(len(block)) {
			if _, err := d.WriteAt(block, off); err != nil {
				t.Error(err)
				break
			}
			n++
		}
		done <- n
	}()
	time.Sleep(200 * time.Millisecond)
	d.mu.Lock()
	used := d.used
	d.mu.Unlock()
	if used > c.WriteBuffer+int64(len(block))+64 {
		t.Fatalf("%d bytes unacknowledged, buffer %d", used, c.WriteBuffer)
	}
	select {
	case n := <-done:
		t.Fatalf("all %d writes returned while the agent was stalled", n)
	default:
	}
	close(gate)
	<-done
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for off := 0; off < 16<<20; off += len(block) {
		if !bytes.Equal(md.Bytes()[off:off+len(block)], block) {
			t.Fatalf("block at %d missing", off)
		}
	}
}

// slowDisk holds every write until gate is closed.
type slowDisk struct {
	*memDisk
	gate chan struct{}
}

func (s *slowDisk) WriteAt(p []byte, off int64) (int, error) {
	<-s.gate
	return s.memDisk.WriteAt(p, off)
}

// TestCompression: compressible writes and reads cross the wire
// compressed and arrive intact; random ones go raw.
func TestCompression(t *testing.T) {
	rng := newRand(t)
	const size = 8 << 20
	a := startAgent(t, map[string][]byte{"d": make([]byte, size)}, nil)
	p := startProxy(t, a.addr)
	c := a.client()
	c.Addr = p.addr
	ctx := withTimeout(t, 10*time.Second)
	d, err := c.OpenTarget(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog "), size/2/44+1)[:size/2]
	random := randBytes(rng, size/2)
	before := p.up.Load()
	if _, err := d.WriteAt(text, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	textWire := p.up.Load() - before
	before = p.up.Load()
	if _, err := d.WriteAt(random, size/2); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	randWire := p.up.Load() - before
	t.Logf("4 MiB of text: %d B on the wire; 4 MiB random: %d B", textWire, randWire)
	if textWire > size/2/10 || randWire > size/2+size/2/100 {
		t.Fatal("compression did not pay, or random data grew")
	}
	before = p.down.Load()
	back := make([]byte, size)
	if n, err := d.ReadAt(back, 0); err != nil || n != size {
		t.Fatalf("read back: %d, %v", n, err)
	}
	t.Logf("read back 8 MiB: %d B on the wire", p.down.Load()-before)
	sameBytes(t, "read back", back, append(bytes.Clone(text), random...))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "agent's disk", a.bytes(t, "d"), append(bytes.Clone(text), random...))
}

// TestHashBlocksMatchesLocal: the agent's hash stream equals
// blockdiff.HashBlocks run locally on the same bytes, for both
// algorithms, ranges, hints, small windows and a size that is not a
// multiple of the block size.
func TestHashBlocksMatchesLocal(t *testing.T) {
	rng := newRand(t)
	b := randBytes(rng, 3<<20+1536)
	clear(b[64<<10 : 640<<10])
	a := startAgent(t, map[string][]byte{"d": b}, nil)
	c := a.client()
	c.HashWindow = 16
	ctx := withTimeout(t, 20*time.Second)
	d, err := c.OpenSource(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i, o := range []blockdiff.Options{
		{BlockSize: 4096},
		{BlockSize: 64 << 10, Offset: 512, Length: 2<<20 + 512},
		{BlockSize: 512, Hints: []disk.Range{{Off: 100, Len: 5000}, {Off: 1 << 20, Len: 1}, {Off: 3 << 20, Len: 1 << 20}}},
		{BlockSize: 4 << 20},
	} {
		for _, alg := range []blockdiff.HashAlgorithm{blockdiff.XXH3, blockdiff.BLAKE3} {
			key, _ := blockdiff.NewKey()
			h := blockdiff.Hasher{Alg: alg, Key: key}
			var want []blockdiff.BlockHash
			if err := blockdiff.HashBlocks(ctx, bytes.NewReader(b), int64(len(b)), h, &o, func(bh blockdiff.BlockHash) error {
				want = append(want, bh)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			it, err := d.HashBlocks(ctx, h, &o)
			if err != nil {
				t.Fatal(err)
			}
			var got []blockdiff.BlockHash
			for {
				bh, err := it.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("case %d %v: %v", i, alg, err)
				}
				got = append(got, bh)
			}
			if len(got) != len(want) {
				t.Fatalf("case %d %v: %d hashes, want %d", i, alg, len(got), len(want))
			}
			for j := range want {
				if got[j] != want[j] {
					t.Fatalf("case %d %v: hash %d is %+v, want %+v", i, alg, j, got[j], want[j])
				}
			}
		}
	}
	// A stream abandoned by cancelling its context stops; the disk
	// stays usable.
	cctx, cancel := context.WithCancel(ctx)
	it, err := d.HashBlocks(cctx, blockdiff.Hasher{Alg: blockdiff.XXH3}, &blockdiff.Options{BlockSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	it.Next()
	cancel()
	for {
		if _, err := it.Next(); err != nil {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("after cancel: %v", err)
			}
			break
		}
	}
	if _, err := d.Version(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSeed seeds an empty (sparse) disk behind an agent: the agent's
// allocation map proves it empty, so it is neither read nor hashed, and
// zero blocks are not sent.
func TestSeed(t *testing.T) {
	rng := newRand(t)
	src := randBytes(rng, 4<<20)
	clear(src[1<<20 : 2<<20])
	a := startAgent(t, map[string][]byte{"d": nil}, nil)
	if err := os.Truncate(a.path("d"), 2<<20); err != nil { // sparse, and too small
		t.Fatal(err)
	}
	s, err := localdisk.OpenSource(writeTemp(t, "src.img", src), localdisk.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := withTimeout(t, 20*time.Second)
	d, err := a.client().OpenTarget(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	st, err := transfer.Seed(ctx, s, d, &transfer.Options{NoJournal: true})
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", st)
	if !st.ProvenEmpty || st.Written != 3<<20 || st.ResizedFrom != 2<<20 {
		t.Fatalf("proven empty %v, wrote %d, resized from %d", st.ProvenEmpty, st.Written, st.ResizedFrom)
	}
	sameBytes(t, "seeded", a.bytes(t, "d"), src)
}

// TestCloseBreaksBlockedWriter: when the agent stops reading (its disk
// hangs) and the connection's socket buffers are full, Close gives up
// after CloseTimeout and returns at once, rather than waiting behind the
// blocked writer to send TLS's closing alert.
func TestCloseBreaksBlockedWriter(t *testing.T) {
	md := newMemDisk(make([]byte, 256<<20))
	gate := make(chan struct{})
	a := startAgent(t, map[string][]byte{"d": nil}, func(o *ServerOptions) {
		o.open = func(string, bool) (serverDisk, error) { return &slowDisk{memDisk: md, gate: gate}, nil }
		o.SocketBuffer = 64 << 10
	})
	defer close(gate)
	ctx := withTimeout(t, 30*time.Second)
	c := a.client()
	c.WriteBuffer = 256 << 20
	c.SocketBuffer = 64 << 10
	c.CloseTimeout = 300 * time.Millisecond
	d, err := c.OpenTarget(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	// Small writes, one at a time, so that the writer flushes after each
	// (its queue runs dry) and ends up blocked in that flush, outside any
	// TLS write, once the socket is full.
	block := randBytes(newRand(t), 64<<10)
	for off := int64(0); off < 24<<20; off += int64(len(block)) {
		if _, err := d.WriteAt(block, off); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	err = d.Close()
	took := time.Since(start)
	t.Logf("Close after %v: %v", took, err)
	if err == nil {
		t.Fatal("Close with unacknowledged writes returned nil")
	}
	if took > 3*time.Second {
		t.Fatalf("Close took %v with a CloseTimeout of 300ms", took)
	}
}

// TestProtocolVersions: clients and agents from before version 2 (no boot
// ID in the welcome) and version 3 (no watch) still work with the current
// ones, either way round;
// without a boot ID a journaled sync flushes the agent's disk at each
// checkpoint, as before.
func TestProtocolVersions(t *testing.T) {
	rng := newRand(t)
	const size, bs = 32 << 20, 64 << 10
	src := randBytes(rng, size)
	srcPath := writeTemp(t, "src.img", src)
	for _, tc := range []struct {
		name           string
		client, server []string
		wantBoot       bool
	}{
		{"current both", nil, nil, true},
		{"old client", []string{alpn1}, nil, false},
		{"old agent", nil, []string{alpn1}, false},
		{"version 2 client", []string{alpn2, alpn1}, nil, true},
		{"version 2 agent", nil, []string{alpn2, alpn1}, true},
	} {
		dst := bytes.Clone(src)
		changeBlocks(rng, dst, bs, 100)
		var flushes atomic.Int64
		a := startAgent(t, map[string][]byte{"d": dst}, func(o *ServerOptions) {
			o.protos = tc.server
			o.open = func(path string, write bool) (serverDisk, error) {
				d, err := localdisk.OpenTarget(path, localdisk.TargetOptions{})
				if err != nil {
					return nil, err
				}
				return flushCounter{d, &flushes}, nil
			}
		})
		c := a.client()
		c.protos = tc.client
		ctx := withTimeout(t, 30*time.Second)
		d, err := c.OpenTarget(ctx, "d")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := d.HostBootID() != ""; got != tc.wantBoot {
			t.Fatalf("%s: host boot ID %q", tc.name, d.HostBootID())
		}
		d.Close()
		st, err := syncTo(ctx, t, c, srcPath, "d", &transfer.Options{Journal: &transfer.MemStore{}, JournalBytes: 256 << 10, JournalInterval: time.Millisecond})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		t.Logf("%s: %d journal saves, %d flushes of the agent's disk", tc.name, st.JournalSaves, flushes.Load())
		// With a boot ID only the end flushes; without, every checkpoint
		// does, and the end.
		n := flushes.Load()
		if tc.wantBoot && n != 1 || !tc.wantBoot && (n < 2 || n < int64(st.JournalSaves)) {
			t.Fatalf("%s: %d flushes for %d journal saves", tc.name, n, st.JournalSaves)
		}
		sameBytes(t, tc.name, a.bytes(t, "d"), src)
	}
}
