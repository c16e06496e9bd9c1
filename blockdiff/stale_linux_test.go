//go:build linux

package blockdiff_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/internal/faultfs"
)

// TestDirectAlwaysStaleCache: after a failed fsync (internal/faultfs) the
// page cache holds data the disk does not have. DirectAlways must find
// the difference, with O_DIRECT and also where the file system refuses
// O_DIRECT (then it drops the cached pages before reading); DirectNever
// reads the cache and is fooled, which shows the test sees the hazard.
//
// Reads use pread (NoMmap), not mappings: this process serves the FUSE
// file system itself, and a page fault on a mapping of it can deadlock
// with the garbage collector (the fault waits for the server, the server
// for the collector, the collector for the faulting thread).
func TestDirectAlwaysStaleCache(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     blockdiff.DirectMode
		noDirect bool
		fooled   bool
	}{
		{"always", blockdiff.DirectAlways, false, false},
		{"always-refused", blockdiff.DirectAlways, true, false},
		{"never", blockdiff.DirectNever, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 4 << 20
			rng := rand.New(rand.NewPCG(1, 2))
			old := make([]byte, size)
			for i := range old {
				old[i] = byte(rng.Uint32())
			}
			neu := bytes.Clone(old)
			for _, off := range []int{0, 1 << 20, size - 64<<10} {
				for i := off; i < off+64<<10; i++ {
					neu[i] ^= 0x5a
				}
			}
			dir := t.TempDir()
			backing := filepath.Join(dir, "backing")
			if err := os.Mkdir(backing, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(backing, "dst"), old, 0o644); err != nil {
				t.Fatal(err)
			}
			srcPath := filepath.Join(dir, "src")
			if err := os.WriteFile(srcPath, neu, 0o644); err != nil {
				t.Fatal(err)
			}
			ffs := faultfs.Mount(t, backing)
			w, err := os.OpenFile(ffs.Path("dst"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.WriteAt(neu, 0); err != nil {
				t.Fatal(err)
			}
			ffs.FailNextFsync("dst")
			if err := w.Sync(); !errors.Is(err, syscall.EIO) {
				t.Fatalf("fsync: %v, want EIO", err)
			}
			w.Close()

			ffs.RefuseDirect(tc.noDirect)
			src, err := os.Open(srcPath)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			dst, err := os.Open(ffs.Path("dst"))
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			var differ int64
			_, err = blockdiff.Compare(context.Background(), src, size, dst, size, &blockdiff.Options{Direct: tc.mode, NoMmap: true}, func(e disk.Extent) error {
				differ += e.Len
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.fooled && differ != 0:
				t.Fatalf("buffered reads found %d bytes differing: the cache did not hold the lost data, the test proves nothing", differ)
			case !tc.fooled && differ != 3*64<<10:
				t.Fatalf("%d bytes differ, want %d: the comparison read the lost data from the page cache", differ, 3*64<<10)
			}
		})
	}
}
