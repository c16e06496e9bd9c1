//go:build linux

package localdisk_test

// One storage under two names (loop devices, their backing files,
// partitions) and disks in use by another program (mounted through a
// loop device, locked with fcntl as QEMU locks a running VM's image).

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/localdisk"
	"golang.org/x/sys/unix"
)

// needLoop skips the test unless loop devices can be attached here.
func needLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("no losetup")
	}
}

// attachLoop attaches a loop device over file with extra losetup
// arguments (--offset, --sizelimit, --read-only) and detaches it at
// cleanup.
func attachLoop(t *testing.T, file string, args ...string) string {
	t.Helper()
	needLoop(t)
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

func sha(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// wantOverlap checks that CheckSides refuses src and dst, naming both
// and the shared range of the storage.
func wantOverlap(t *testing.T, src, dst *localdisk.Disk, off, n, srcOff, dstOff int64) {
	t.Helper()
	err := localdisk.CheckSides(src, dst)
	wantErr(t, err, localdisk.ErrOverlap, dst.Path())
	var oe *localdisk.OverlapError
	if !errors.As(err, &oe) {
		t.Fatalf("%v: not an *OverlapError", err)
	}
	if oe.Off != off || oe.Len != n || oe.SourceOff != srcOff || oe.TargetOff != dstOff {
		t.Errorf("overlap of %d bytes at %d (source at %d, target at %d), want %d at %d (%d, %d)",
			oe.Len, oe.Off, oe.SourceOff, oe.TargetOff, n, off, srcOff, dstOff)
	}
	msg := err.Error()
	for _, s := range []string{src.Path(), dst.Path(), fmt.Sprintf("[%d, %d)", off, off+n), "Choose a target on other storage"} {
		if !strings.Contains(msg, s) {
			t.Errorf("message does not say %q: %s", s, msg)
		}
	}
}

// refusedTarget and refusedSource open a disk that should be refused,
// closing it if it is not, and return the error.
func refusedTarget(path string) error {
	d, err := localdisk.OpenTarget(path, localdisk.TargetOptions{})
	if err == nil {
		d.Close()
	}
	return err
}

func refusedSource(path string) error {
	d, err := localdisk.OpenSource(path, localdisk.SourceOptions{})
	if err == nil {
		d.Close()
	}
	return err
}

func noOverlap(t *testing.T, src, dst *localdisk.Disk) {
	t.Helper()
	if err := localdisk.CheckSides(src, dst); err != nil {
		t.Errorf("CheckSides(%s, %s): %v", src.Path(), dst.Path(), err)
	}
}

// imageFile writes a file of size random bytes.
func imageFile(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "shared.img")
	writeFile(t, p, randomBytes(newRNG(t), size))
	return p
}

// TestAliasTwoLoops: a read-only loop device as the source and another
// loop device, at an offset, over the same file as the target are one
// storage; the source file is not written.
func TestAliasTwoLoops(t *testing.T) {
	const size = 8 * MiB
	img := imageFile(t, size)
	before := sha(t, img)
	// The source is the first half; the target, from 1 MiB on, could take it.
	srcDev := attachLoop(t, img, "--read-only", "--sizelimit", strconv.Itoa(size/2))
	dstDev := attachLoop(t, img, "--offset", strconv.Itoa(MiB))
	src := openSource(t, srcDev, localdisk.SourceOptions{})
	dst := openTarget(t, dstDev, localdisk.TargetOptions{})
	wantOverlap(t, src, dst, MiB, size/2-MiB, MiB, 0)
	if !strings.Contains(localdisk.CheckSides(src, dst).Error(), img) {
		t.Errorf("the message does not name the backing file %s", img)
	}

	st, err := dst.Storage()
	if err != nil {
		t.Fatal(err)
	}
	var fst unix.Stat_t
	if err := unix.Stat(img, &fst); err != nil {
		t.Fatal(err)
	}
	want := localdisk.StorageRef{Kind: localdisk.StorageFile, Dev: uint64(fst.Dev), Ino: fst.Ino}
	if len(st.Ranges) != 1 || st.Ranges[0].Ref != want || st.Ranges[0].Off != MiB || st.Ranges[0].Len != size-MiB || st.Ranges[0].DiskOff != 0 {
		t.Errorf("Storage of %s = %+v, want %v from byte %d for %d bytes", dstDev, st, want, MiB, size-MiB)
	}
	dst.Close()
	src.Close()
	if after := sha(t, img); after != before {
		t.Fatalf("the source file changed: sha256 %s, was %s", after, before)
	}
}

// TestAliasLoopAndBackingFile: a loop device and its backing file are
// one storage, whichever is the source.
func TestAliasLoopAndBackingFile(t *testing.T) {
	const size = 4 * MiB
	img := imageFile(t, size)
	before := sha(t, img)
	dev := attachLoop(t, img, "--offset", "4096")

	src := openSource(t, dev, localdisk.SourceOptions{})
	dst := openTarget(t, img, localdisk.TargetOptions{})
	wantOverlap(t, src, dst, 4096, size-4096, 0, 4096)
	src.Close()
	dst.Close()

	src = openSource(t, img, localdisk.SourceOptions{})
	dst = openTarget(t, dev, localdisk.TargetOptions{})
	wantOverlap(t, src, dst, 4096, size-4096, 4096, 0)
	src.Close()
	dst.Close()
	if after := sha(t, img); after != before {
		t.Fatalf("the file changed: sha256 %s, was %s", after, before)
	}
}

// TestAliasLoopOverLoop: a loop device over another loop device (a block
// device, lo_rdevice) resolves through both to the file beneath.
func TestAliasLoopOverLoop(t *testing.T) {
	const size = 4 * MiB
	img := imageFile(t, size)
	inner := attachLoop(t, img, "--offset", strconv.Itoa(MiB))
	outer := attachLoop(t, inner, "--offset", strconv.Itoa(MiB))
	src := openSource(t, img, localdisk.SourceOptions{})
	dst := openTarget(t, outer, localdisk.TargetOptions{})
	wantOverlap(t, src, dst, 2*MiB, size-2*MiB, 2*MiB, 0)
	if err := localdisk.CheckSides(src, dst); !strings.Contains(err.Error(), inner) {
		t.Errorf("the message does not say it went through %s: %v", inner, err)
	}
}

// TestDisjointLoops: loop devices over disjoint ranges of one file are
// not refused, ranges that touch do not overlap, and one shared sector is
// found.
func TestDisjointLoops(t *testing.T) {
	const size = 8 * MiB
	img := imageFile(t, size)
	lo := attachLoop(t, img, "--read-only", "--sizelimit", strconv.Itoa(4*MiB))
	hi := attachLoop(t, img, "--offset", strconv.Itoa(4*MiB), "--sizelimit", strconv.Itoa(4*MiB))
	edge := attachLoop(t, img, "--offset", strconv.Itoa(4*MiB-4096), "--sizelimit", "8192")

	a := openSource(t, lo, localdisk.SourceOptions{})
	b := openTarget(t, hi, localdisk.TargetOptions{})
	noOverlap(t, a, b)
	b.Close()
	c := openTarget(t, edge, localdisk.TargetOptions{})
	wantOverlap(t, a, c, 4*MiB-4096, 4096, 4*MiB-4096, 0)
	c.Close()
	a.Close()

	// The other way round: the upper half as the source.
	b = openSource(t, hi, localdisk.SourceOptions{})
	a2 := openTarget(t, attachLoop(t, img, "--sizelimit", strconv.Itoa(4*MiB)), localdisk.TargetOptions{})
	noOverlap(t, b, a2)
}

// TestAliasPartitions: a whole disk and one of its partitions are one
// storage; two partitions of one disk, even adjacent, are not; a
// partition of a loop device is a range of its backing file.
func TestAliasPartitions(t *testing.T) {
	needLoop(t)
	if _, err := exec.LookPath("addpart"); err != nil {
		t.Skip("no addpart")
	}
	const size = 8 * MiB
	img := imageFile(t, size)
	disk := attachLoop(t, img, "--partscan")
	// Partitions from sector 2048 (1 MiB) for 2 MiB, and from 3 MiB for 4 MiB.
	for _, p := range [][]string{{"1", "2048", "4096"}, {"2", "6144", "8192"}} {
		if out, err := exec.Command("addpart", append([]string{disk}, p...)...).CombinedOutput(); err != nil {
			t.Skipf("addpart %s %v: %v: %s", disk, p, err, out)
		}
	}
	p1, p2 := disk+"p1", disk+"p2"
	for _, p := range []string{p1, p2} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("no partition node: %v", err)
		}
	}

	// The whole disk is read with AllowLive (no O_EXCL, which would keep
	// its partitions from being targets): that does not let an overlap by.
	whole := openSource(t, disk, localdisk.SourceOptions{AllowLive: true})
	d1 := openTarget(t, p1, localdisk.TargetOptions{})
	wantOverlap(t, whole, d1, MiB, 2*MiB, MiB, 0)
	whole.Close()

	s2 := openSource(t, p2, localdisk.SourceOptions{})
	noOverlap(t, s2, d1)
	d1.Close()
	s2.Close()

	f := openSource(t, img, localdisk.SourceOptions{})
	d2 := openTarget(t, p2, localdisk.TargetOptions{})
	wantOverlap(t, f, d2, 3*MiB, 4*MiB, 3*MiB, 0)
	st, err := d2.Storage()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Ranges) != 1 || !strings.Contains(st.Ranges[0].Via, "partition") || !strings.Contains(st.Ranges[0].Via, "loop device") {
		t.Errorf("Storage of %s = %+v", p2, st)
	}
	d2.Close()
	f.Close()

	// A mounted partition makes the file refused as a target, but not the
	// partition beside it.
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4")
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", p2).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", p2, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	err = refusedTarget(img)
	wantErr(t, err, localdisk.ErrMounted, img)
	if !strings.Contains(err.Error(), mnt) || !strings.Contains(err.Error(), p2) || !strings.Contains(err.Error(), "[3145728, 7340032)") {
		t.Errorf("message does not name %s, %s and the range: %v", p2, mnt, err)
	}
	openTarget(t, p1, localdisk.TargetOptions{}).Close()
}

