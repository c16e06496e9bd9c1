package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deltasync/deltasync/disk"
)

// memDisk is an in-memory disk with every capability: it can stand for a
// source or a target, records what is done to it, fails on demand, and
// keeps writes in a volatile layer until Flush (crash drops them).
type memDisk struct {
	mu       sync.Mutex
	cur      []byte // what reads see
	durable  []byte // what survives a crash
	alloc    []bool // per allocPage: may hold data
	id       string
	align    int64
	maxWrite int64
	version  int64

	watches    int  // Watch calls
	incomplete bool // marked incomplete by a watch not yet done

	// Failure injection and hooks.
	failWritesAfter int64 // fail writes once this many bytes were written; <0: never
	failReadAt      int64 // fail reads covering this offset; <0: never
	failReadAfter   int64 // ...but for the first failReadAfter of them
	coverReads      int64
	onWrite         func(n int) // called after each successful write/zero, outside the lock
	dropWriteAt     int64       // silently drop writes covering this offset; <0: never
	slow            func()      // called before each write, outside the lock
	onFlush         func()      // called when Flush starts
	failFlush       bool        // Flush fails (EIO) and makes nothing durable

	// Records.
	ops        []recOp
	written    int64
	reads      atomic.Int64
	flushes    atomic.Int64
	drops      atomic.Int64
	concurrent atomic.Int64 // writes in progress
}

var errFlushInjected = errors.New("injected flush failure (EIO)")

type recOp struct {
	off, n int64
	zero   bool // ZeroRange
}

const allocPage = 4096

func newMemDisk(b []byte, id string) *memDisk {
	d := &memDisk{cur: b, durable: append([]byte(nil), b...), id: id, align: 1,
		failWritesAfter: -1, failReadAt: -1, dropWriteAt: -1}
	d.alloc = make([]bool, (len(b)+allocPage-1)/allocPage)
	for i := range d.alloc {
		s, e := i*allocPage, min((i+1)*allocPage, len(b))
		d.alloc[i] = !isZeroBytes(b[s:e])
	}
	return d
}

func isZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (d *memDisk) Size() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int64(len(d.cur))
}

func (d *memDisk) ReadAt(p []byte, off int64) (int, error) {
	d.reads.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failReadAt >= 0 && off <= d.failReadAt && d.failReadAt < off+int64(len(p)) {
		d.coverReads++
		if d.coverReads > d.failReadAfter {
			return 0, fmt.Errorf("injected read failure at %d", d.failReadAt)
		}
	}
	if off >= int64(len(d.cur)) {
		return 0, io.EOF
	}
	c := copy(p, d.cur[off:])
	if c < len(p) {
		return c, io.EOF
	}
	return c, nil
}

var errInjected = errors.New("injected write failure")

func (d *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if d.slow != nil {
		d.slow()
	}
	d.concurrent.Add(1)
	defer d.concurrent.Add(-1)
	d.mu.Lock()
	if d.failWritesAfter >= 0 && d.written+int64(len(p)) > d.failWritesAfter {
		d.mu.Unlock()
		return 0, errInjected
	}
	if off+int64(len(p)) > int64(len(d.cur)) {
		d.mu.Unlock()
		return 0, fmt.Errorf("write [%d,+%d) past the end %d", off, len(p), len(d.cur))
	}
	d.ops = append(d.ops, recOp{off: off, n: int64(len(p))})
	d.written += int64(len(p))
	if !(d.dropWriteAt >= off && d.dropWriteAt < off+int64(len(p))) {
		copy(d.cur[off:], p)
	}
	for i := off / allocPage; i*allocPage < off+int64(len(p)); i++ {
		d.alloc[i] = true
	}
	d.version++
	d.mu.Unlock()
	if d.onWrite != nil {
		d.onWrite(len(p))
	}
	return len(p), nil
}

func (d *memDisk) ZeroRange(ctx context.Context, off, n int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.slow != nil {
		d.slow()
	}
	d.mu.Lock()
	if off+n > int64(len(d.cur)) {
		d.mu.Unlock()
		return fmt.Errorf("zero [%d,+%d) past the end %d", off, n, len(d.cur))
	}
	d.ops = append(d.ops, recOp{off: off, n: n, zero: true})
	clear(d.cur[off : off+n])
	for i := (off + allocPage - 1) / allocPage; (i+1)*allocPage <= off+n; i++ {
		d.alloc[i] = false // punched
	}
	d.version++
	d.mu.Unlock()
	if d.onWrite != nil {
		d.onWrite(int(n))
	}
	return nil
}

func (d *memDisk) Flush(ctx context.Context) error {
	if d.onFlush != nil {
		d.onFlush()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	d.flushes.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failFlush {
		return errFlushInjected
	}
	d.durable = append(d.durable[:0], d.cur...)
	return nil
}

// crash drops every write not flushed.
func (d *memDisk) crash() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cur = append(d.cur[:0], d.durable...)
	for i := range d.alloc {
		d.alloc[i] = true // conservative: anything may hold data
	}
}

