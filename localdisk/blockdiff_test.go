//go:build linux

package localdisk_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/localdisk"
)

// TestSyncWithBlockdiff makes a target identical to a sparse source with
// blockdiff.Compare (through AllocatedRanges and BackingFile mappings, or
// through ReadAt with Direct), then checks that nothing differs.
func TestSyncWithBlockdiff(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			rng := newRNG(t)
			dir := t.TempDir()
			const size = 4*MiB + 512
			srcPath, dstPath := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
			f, _ := os.Create(srcPath)
			f.Truncate(size)
			f.WriteAt(randomBytes(rng, 300<<10), 100<<10)
			f.WriteAt(randomBytes(rng, 4096), 3*MiB)
			f.Close()
			f, _ = os.Create(dstPath)
			f.Truncate(2 * MiB)
			f.WriteAt(randomBytes(rng, MiB), 0) // data where the source has holes
			f.Close()

			src := openSource(t, srcPath, localdisk.SourceOptions{})
			dst := openTarget(t, dstPath, localdisk.TargetOptions{Direct: direct})
			if err := dst.Resize(ctx, src.Size()); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, MiB)
			_, err := blockdiff.Compare(ctx, src, src.Size(), dst, dst.Size(), nil, func(e disk.Extent) error {
				if e.IsZero() {
					return dst.ZeroRange(ctx, e.Off, e.Len)
				}
				for off := e.Off; off < e.End(); off += int64(len(buf)) {
					n := min(int64(len(buf)), e.End()-off)
					if _, err := src.ReadAt(buf[:n], off); err != nil {
						return err
					}
					if _, err := dst.WriteAt(buf[:n], off); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := dst.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			st, err := blockdiff.Compare(ctx, src, src.Size(), dst, dst.Size(), nil, func(e disk.Extent) error {
				return fmt.Errorf("still differs: %v", e)
			})
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, "target", readAll(t, dst), readAll(t, src))
			t.Logf("second pass: %+v", st)
		})
	}
}