// TestMountedBackingFile: the image file of a mounted loop device, and
// another loop device over it, are refused as targets (and, mounted
// read-write, as sources unless AllowLive); unmounted, they are accepted.
func TestMountedBackingFile(t *testing.T) {
	needLoop(t)
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4")
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16*MiB); err != nil {
		t.Fatal(err)
	}
	dev := attachLoop(t, img)
	alias := attachLoop(t, img, "--offset", strconv.Itoa(MiB))
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v: %s", err, out)
	}
	mounted := true
	umount := func() {
		if mounted {
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", mnt, err, out)
			}
			mounted = false
		}
	}
	t.Cleanup(umount) // before the loop devices are detached
	for _, p := range []string{img, alias} {
		err := refusedTarget(p)
		wantErr(t, err, localdisk.ErrMounted, p)
		for _, s := range []string{mnt, dev, "losetup -d"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("message does not say %q: %v", s, err)
			}
		}
		err = refusedSource(p)
		wantErr(t, err, localdisk.ErrMounted, p)
		if !strings.Contains(err.Error(), "AllowLive") {
			t.Errorf("message does not name AllowLive: %v", err)
		}
		openSource(t, p, localdisk.SourceOptions{AllowLive: true}).Close()
	}

	// Mounted read-only: a source may read it, a target is still refused.
	if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v: %s", err, out)
	}
	unix.Sync()
	before := sha(t, img)
	openSource(t, img, localdisk.SourceOptions{}).Close()
	err := refusedTarget(img)
	wantErr(t, err, localdisk.ErrMounted, img)
	if after := sha(t, img); after != before {
		t.Fatalf("the image changed while mounted read-only: sha256 %s, was %s", after, before)
	}

	umount()
	openTarget(t, img, localdisk.TargetOptions{}).Close()
	openTarget(t, alias, localdisk.TargetOptions{}).Close()
}