// Resize is durable at once, like a metadata change journaled by a file
// system; growth reads as zeros.
func (d *memDisk) Resize(ctx context.Context, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	resize := func(b []byte) []byte {
		if int64(len(b)) >= size {
			return b[:size]
		}
		return append(b, make([]byte, size-int64(len(b)))...)
	}
	d.cur, d.durable = resize(d.cur), resize(d.durable)
	na := int((size + allocPage - 1) / allocPage)
	if na <= len(d.alloc) {
		d.alloc = d.alloc[:na]
	} else {
		d.alloc = append(d.alloc, make([]bool, na-len(d.alloc))...)
	}
	d.version++
	return nil
}

func (d *memDisk) WriteLimits() (int64, int64) { return d.align, d.maxWrite }

func (d *memDisk) Identity() string { return d.id }

func (d *memDisk) Version(ctx context.Context) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fmt.Sprintf("v%d/%d", d.version, len(d.cur)), ctx.Err()
}

// Watch makes memDisk a Witness: the evidence is its version, which
// every write, clearing and resize moves, whoever makes them.
func (d *memDisk) Watch(ctx context.Context, resumable bool) (disk.Watch, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.watches++
	d.incomplete = true
	return &memWatch{d: d, token: fmt.Sprintf("%s#%d", d.id, d.watches)}, nil
}

func (d *memDisk) Check(ctx context.Context, token, evidence string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if evidence == "" {
		return "no evidence was recorded", nil
	}
	if now := fmt.Sprint(d.version); evidence != now {
		return fmt.Sprintf("written since (version %s, now %s)", evidence, now), nil
	}
	return "", nil
}

type memWatch struct {
	d     *memDisk
	token string
}

func (w *memWatch) Token() string { return w.token }

func (w *memWatch) Stopped(ctx context.Context) (string, error) {
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	return fmt.Sprint(w.d.version), nil
}

func (w *memWatch) Done(ctx context.Context) error {
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	w.d.incomplete = false
	return nil
}

func (w *memWatch) Abandon() {}

func (d *memDisk) DropCache(off, n int64) error {
	d.drops.Add(1)
	return nil
}

func (d *memDisk) AllocatedRanges(ctx context.Context, off, n int64) ([]disk.Range, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var rs []disk.Range
	end := min(off+n, int64(len(d.cur)))
	for i := off / allocPage; i*allocPage < end; i++ {
		if !d.alloc[i] {
			continue
		}
		s, e := max(i*allocPage, off), min((i+1)*allocPage, end)
		if k := len(rs); k > 0 && rs[k-1].End() == s {
			rs[k-1].Len += e - s
			continue
		}
		rs = append(rs, disk.Range{Off: s, Len: e - s})
	}
	return rs, nil
}

// bytes returns a copy of what reads see.
func (d *memDisk) bytes() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.cur...)
}

func (d *memDisk) recorded() []recOp {
	d.mu.Lock()
	defer d.mu.Unlock()
	ops := append([]recOp(nil), d.ops...)
	sort.Slice(ops, func(i, j int) bool { return ops[i].off < ops[j].off })
	return ops
}

// The wrappers below hide capabilities of a memDisk. WriteLimits is
// embedded through an alias: a field named WriteLimits would shadow its
// own method WriteLimits.
type limits = disk.WriteLimits

// bareTarget is only a Target: no Zeroer, Flusher, Resizer, limits,
// identity or allocation map.
type bareTarget struct{ disk.Target }

// noZeroTarget is a memDisk without ZeroRange.
type noZeroTarget struct {
	disk.Target
	disk.Flusher
	disk.Resizer
	limits
	disk.Identifier
	disk.AllocationMapper
}

func hideZero(d *memDisk) noZeroTarget {
	return noZeroTarget{d, d, d, d, d, d}
}

// noMapTarget is a memDisk without an allocation map.
type noMapTarget struct {
	disk.Target
	disk.Zeroer
	disk.Flusher
	disk.Resizer
	limits
	disk.Identifier
}

func hideMap(d *memDisk) noMapTarget {
	return noMapTarget{d, d, d, d, d, d}
}

// fixedTarget is a memDisk that cannot be resized.
type fixedTarget struct {
	disk.Target
	disk.Zeroer
	disk.Flusher
	limits
	disk.Identifier
	disk.AllocationMapper
}

func hideResize(d *memDisk) fixedTarget {
	return fixedTarget{d, d, d, d, d, d}
}

// fakeClock advances only when slept on.
type fakeClock struct {
	mu    sync.Mutex
	now   int64 // nanoseconds
	slept int64
}

var epoch = time.Unix(1_700_000_000, 0)

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return epoch.Add(time.Duration(c.now))
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	if d > 0 {
		c.now += int64(d)
		c.slept += int64(d)
	}
	c.mu.Unlock()
	return ctx.Err()
}

var (
	_ disk.WriteLimits = noZeroTarget{}
	_ disk.WriteLimits = noMapTarget{}
	_ disk.WriteLimits = fixedTarget{}
)
