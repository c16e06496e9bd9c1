package replicate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// BenchmarkCycleChurn measures replication cycles of a 256 MiB image
// with a given churn (the fraction of 64 KiB blocks written between
// cycles): a quiesced source, compared whole each cycle, against a
// reflink-frozen one on XFS, hinted by its extent maps (skipped without
// root, a loop device and mkfs.xfs). Reported per cycle: the bytes
// compared and sent; the time per cycle is ns/op.
//
//	go test -run XXX -bench CycleChurn -benchtime 5x ./replicate
func BenchmarkCycleChurn(b *testing.B) {
	const size, block = 256 << 20, 64 << 10
	for _, freeze := range []string{"quiesced", "reflink"} {
		for _, churn := range []float64{0.001, 0.01, 0.1} {
			b.Run(fmt.Sprintf("%s/churn=%g", freeze, churn), func(b *testing.B) {
				ctx := context.Background()
				dir := b.TempDir()
				if freeze == "reflink" {
					dir = xfsDir(b)
				}
				rng := rand.New(rand.NewPCG(51, 52))
				sp := filepath.Join(dir, "vm1.img")
				data := make([]byte, size)
				for i := range data {
					data[i] = byte(rng.Uint32())
				}
				if err := os.WriteFile(sp, data, 0o644); err != nil {
					b.Fatal(err)
				}
				var fr Freezer
				if freeze == "reflink" {
					f, err := NewReflinkFreezer(sp, "")
					if err != nil {
						b.Fatal(err)
					}
					defer f.Close()
					fr = f
				} else {
					s, err := localdisk.OpenSource(sp, localdisk.SourceOptions{AllowLive: true})
					if err != nil {
						b.Fatal(err)
					}
					defer s.Close()
					fr = Quiesced(s, nil)
				}
				d, err := localdisk.OpenTarget(filepath.Join(dir, "replica.img"), localdisk.TargetOptions{Create: true})
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				r, err := New(Config{Source: fr, Target: &FileTarget{Disk: d}, Policy: Policy{KeepLast: 2, KeepHourly: -1, ScrubEvery: -1},
					Transfer: &transfer.Options{BlockSize: block}})
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close(ctx)
				if _, err := r.Cycle(ctx); err != nil { // the seed
					b.Fatal(err)
				}
				f, err := os.OpenFile(sp, os.O_RDWR, 0)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				p := make([]byte, block)
				var sent, compared int64
				b.SetBytes(size)
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					for range int(churn * size / block) {
						for i := range p {
							p[i] = byte(rng.Uint32())
						}
						f.WriteAt(p, rng.Int64N(size/block)*block)
					}
					b.StartTimer()
					rep, err := r.Cycle(ctx)
					if err != nil {
						b.Fatal(err)
					}
					sent += rep.Bytes()
					compared += rep.Stats.Compared
				}
				b.ReportMetric(float64(compared)/float64(b.N), "compared-B/cycle")
				b.ReportMetric(float64(sent)/float64(b.N), "sent-B/cycle")
			})
		}
	}
}
