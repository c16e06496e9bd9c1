package patch

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/localdisk"
)

// TestLocalDisk applies patches to image files opened by localdisk: read
// through memory mappings, zeroed by punching holes, grown and cut.
func TestLocalDisk(t *testing.T) {
	rng := seeded(t)
	dir := t.TempDir()
	for _, c := range []sizeCase{
		{"equal", 1 << 20, 1 << 20, 64 << 10},
		{"grow", 1<<20 + 512, 2<<20 + 1000, 64 << 10},
		{"shrink", 2<<20 + 1000, 1<<20 + 512, 16 << 10},
	} {
		base := image(rng, c.base)
		src := mutate(rng, base, c.size, c.bs)
		srcPath, dstPath := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
		if err := os.WriteFile(srcPath, src, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dstPath, base, 0o644); err != nil {
			t.Fatal(err)
		}
		sd, err := localdisk.OpenSource(srcPath, localdisk.SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sig := signature(t, base, blockdiff.XXH3, c.bs)
		sr, err := blockdiff.NewSignatureReader(bytes.NewReader(sig))
		if err != nil {
			t.Fatal(err)
		}
		var p bytes.Buffer
		if _, err := Write(context.Background(), &p, sd, sd.Size(), sr, nil); err != nil {
			t.Fatal(err)
		}
		sd.Close()
		dst, err := localdisk.OpenTarget(dstPath, localdisk.TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st, err := Apply(context.Background(), bytes.NewReader(p.Bytes()), dst, &ApplyOptions{Verify: true})
		dst.Close()
		if err != nil || !st.Verified {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, err := os.ReadFile(dstPath)
		if err != nil || !bytes.Equal(got, src) {
			t.Fatalf("%s: target differs from the source (%v)", c.name, err)
		}
	}
}
