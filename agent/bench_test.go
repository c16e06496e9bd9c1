package agent

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// BenchmarkSync compares a local sync (file to file) with a sync through
// an agent on loopback (TLS, pipelined writes, hashes streamed back), on
// a disk of $DELTASYNC_BENCH_SIZE bytes (default 256 MiB; 4294967296 for
// the 4 GiB case) of random data with 1% of its 64 KiB blocks changed.
// The target is restored before each run (not timed). Throughput is the
// disk size per second.
//
//	go test -run XXX -bench Sync -benchtime 3x ./agent
//	DELTASYNC_BENCH_SIZE=4294967296 go test -run XXX -bench Sync -benchtime 1x -timeout 30m ./agent
func BenchmarkSync(b *testing.B) {
	size := int64(256 << 20)
	if s := os.Getenv("DELTASYNC_BENCH_SIZE"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n%(64<<10) != 0 {
			b.Fatalf("DELTASYNC_BENCH_SIZE=%q: want a positive multiple of 65536", s)
		}
		size = n
	}
	const bs = 64 << 10
	dir := b.TempDir()
	srcPath, origPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "orig.img")
	rng := rand.New(rand.NewPCG(1, 2))
	if err := makeBenchPair(rng, srcPath, origPath, size, bs); err != nil {
		b.Fatal(err)
	}
	dstPath := filepath.Join(dir, "dst.img")
	reset := func() {
		b.StopTimer()
		if err := copyFile(origPath, dstPath); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	run := func(b *testing.B, open func() (disk.Target, io.Closer)) {
		b.SetBytes(size)
		for b.Loop() {
			reset()
			s, err := localdisk.OpenSource(srcPath, localdisk.SourceOptions{})
			if err != nil {
				b.Fatal(err)
			}
			d, closer := open()
			st, err := transfer.Sync(context.Background(), s, d, &transfer.Options{NoJournal: true})
			if cerr := closer.Close(); err == nil {
				err = cerr
			}
			s.Close()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(st.Written)/(1<<20)/st.Elapsed.Seconds(), "changedMiB/s")
		}
	}
	b.Run("local", func(b *testing.B) {
		run(b, func() (disk.Target, io.Closer) {
			d, err := localdisk.OpenTarget(dstPath, localdisk.TargetOptions{})
			if err != nil {
				b.Fatal(err)
			}
			return d, d
		})
	})
	b.Run("agent", func(b *testing.B) {
		a := startAgent(b, map[string][]byte{"x": nil}, func(o *ServerOptions) {
			o.Disks = map[string]string{"d": dstPath}
			o.Logf = nil
		})
		c := a.client()
		run(b, func() (disk.Target, io.Closer) {
			d, err := c.OpenTarget(context.Background(), "d")
			if err != nil {
				b.Fatal(err)
			}
			return d, d
		})
	})
}

// makeBenchPair writes a random source and a copy with 1% of its blocks
// changed, a megabyte at a time.
func makeBenchPair(rng *rand.Rand, srcPath, origPath string, size int64, bs int) error {
	sf, err := os.Create(srcPath)
	if err != nil {
		return err
	}
	defer sf.Close()
	of, err := os.Create(origPath)
	if err != nil {
		return err
	}
	defer of.Close()
	const step = 1 << 20
	for off := int64(0); off < size; off += step {
		n := int(min(step, size-off))
		p := randBytes(rng, n)
		if _, err := sf.Write(p); err != nil {
			return err
		}
		q := bytes.Clone(p)
		for i := 0; i+bs <= n; i += bs {
			if rng.IntN(100) == 0 {
				copy(q[i:i+bs], randBytes(rng, bs))
			}
		}
		if _, err := of.Write(q); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