// lockHelperEnv makes the test binary a process that holds a lock on a
// file: "KIND:PATH". It says "locked" (or "refused") on stdout and holds
// the lock until its stdin closes.
const lockHelperEnv = "LOCALDISK_TEST_LOCK_HELPER"

// TestLockHelper is not a test: it is the lock-holding process of
// TestLockedTarget.
func TestLockHelper(t *testing.T) {
	spec := os.Getenv(lockHelperEnv)
	if spec == "" {
		t.Skip("only a helper process of TestLockedTarget")
	}
	kind, path, _ := strings.Cut(spec, ":")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	type lock struct {
		cmd        int
		typ        int16
		start, len int64
	}
	var locks []lock
	switch kind {
	case "ofd-write": // an OFD write lock on the whole file
		locks = []lock{{unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0}}
	case "qemu-rw": // QEMU on a running VM's image: read locks on its permission bytes
		locks = []lock{{unix.F_OFD_SETLK, unix.F_RDLCK, 100, 1}, {unix.F_OFD_SETLK, unix.F_RDLCK, 101, 1}, {unix.F_OFD_SETLK, unix.F_RDLCK, 203, 1}}
	case "qemu-ro": // QEMU reading an image it does not write
		locks = []lock{{unix.F_OFD_SETLK, unix.F_RDLCK, 100, 1}, {unix.F_OFD_SETLK, unix.F_RDLCK, 201, 1}}
	case "posix-write": // a classic fcntl(F_SETLK) write lock on a range
		locks = []lock{{unix.F_SETLK, unix.F_WRLCK, 4096, 4096}}
	default:
		fmt.Println("error: unknown kind", kind)
		os.Exit(1)
	}
	for _, l := range locks {
		lk := unix.Flock_t{Type: l.typ, Whence: io.SeekStart, Start: l.start, Len: l.len}
		if err := unix.FcntlFlock(f.Fd(), l.cmd, &lk); err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
				fmt.Println("refused")
				os.Exit(0)
			}
			fmt.Println("error:", err)
			os.Exit(1)
		}
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// holdLock starts a helper process that takes the locks of kind on path
// and returns what it said ("locked" or "refused"); the helper exits at
// cleanup, or when release is called.
func holdLock(t *testing.T, kind, path string) (said string, release func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+kind+":"+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			stdin.Close()
			cmd.Wait()
		}
	}
	t.Cleanup(release)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		release()
		t.Fatalf("lock helper: %v", err)
	}
	said = strings.TrimSpace(line)
	if said != "locked" && said != "refused" {
		release()
		t.Fatalf("lock helper %s: %s", kind, said)
	}
	return said, release
}

