package replicate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/xfstest"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// BenchmarkCycleHints measures, in the same run, a replication cycle of
// an image with 1% of its 64 KiB blocks changed since the last one,
// hinted by reflink extent maps, against the same cycle comparing
// everything (ScrubEvery 1), both from reflink views of one image on XFS:
// time per cycle and bytes read from both disks. Sizes come from
// DELTASYNC_BENCH_SIZES (default 256M; the figures in docs/bench use
// 1G,4G).
//
//	DELTASYNC_BENCH_SIZES=1G,4G go test -run XXX -bench CycleHints -benchtime 3x ./replicate
func BenchmarkCycleHints(b *testing.B) {
	sizes := os.Getenv("DELTASYNC_BENCH_SIZES")
	if sizes == "" {
		sizes = "256M"
	}
	for _, sz := range strings.Split(sizes, ",") {
		size := parseBenchSize(b, sz)
		b.Run("size="+sz, func(b *testing.B) {
			const block = 64 << 10
			ctx := context.Background()
			dir := xfstest.Dir(b, 4*size+1<<30)
			rng := rand.New(rand.NewPCG(53, 54))
			sp := filepath.Join(dir, "vm1.img")
			writeRandom(b, sp, size)
			fr, err := NewReflinkFreezer(sp, "")
			if err != nil {
				b.Fatal(err)
			}
			defer fr.Close()
			rep := func(name string, scrub int) *Replicator {
				d, err := localdisk.OpenTarget(filepath.Join(dir, name+".img"), localdisk.TargetOptions{Create: true})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { d.Close() })
				r, err := New(Config{Name: name, Source: fr, Target: &FileTarget{Disk: d}, Policy: Policy{KeepLast: 1, KeepHourly: -1, ScrubEvery: scrub},
					Transfer: &transfer.Options{BlockSize: block}})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { r.Close(ctx) })
				if _, err := r.Cycle(ctx); err != nil { // the seed
					b.Fatal(err)
				}
				return r
			}
			hinted, full := rep("hinted", -1), rep("full", 1)
			f, err := os.OpenFile(sp, os.O_RDWR, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			p := make([]byte, block)
			var ht, ft time.Duration
			var hr, frd int64
			b.ResetTimer()
			for range b.N {
				for range int(size / block / 100) {
					for i := range p {
						p[i] = byte(rng.Uint32())
					}
					f.WriteAt(p, rng.Int64N(size/block)*block)
				}
				for _, x := range []struct {
					r *Replicator
					t *time.Duration
					n *int64
				}{{hinted, &ht, &hr}, {full, &ft, &frd}} {
					t0 := time.Now()
					c, err := x.r.Cycle(ctx)
					if err != nil {
						b.Fatal(err)
					}
					*x.t += time.Since(t0)
					*x.n += c.Stats.SourceRead + c.Stats.TargetRead
				}
			}
			n := float64(b.N)
			b.ReportMetric(ht.Seconds()*1e3/n, "hinted-ms/cycle")
			b.ReportMetric(ft.Seconds()*1e3/n, "full-ms/cycle")
			b.ReportMetric(float64(hr)/n/(1<<20), "hinted-read-MiB/cycle")
			b.ReportMetric(float64(frd)/n/(1<<20), "full-read-MiB/cycle")
		})
	}
}

func parseBenchSize(b *testing.B, s string) int64 {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		b.Fatalf("DELTASYNC_BENCH_SIZES: %q: %v", s, err)
	}
	return n * mult
}

// writeRandom writes size random bytes to path, 8 MiB at a time.
func writeRandom(b *testing.B, path string, size int64) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{1, 2, 3})
	buf := make([]byte, 8<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		r.Read(buf)
		if _, err := f.Write(buf[:min(int64(len(buf)), size-off)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	fmt.Fprint(os.Stderr, "")
}
