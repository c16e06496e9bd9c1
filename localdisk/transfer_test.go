//go:build linux

package localdisk_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// TestSyncCopiesInKernel syncs file to file through transfer: the data
// goes through CopyRange (copy_file_range), the target ends identical,
// and with a Direct target (which CopyRange declines) the engine falls
// back to reading and writing with the same result.
func TestSyncCopiesInKernel(t *testing.T) {
	for _, direct := range []bool{false, true} {
		rng := newRNG(t)
		dir := t.TempDir()
		const size = 8 * MiB
		src := randomBytes(rng, size)
		dst := bytes.Clone(src)
		for i := 0; i < 20; i++ {
			o := rng.IntN(size - 70000)
			copy(dst[o:], randomBytes(rng, 1+rng.IntN(70000)))
		}
		sp, dp := filepath.Join(dir, "s.img"), filepath.Join(dir, "d.img")
		if err := os.WriteFile(sp, src, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dp, dst, 0o644); err != nil {
			t.Fatal(err)
		}
		s := openSource(t, sp, localdisk.SourceOptions{})
		d := openTarget(t, dp, localdisk.TargetOptions{Direct: direct})
		st, err := transfer.Sync(ctx, s, d, &transfer.Options{NoJournal: true, Verify: true})
		if err != nil {
			t.Fatalf("direct=%v: %v", direct, err)
		}
		got, _ := os.ReadFile(dp)
		if !bytes.Equal(got, src) || !st.Verified || st.Written == 0 {
			t.Fatalf("direct=%v: identical=%v stats %+v", direct, bytes.Equal(got, src), st)
		}
		// CopyRange itself: declines a source it cannot copy from.
		if ok, err := d.CopyRange(ctx, bytes.NewReader(src), 0, 4096); ok || err != nil {
			t.Fatalf("CopyRange from a non-file: ok=%v err=%v", ok, err)
		}
		ok, err := d.CopyRange(ctx, s, 0, 4096)
		if err != nil || ok == direct {
			t.Fatalf("direct=%v: CopyRange from a file: ok=%v err=%v", direct, ok, err)
		}
	}
}
