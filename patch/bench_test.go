package patch

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/localdisk"
)

// BenchmarkPatch64MiB makes and applies patches between image files of
// 64 MiB, read through localdisk, with 1% of the 64 KiB blocks changed:
// random (incompressible) data, or text. It reports the patch's size per
// changed byte.
//
//	go test -run X -bench Patch64MiB -benchtime 5x ./patch
func BenchmarkPatch64MiB(b *testing.B) {
	const size, bs = 64 << 20, 64 << 10
	rng := rand.New(rand.NewPCG(7, 7))
	base := make([]byte, size)
	fill(rng, base)
	for _, kind := range []string{"random", "text"} {
		b.Run(kind, func(b *testing.B) {
			src := bytes.Clone(base)
			var changed int64
			for _, i := range rng.Perm(size / bs)[:size/bs/100] {
				blk := src[i*bs : (i+1)*bs]
				if kind == "random" {
					fill(rng, blk)
				}
				for j := range blk {
					if kind == "text" {
						blk[j] = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. "[(j*7+i)%57]
					}
				}
				changed += bs
			}
			dir := b.TempDir()
			srcPath, dstPath, patchPath := filepath.Join(dir, "src"), filepath.Join(dir, "dst"), filepath.Join(dir, "patch")
			if err := os.WriteFile(srcPath, src, 0o644); err != nil {
				b.Fatal(err)
			}
			sd, err := localdisk.OpenSource(srcPath, localdisk.SourceOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer sd.Close()
			sig := signature(b, base, blockdiff.XXH3, bs)
			b.Run("diff", func(b *testing.B) {
				b.SetBytes(size)
				var st WriteStats
				for b.Loop() {
					f, err := os.Create(patchPath)
					if err != nil {
						b.Fatal(err)
					}
					sr, err := blockdiff.NewSignatureReader(bytes.NewReader(sig))
					if err != nil {
						b.Fatal(err)
					}
					if st, err = Write(context.Background(), f, sd, size, sr, nil); err != nil {
						b.Fatal(err)
					}
					f.Close()
				}
				b.ReportMetric(float64(st.Bytes)/float64(changed), "patch/changed")
				b.ReportMetric(float64(st.Bytes), "patch-bytes")
			})
			b.Run("apply", func(b *testing.B) {
				b.SetBytes(size)
				var check, write time.Duration
				for b.Loop() {
					b.StopTimer()
					if err := os.WriteFile(dstPath, base, 0o644); err != nil {
						b.Fatal(err)
					}
					dst, err := localdisk.OpenTarget(dstPath, localdisk.TargetOptions{})
					if err != nil {
						b.Fatal(err)
					}
					if err := dst.Flush(context.Background()); err != nil { // not the apply's to pay
						b.Fatal(err)
					}
					pf, err := os.Open(patchPath)
					if err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					st, err := Apply(context.Background(), pf, dst, nil)
					if err != nil {
						b.Fatal(err)
					}
					check += st.Check
					write += st.Write
					b.StopTimer()
					pf.Close()
					dst.Close()
					b.StartTimer()
				}
				b.ReportMetric(float64(check.Milliseconds())/float64(b.N), "check-ms/op")
				b.ReportMetric(float64(write.Milliseconds())/float64(b.N), "write-ms/op")
				got, _ := os.ReadFile(dstPath)
				if !bytes.Equal(got, src) {
					b.Fatal("target differs from the source")
				}
			})
		})
	}
}
