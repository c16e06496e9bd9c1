package transfer

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/disk/disktest"
)

// memDisk is disktest's Faulty disk (every capability, faults on demand,
// unflushed writes lost by crash) that is also a Witness, as local files
// and page blobs are: its evidence is its version, which every write,
// clearing and resize moves, whoever makes them. Its initial content's
// zero pages are unallocated, as in a sparse file.
type memDisk struct {
	*disktest.Faulty
	id string

	wmu        sync.Mutex
	watches    int  // Watch calls
	incomplete bool // marked incomplete by a watch not yet done
}

// allocPage is the page size of the sparse files and memDisks in tests.
const allocPage = 4096

func newMemDisk(b []byte, id string) *memDisk {
	d := &memDisk{Faulty: disktest.NewFaulty(b), id: id}
	d.Trim(allocPage)
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

// errInjected is what every injected fault wraps.
var errInjected = disktest.ErrInjected

func (d *memDisk) Identity() string { return d.id }

// crash drops every write not flushed.
func (d *memDisk) crash() { d.Lose() }

func (d *memDisk) Watch(ctx context.Context, resumable bool) (disk.Watch, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.watches++
	d.incomplete = true
	return &memWatch{d: d, token: fmt.Sprintf("%s#%d", d.id, d.watches)}, nil
}

func (d *memDisk) Check(ctx context.Context, token, evidence string) (string, error) {
	if evidence == "" {
		return "no evidence was recorded", nil
	}
	now, err := d.Version(ctx)
	if err != nil {
		return "", err
	}
	if evidence != now {
		return fmt.Sprintf("written since (version %s, now %s)", evidence, now), nil
	}
	return "", nil
}

type memWatch struct {
	d     *memDisk
	token string
}

func (w *memWatch) Token() string { return w.token }

func (w *memWatch) Stopped(ctx context.Context) (string, error) { return w.d.Version(ctx) }

func (w *memWatch) Done(ctx context.Context) error {
	w.d.wmu.Lock()
	defer w.d.wmu.Unlock()
	w.d.incomplete = false
	return nil
}

func (w *memWatch) Abandon() {}

// recorded returns the writes and zeroings accepted, by offset.
func (d *memDisk) recorded() []disktest.Op {
	ops := d.Ops()
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Off < ops[j].Off })
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
