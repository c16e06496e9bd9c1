//go:build linux

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// faultPair makes a source image of size random bytes and, on a fault
// file system, dst.img: the source with blocks changed (change's n and
// k). It returns the folder, the source's path and bytes, the target's
// bytes, and the file system.
func faultPair(t *testing.T, size, n, k int) (dir, srcPath string, src, old []byte, ffs *faultfs.FS) {
	t.Helper()
	rng := newRand(t)
	dir = t.TempDir()
	backing := filepath.Join(dir, "backing")
	if err := os.Mkdir(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	src = randomBytes(rng, size)
	old = bytes.Clone(src)
	change(rng, old, n, k)
	srcPath = filepath.Join(dir, "src.img")
	writeFile(t, srcPath, src)
	writeFile(t, filepath.Join(backing, "dst.img"), old)
	return dir, srcPath, src, old, faultfs.Mount(t, backing)
}

func testFailedFlush(t *testing.T, noDirect bool) {
	const size = 8 * miB
	dir, srcPath, src, old, ffs := faultPair(t, size, 40, 8)
	dst := ffs.Path("dst.img")
	jdir := filepath.Join(dir, "journal")

	ffs.FailNextFsync("dst.img")
	o := runCmd(t, "sync", "-json", "-journal-dir", jdir, srcPath, dst)
	want(t, o, 2, "flush", "input/output error")
	t.Logf("the run whose flush failed: %s", strings.TrimSpace(o.stderr))
	if ffs.Failures() != 1 {
		t.Fatalf("%d fsyncs failed, want 1\n%s", ffs.Failures(), o)
	}
	// What a failed write-back leaves: the disk does not hold the run's
	// writes, though the page cache did (the run drops the cached pages
	// when its flush fails; the rerun also reads with O_DIRECT).
	if got := ddDigest(t, dst, size); got != sha(old) {
		t.Fatalf("dd iflag=direct of the target after the failed flush: %s, want the old target %s", got, sha(old))
	}
	// A verify right after the failed run must see the disk, not the
	// cache: before, it read the pages whose write-back failed and
	// called the disks identical.
	if o := runCmd(t, "verify", srcPath, dst); o.code != 1 {
		t.Errorf("verify after the failed flush: want exit 1 (they differ)\n%s", o)
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

// TestFailedFlushWatchdog: a sync onto a loop device whose backing file
// is on the fault file system is killed (SIGKILL) with writes still in
// the device's page cache; the watchdog's flush of them is the one that
// fails. No later fsync reports that failure again, and the device's
// cache and its backing file's both hold what the disk lost: the rerun
// must learn it from the watchdog's record, compare everything reading
// the disk itself, and leave a backing file whose disk (dd iflag=direct
// on the fault file system) holds the source. Before, the watchdog
// ignored the failure, the rerun compared the cached pages, wrote
// nothing and exited 0.
func TestFailedFlushWatchdog(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("no losetup")
	}
	if err := faultfs.Available(); err != nil {
		t.Skip(err)
	}
	const size = 16 * miB
	dir, srcPath, src, _, ffs := faultPair(t, size, 120, 20)
	out, err := exec.Command("losetup", "--find", "--show", ffs.Path("dst.img")).CombinedOutput()
	if err != nil {
		t.Skipf("losetup on the fault file system: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	jdir := filepath.Join(dir, "journal")

	cmd, _, se := command(t, "sync", "-q", "-journal-dir", jdir, "-journal-bytes", "512K", "-bwlimit", "4M", srcPath, dev)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if js := journals(t, jdir); len(js) == 1 {
			if w, _ := watermark(js[0]); w >= 2*miB {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	ffs.FailNextFsync("dst.img")
	cmd.Process.Kill()
	cmd.Wait()
	noPanic(t, se.String())

	o := runCmd(t, "sync", "-json", "-journal-dir", jdir, srcPath, dev)
	r := figures(t, o)
	if ffs.Failures() != 1 {
		t.Fatalf("%d fsyncs failed, want 1 (the watchdog's)\n%s", ffs.Failures(), o)
	}
	if r.Resumed || !strings.Contains(r.JournalDiscardedReason, "flush") || !strings.Contains(r.JournalDiscardedReason, "failed") {
		t.Errorf("the rerun after the watchdog's failed flush: resumed %v, reason %q; want not resumed, saying the flush failed\n%s", r.Resumed, r.JournalDiscardedReason, o)
	}
	if r.BytesWritten+r.BytesZeroed == 0 {
		t.Errorf("the rerun wrote nothing: it compared the pages whose write-back failed\n%s", o)
	}
	if got := ddDigest(t, ffs.Path("dst.img"), size); got != sha(src) {
		t.Fatalf("exit 0, and the loop device's backing file, read from its disk, is not the source\n%s", o)
	}
}
