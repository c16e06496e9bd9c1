// Package xfstest makes XFS filesystems on loop devices for tests that
// need reflinks (FICLONE) and extent maps of a real filesystem.
package xfstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Dir mounts a new XFS filesystem of size bytes (mkfs.xfs with reflinks
// on a loop device over a sparse file) and returns its mount point,
// unmounted when the test ends; or it skips saying why. In CI (CI=true),
// which has root, loop devices and xfsprogs, it fails instead.
func Dir(t testing.TB, size int64) string {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("CI") == "true" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("needs root for a loop device and a mount")
	}
	for _, tool := range []string{"losetup", "mkfs.xfs", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip("needs %s (xfsprogs, mount): %v", tool, err)
		}
	}
	img := filepath.Join(t.TempDir(), "xfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		skip("no loop device: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	if out, err := exec.Command("mkfs.xfs", "-q", "-m", "reflink=1", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "xfs", dev, mnt).CombinedOutput(); err != nil {
		skip("mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	return mnt
}
