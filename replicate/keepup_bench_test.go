package replicate_test

import (
	"bufio"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/azurite"
	"github.com/deltasync/deltasync/internal/xfstest"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/replicate"
	"github.com/deltasync/deltasync/replicate/blob"
	"github.com/deltasync/deltasync/transfer"
)

// BenchmarkKeepUp finds the churn the replicator keeps up with: a writer
// changes a 1 GiB image at a fixed rate (random 64 KiB writes) while
// cycles run every 2 s (reflink views on XFS, hinted by extent maps), to
// a local image file and to a page blob on Azurite; for each rate it
// reports the worst lag seen and whether it stayed under two intervals,
// next to the target's raw write rate measured in the same run (the
// filesystem's sequential writes with fsync; a seed of a new blob), and
// the growth of this process's anonymous memory over the run. Rates (MB/s) come
// from DELTASYNC_BENCH_RATES (default 16,64; docs/bench uses
// 8,16,32,64,128,256), each held for DELTASYNC_BENCH_HOLD (default 6s).
//
//	DELTASYNC_BENCH_RATES=8,16,32,64,128,256 DELTASYNC_BENCH_HOLD=20s go test -run XXX -bench KeepUp -benchtime 1x ./replicate
func BenchmarkKeepUp(b *testing.B) {
	for _, target := range []string{"file", "azurite"} {
		b.Run("target="+target, func(b *testing.B) { keepUp(b, target) })
	}
}

func keepUp(b *testing.B, target string) {
	rates := os.Getenv("DELTASYNC_BENCH_RATES")
	if rates == "" {
		rates = "16,64"
	}
	hold := 6 * time.Second
	if h := os.Getenv("DELTASYNC_BENCH_HOLD"); h != "" {
		d, err := time.ParseDuration(h)
		if err != nil {
			b.Fatal(err)
		}
		hold = d
	}
	const size, block, interval = 1 << 30, 64 << 10, 2 * time.Second
	ctx := context.Background()
	dir := xfstest.Dir(b, 8<<30)
	sp := filepath.Join(dir, "vm1.img")
	replicate.WriteRandom(b, sp, size)
	fr, err := replicate.NewReflinkFreezer(sp, "")
	if err != nil {
		b.Fatal(err)
	}
	defer fr.Close()
	var tgt replicate.Target
	var raw float64
	switch target {
	case "file":
		raw = rawWriteRate(b, filepath.Join(dir, "raw.bin"), 256<<20)
		d, err := localdisk.OpenTarget(filepath.Join(dir, "replica.img"), localdisk.TargetOptions{Create: true})
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		tgt = &replicate.FileTarget{Disk: d}
	case "azurite":
		az, err := azurite.Start(ctx, azurite.Options{})
		if err != nil {
			b.Skipf("no Azurite: %v", err)
		}
		defer az.Stop()
		if err := az.CreateContainer(ctx, "keepup"); err != nil {
			b.Fatal(err)
		}
		raw = rawBlobRate(b, az, filepath.Join(dir, "raw.bin"), 256<<20)
		pb, err := pageblob.OpenTarget(ctx, az.BlobURL("keepup", "replica.img"), &pageblob.Options{CreateSize: size, Getenv: func(string) string { return "" }})
		if err != nil {
			b.Fatal(err)
		}
		defer pb.Close()
		tgt = blob.Target{Blob: pb}
	}
	r, err := replicate.New(replicate.Config{Source: fr, Target: tgt, Policy: replicate.Policy{Interval: interval, KeepLast: 2, KeepHourly: -1, ScrubEvery: -1}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(ctx)
	if _, err := r.Cycle(ctx); err != nil { // the seed
		b.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(rctx) }()
	// Let a cycle of Run end first: the seed's long copy is not churn.
	for seeded := r.Status().Cycles; r.Status().Cycles <= seeded; {
		time.Sleep(50 * time.Millisecond)
	}
	f, err := os.OpenFile(sp, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	anon0 := rssAnon()
	var peakAnon atomic.Int64
	rng := rand.New(rand.NewPCG(55, 56))
	p := make([]byte, block)
	best := 0.0
	b.ResetTimer()
	for _, rs := range strings.Split(rates, ",") {
		rate, err := strconv.ParseFloat(rs, 64)
		if err != nil {
			b.Fatal(err)
		}
		perWrite := time.Duration(float64(time.Second) * block / (rate * 1e6))
		end := time.Now().Add(hold)
		var worst time.Duration
		next := time.Now()
		for time.Now().Before(end) {
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			f.WriteAt(p, rng.Int64N(size/block)*block)
			next = next.Add(perWrite)
			if w := time.Until(next); w > 0 {
				time.Sleep(w)
			}
			if lag := r.Status().Lag; lag > worst {
				worst = lag
			}
			if a := rssAnon(); a > peakAnon.Load() {
				peakAnon.Store(a)
			}
		}
		// The lag is also judged once the rate ends: the cycle under way
		// must finish within two intervals.
		time.Sleep(interval)
		if lag := r.Status().Lag; lag > worst {
			worst = lag
		}
		ok := worst < 2*interval
		b.Logf("rate %g MB/s: worst lag %v (%s two intervals)", rate, worst.Round(time.Millisecond), map[bool]string{true: "under", false: "over"}[ok])
		b.ReportMetric(worst.Seconds(), "lag-s@"+rs+"MB/s")
		if ok && rate > best {
			best = rate
		}
	}
	stop()
	<-ran
	b.ReportMetric(best, "kept-up-MB/s")
	b.ReportMetric(raw/1e6, "raw-write-MB/s")
	b.ReportMetric(float64(peakAnon.Load()-anon0)/(1<<20), "anon-growth-MiB")
}

// rawWriteRate writes n bytes to path in 8 MiB writes with a final fsync
// and returns bytes per second.
func rawWriteRate(b *testing.B, path string, n int64) float64 {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, 8<<20)
	rand.NewChaCha8([32]byte{9}).Read(buf)
	t0 := time.Now()
	for off := int64(0); off < n; off += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return float64(n) / time.Since(t0).Seconds()
}

// rawBlobRate seeds a new page blob from an n-byte random file and
// returns bytes per second: what the service takes at the engine's own
// write concurrency.
func rawBlobRate(b *testing.B, az *azurite.Server, path string, n int64) float64 {
	replicate.WriteRandom(b, path, n)
	defer os.Remove(path)
	ctx := context.Background()
	src, err := localdisk.OpenSource(path, localdisk.SourceOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	pb, err := pageblob.OpenTarget(ctx, az.BlobURL("keepup", "raw.img"), &pageblob.Options{CreateSize: n, Getenv: func(string) string { return "" }})
	if err != nil {
		b.Fatal(err)
	}
	defer pb.Close()
	t0 := time.Now()
	if _, err := transfer.Seed(ctx, src, pb, &transfer.Options{NoJournal: true}); err != nil {
		b.Fatal(err)
	}
	return float64(n) / time.Since(t0).Seconds()
}

// rssAnon returns this process's anonymous resident memory in bytes.
func rssAnon() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}
