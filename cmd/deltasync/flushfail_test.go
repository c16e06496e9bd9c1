//go:build linux

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/internal/faultfs"
)

// TestFailedFlush: the target lives on a FUSE file system whose next
// fsync fails with EIO and loses the writes since the last good one,
// while the page cache keeps them (internal/faultfs), as a disk's failed
// write-back does. The run exits 2 naming the flush; its rerun does not
// trust the journal, compares with O_DIRECT reads (buffered reads would
// see the lost data and call the target identical) and leaves a target
// that dd iflag=direct reads as the source. Also when the file system
// refuses O_DIRECT (noDirect, as tmpfs does): the comparison must then not
// trust the pages cached before it started.
func TestFailedFlush(t *testing.T) {
	for _, noDirect := range []bool{false, true} {
		name := "direct"
		if noDirect {
			name = "no-direct"
		}
		t.Run(name, func(t *testing.T) { testFailedFlush(t, noDirect) })
	}
}

func testFailedFlush(t *testing.T, noDirect bool) {
	rng := newRand(t)
	dir := t.TempDir()
	backing := filepath.Join(dir, "backing")
	if err := os.Mkdir(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	const size = 8 * miB
	src := randomBytes(rng, size)
	old := bytes.Clone(src)
	change(rng, old, 40, 8)
	srcPath := filepath.Join(dir, "src.img")
	writeFile(t, srcPath, src)
	writeFile(t, filepath.Join(backing, "dst.img"), old)
	ffs := faultfs.Mount(t, backing)
	dst := ffs.Path("dst.img")
	jdir := filepath.Join(dir, "journal")

	ffs.FailNextFsync("dst.img")
	o := runCmd(t, "sync", "-json", "-journal-dir", jdir, srcPath, dst)
	want(t, o, 2, "flush", "input/output error")
	t.Logf("the run whose flush failed: %s", strings.TrimSpace(o.stderr))
	if ffs.Failures() != 1 {
		t.Fatalf("%d fsyncs failed, want 1\n%s", ffs.Failures(), o)
	}
	// What a failed write-back leaves: the page cache holds the run's
	// writes, the disk does not.
	if got := sha(readFile(t, dst)); got != sha(src) {
		t.Fatalf("a buffered read of the target after the failed flush is not the source: the test would prove nothing")
	}
	if got := ddDigest(t, dst, size); got != sha(old) {
		t.Fatalf("dd iflag=direct of the target after the failed flush: %s, want the old target %s", got, sha(old))
	}

	ffs.RefuseDirect(noDirect)
	o = runCmd(t, "sync", "-json", "-journal-dir", jdir, srcPath, dst)
	ffs.RefuseDirect(false) // for dd iflag=direct
	r := figures(t, o)
	if r.Resumed {
		t.Errorf("the rerun resumed after a failed flush\n%s", o)
	}
	if !strings.Contains(r.JournalDiscardedReason, "flush failed") {
		t.Errorf("journal_discarded_reason %q does not say the flush failed\n%s", r.JournalDiscardedReason, o)
	}
	if r.BytesCompared != size {
		t.Errorf("the rerun compared %d bytes, want all %d", r.BytesCompared, size)
	}
	if r.BytesWritten+r.BytesZeroed == 0 {
		t.Errorf("the rerun wrote nothing: it read the lost data from the page cache\n%s", o)
	}
	if got := ddDigest(t, dst, size); got != sha(src) {
		t.Fatalf("exit 0, and dd iflag=direct of the target (%s) is not the source (%s)\n%s", got, sha(src), o)
	}
}
