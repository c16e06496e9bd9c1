package replicate

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/disk/disktest"
	"github.com/deltasync/deltasync/localdisk"
)

// readAll reads a whole disk.
func readAll(t *testing.T, r disk.Source) []byte {
	t.Helper()
	p, err := disktest.ReadAll(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pointEquals opens a recovery point and checks it holds want.
func pointEquals(t *testing.T, tg Points, id string, want []byte) {
	t.Helper()
	ps, err := tg.OpenPoint(context.Background(), id)
	if err != nil {
		t.Fatalf("OpenPoint %s: %v", id, err)
	}
	defer ps.Close()
	if err := disktest.SameBytes(context.Background(), ps, want); err != nil {
		t.Fatalf("point %s is not the source it was cut from: %v", id, err)
	}
}

// localPair makes a source image of size random bytes and an empty
// target in a temp dir: the source's path, the target (with points in
// the same dir) and the dir.
func localPair(t *testing.T, rng *rand.Rand, size int64) (string, *FileTarget, string) {
	t.Helper()
	dir := t.TempDir()
	sp := filepath.Join(dir, "source.img")
	data := make([]byte, size)
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rng.Uint32())
	}
	rand.NewChaCha8(seed).Read(data)
	if err := os.WriteFile(sp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := localdisk.OpenTarget(filepath.Join(dir, "target.img"), localdisk.TargetOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return sp, &FileTarget{Disk: d, Dir: dir}, dir
}

func openSource(t *testing.T, path string) *localdisk.Disk {
	t.Helper()
	s, err := localdisk.OpenSource(path, localdisk.SourceOptions{AllowLive: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// writeFile writes p at off in the file at path (the source's writer,
// which marks the dirty map when given).
func writeFile(t *testing.T, path string, p []byte, off int64, m *DirtyMap) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	if m != nil {
		m.Mark(off, int64(len(p)))
	}
}

// countingSource counts the bytes read from a source and records the
// ranges read (it hides the file, so blockdiff reads through ReadAt).
type countingSource struct {
	disk.Source
	n  atomic.Int64
	mu sync.Mutex
	rs []disk.Range
}

func (c *countingSource) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.Source.ReadAt(p, off)
	c.n.Add(int64(n))
	c.mu.Lock()
	c.rs = append(c.rs, disk.Range{Off: off, Len: int64(n)})
	c.mu.Unlock()
	return n, err
}

// reset forgets what was read.
func (c *countingSource) reset() {
	c.n.Store(0)
	c.mu.Lock()
	c.rs = nil
	c.mu.Unlock()
}

// distinct returns the bytes read at least once, and the bytes read
// outside the ranges given.
func (c *countingSource) distinct(inside []disk.Range) (read, outside int64) {
	c.mu.Lock()
	rs := UnionRanges(c.rs)
	c.mu.Unlock()
	for _, r := range rs {
		read += r.Len
		out := r.Len
		for _, h := range inside {
			lo, hi := max(r.Off, h.Off), min(r.End(), h.End())
			if hi > lo {
				out -= hi - lo
			}
		}
		outside += out
	}
	return read, outside
}

func mustFileTarget(tb testing.TB, path, dir string) *FileTarget {
	tb.Helper()
	d, err := localdisk.OpenTarget(path, localdisk.TargetOptions{Create: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	return &FileTarget{Disk: d, Dir: dir}
}

func mustSource(tb testing.TB, path string) *localdisk.Disk {
	tb.Helper()
	s, err := localdisk.OpenSource(path, localdisk.SourceOptions{AllowLive: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}
