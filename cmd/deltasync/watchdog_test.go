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

// TestWatchdogSeesWriter: another process writes the target, below the
// run's watermark, while a sync runs. The run's watchdog sees the write
// (fanotify, by the writer's process ID) and the run does not end with
// exit 0 and a target that differs: it fails saying another process
// wrote the target. On ext4 the watchdog's events report file handles
// (FAN_REPORT_FID); on a FUSE file system, which may not give handles,
// they may carry descriptors instead: both are run.
func TestWatchdogSeesWriter(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("fanotify needs CAP_SYS_ADMIN")
	}
	for _, fsys := range []string{"local", "fuse"} {
		t.Run(fsys, func(t *testing.T) {
			rng := newRand(t)
			dir := t.TempDir()
			const size = 16 * miB
			src := randomBytes(rng, size)
			old := bytes.Clone(src)
			change(rng, old, 120, 20)
			srcPath := filepath.Join(dir, "src.img")
			writeFile(t, srcPath, src)
			dst := filepath.Join(dir, "dst.img")
			if fsys == "fuse" {
				if err := faultfs.Available(); err != nil {
					t.Skip(err)
				}
				backing := filepath.Join(dir, "backing")
				if err := os.Mkdir(backing, 0o755); err != nil {
					t.Fatal(err)
				}
				dst = faultfs.Mount(t, backing).Path("dst.img")
			}
			writeFile(t, dst, old)
			jdir := filepath.Join(dir, "journal")
			cmd, _, se := command(t, "sync", "-q", "-journal-dir", jdir, "-journal-bytes", "512K", "-bwlimit", "4M", srcPath, dst)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(20 * time.Second)
			w := int64(0)
			for time.Now().Before(deadline) && w < 4*miB {
				if js := journals(t, jdir); len(js) == 1 {
					w, _ = watermark(js[0])
				}
				time.Sleep(2 * time.Millisecond)
			}
			// Another program writes junk at the start, long compared.
			dd := exec.Command("dd", "of="+dst, "bs=64K", "count=1", "conv=notrunc", "status=none")
			dd.Stdin = bytes.NewReader(randomBytes(rng, 64<<10))
			if out, err := dd.CombinedOutput(); err != nil {
				t.Fatalf("dd: %v: %s", err, out)
			}
			err := cmd.Wait()
			noPanic(t, se.String())
			if err == nil {
				if got := ddDigest(t, dst, size); got != sha(src) {
					t.Fatalf("exit 0 and the target differs from the source after another process wrote it during the run\n%s", se)
				}
				t.Fatalf("exit 0: the write by another process went unseen (it happened to leave the target equal?)\n%s", se)
			}
			t.Logf("the run: %v: %s", err, strings.TrimSpace(se.String()))
			if !strings.Contains(se.String(), "another process (pid ") || !strings.Contains(se.String(), "may differ from the source") {
				t.Errorf("the run failed, but not saying another process wrote the target:\n%s", se)
			}
		})
	}
}
