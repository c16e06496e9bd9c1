//go:build linux

package main

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// loopOver attaches a loop device over an existing file with extra
// losetup arguments (--offset, --sizelimit, --read-only) and detaches it
// at cleanup. It skips the test when that is not possible here.
func loopOver(t *testing.T, file string, args ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("no losetup")
	}
	args = append(append([]string{"--find", "--show"}, args...), file)
	out, err := exec.Command("losetup", args...).CombinedOutput()
	if err != nil {
		t.Skipf("losetup %s: %v: %s", strings.Join(args, " "), err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	return sha256.Sum256(readFile(t, path))
}

// TestAliasesRefused: seed, sync and verify refuse two names of one
// storage (two loop devices over one file, a loop device and its backing
// file), with -allow-live too, before writing anything: the source file's
// sha256 is unchanged. The image file of a mounted loop device is refused
// as a target. Loop devices over disjoint ranges of one file sync.
func TestAliasesRefused(t *testing.T) {
	rng := newRand(t)
	const size = 8 * miB
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journal")
	img := filepath.Join(dir, "shared.img")
	writeFile(t, img, randomBytes(rng, size))
	before := fileSum(t, img)

	// The source is the first half, read-only; the target starts 1 MiB in,
	// large enough to take the source: bytes [1, 4) MiB are both.
	ro := loopOver(t, img, "--read-only", "--sizelimit", strconv.Itoa(size/2))
	off := loopOver(t, img, "--offset", strconv.Itoa(miB))
	for _, args := range [][]string{
		{"sync", "-journal-dir", jdir, ro, off},
		{"seed", "-journal-dir", jdir, ro, off},
		{"sync", "-journal-dir", jdir, "-allow-live", ro, off},
		{"sync", "-journal-dir", jdir, "-allow-live", off, img},
		{"sync", "-journal-dir", jdir, img, off},
		{"verify", ro, off},
	} {
		o := runCmd(t, args...)
		want(t, o, 2, "share storage", args[len(args)-2], args[len(args)-1], "bytes [1048576, ")
		if fileSum(t, img) != before {
			t.Fatalf("deltasync %s wrote the shared file", strings.Join(args, " "))
		}
	}
	if js := journals(t, jdir); len(js) != 0 {
		t.Errorf("journals left: %v", js)
	}

	// Disjoint ranges of one file: the upper half becomes the lower half.
	lo := loopOver(t, img, "--read-only", "--sizelimit", strconv.Itoa(size/2))
	hi := loopOver(t, img, "--offset", strconv.Itoa(size/2), "--sizelimit", strconv.Itoa(size/2))
	want(t, runCmd(t, "sync", "-journal-dir", jdir, "-verify", lo, hi), 0)
	b := readFile(t, img)
	if !bytes.Equal(b[:size/2], b[size/2:]) {
		t.Error("the upper half is not a copy of the lower half")
	}
	want(t, runCmd(t, "verify", lo, hi), 0)
}

// TestMountedBackingFile: the image file of a mounted loop device is
// refused as a target (and left unchanged), and as a source unless
// -allow-live.
func TestMountedBackingFile(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4")
	}
	rng := newRand(t)
	const size = 16 * miB
	dir := t.TempDir()
	jdir := filepath.Join(dir, "journal")
	img := filepath.Join(dir, "fs.img")
	writeFile(t, img, make([]byte, size))
	dev := loopOver(t, img)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	if f, err := os.Open(mnt); err == nil {
		f.Sync()
		f.Close()
	}
	exec.Command("sync").Run()
	before := fileSum(t, img)

	src := filepath.Join(dir, "src.img")
	writeFile(t, src, randomBytes(rng, size))
	want(t, runCmd(t, "sync", "-journal-dir", jdir, src, img), 2, img, "mounted", mnt, dev)
	want(t, runCmd(t, "seed", "-journal-dir", jdir, src, img), 2, img, "mounted", mnt)
	if fileSum(t, img) != before {
		t.Fatal("the mounted image was written")
	}
	cp := filepath.Join(dir, "copy.img")
	want(t, runCmd(t, "seed", "-journal-dir", jdir, img, cp), 2, img, "mounted", "-allow-live")
	want(t, runCmd(t, "seed", "-journal-dir", jdir, "-allow-live", img, cp), 0)
}