// TestLockedTarget: a file another process holds a fcntl lock on (OFD,
// as QEMU holds on a running VM's image, which does not conflict with
// flock; or POSIX) is refused as a target; a source only when the lock
// says it is being written. While a target is open, nobody can take such
// a lock.
func TestLockedTarget(t *testing.T) {
	img := imageFile(t, MiB)
	for _, tc := range []struct {
		kind      string
		srcLocked bool   // refused as a source too
		says      string // the target's message says
	}{
		{"ofd-write", true, "a write lock on bytes [0, end of file) held by an open file description (an OFD lock"},
		{"qemu-rw", true, "a read lock on bytes [100, 102) held by an open file description"},
		{"qemu-ro", false, "a read lock on bytes [100, 101)"},
		{"posix-write", true, "a write lock on bytes [4096, 8192) held by process"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			before := sha(t, img)
			if said, _ := holdLock(t, tc.kind, img); said != "locked" {
				t.Fatalf("helper: %s", said)
			}
			err := refusedTarget(img)
			wantErr(t, err, localdisk.ErrLocked, img)
			if !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "choose another target") {
				t.Errorf("message does not say %q: %v", tc.says, err)
			}
			err = refusedSource(img)
			if tc.srcLocked {
				wantErr(t, err, localdisk.ErrLocked, img)
			} else if err != nil {
				t.Errorf("OpenSource: %v", err)
			}
			openSource(t, img, localdisk.SourceOptions{AllowLive: true}).Close()
			if after := sha(t, img); after != before {
				t.Fatalf("the locked file changed")
			}
		})
	}

	// Unlocked, it is a target; while it is one, a VM cannot lock it.
	d := openTarget(t, img, localdisk.TargetOptions{})
	for _, kind := range []string{"qemu-ro", "posix-write"} {
		if said, _ := holdLock(t, kind, img); said != "refused" {
			t.Errorf("%s took its locks on an open target", kind)
		}
	}
	d.Close()
	if said, release := holdLock(t, "qemu-rw", img); said != "locked" {
		t.Errorf("the target's lock outlived Close")
	} else {
		release()
	}
}
