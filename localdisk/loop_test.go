//go:build linux

package localdisk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/localdisk"
)

// loopDevice attaches a loop device of size bytes (backed by a sparse
// file, or by contents when not nil) and detaches it at cleanup. It skips
// the test when that is not possible here.
func loopDevice(t *testing.T, size int64, sector int, readOnly bool, contents []byte) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("no losetup")
	}
	img := filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(img, contents, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	args := []string{"--find", "--show"}
	if sector != 0 {
		args = append(args, "--sector-size", strconv.Itoa(sector))
	}
	if readOnly {
		args = append(args, "--read-only")
	}
	args = append(args, img)
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

func TestLoopDevice(t *testing.T) {
	for _, sector := range []int64{512, 4096} {
		t.Run(strconv.FormatInt(sector, 10), func(t *testing.T) {
			rng := newRNG(t)
			const size = 4 * MiB
			model := randomBytes(rng, size)
			dev := loopDevice(t, size, int(sector), false, model)
			d := openTarget(t, dev, localdisk.TargetOptions{})

			if d.Kind() != localdisk.BlockDevice || d.Size() != size || d.LogicalSectorSize() != sector || d.PhysicalSectorSize() < sector {
				t.Fatalf("kind %v size %d logical %d physical %d", d.Kind(), d.Size(), d.LogicalSectorSize(), d.PhysicalSectorSize())
			}
			if a, m := d.WriteLimits(); a != sector || m != 64*MiB {
				t.Fatalf("WriteLimits = %d, %d", a, m)
			}
			var st unix.Stat_t
			unix.Stat(dev, &st)
			if want := fmt.Sprintf("blockdev:%d:%d:%s", unix.Major(st.Rdev), unix.Minor(st.Rdev), dev); d.Identity() != want {
				t.Fatalf("Identity = %q, want %q", d.Identity(), want)
			}
			if d.BackingFile() == nil {
				t.Fatal("no BackingFile")
			}
			if rs, err := d.AllocatedRanges(ctx, 100, size); err != nil || len(rs) != 1 || rs[0] != rg(100, size-100) {
				t.Fatalf("AllocatedRanges = %v, %v", rs, err)
			}
			mustEqual(t, "initial contents", readAll(t, d), model)

			// BLKZEROOUT on whole sectors, written zeros on partial ones.
			for _, r := range []struct{ off, n int64 }{{sector, 16 * sector}, {100, 3 * sector}, {2*MiB + 7, 20}, {size - sector - 1, sector + 1}} {
				if err := d.ZeroRange(ctx, r.off, r.n); err != nil {
					t.Fatalf("ZeroRange(%d, %d): %v", r.off, r.n, err)
				}
				clear(model[r.off : r.off+r.n])
				mustEqual(t, fmt.Sprintf("after ZeroRange(%d, %d)", r.off, r.n), readAll(t, d), model)
			}
			if _, zeroout := localdisk.ZeroFallbacks(d); zeroout {
				t.Log("BLKZEROOUT refused: zeros were written")
			}
			if err := d.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := d.DropCache(0, size); err != nil {
				t.Fatal(err)
			}
			mustEqual(t, "after Flush and DropCache", readAll(t, d), model)

			if err := d.Resize(ctx, size); err != nil {
				t.Fatalf("Resize to its own size: %v", err)
			}
			wantErr(t, d.Resize(ctx, size+sector), localdisk.ErrCannotResize, dev)
			wantErr(t, d.Resize(ctx, size-sector), localdisk.ErrCannotResize, dev)
			_, err := d.WriteAt(make([]byte, 2*sector), size-sector)
			wantErr(t, err, localdisk.ErrOutOfRange, dev)

			// The target holds O_EXCL: a source must not read it unless it accepts a live copy.
			_, err = localdisk.OpenSource(dev, localdisk.SourceOptions{})
			wantErr(t, err, localdisk.ErrLocked, dev)
			_, err = localdisk.OpenTarget(dev, localdisk.TargetOptions{})
			wantErr(t, err, localdisk.ErrLocked, dev)
			src := openSource(t, dev, localdisk.SourceOptions{AllowLive: true})
			if src.Size() != size || src.LogicalSectorSize() != sector {
				t.Fatalf("source size %d sector %d", src.Size(), src.LogicalSectorSize())
			}
			_, err = src.WriteAt([]byte{1}, 0)
			wantErr(t, err, localdisk.ErrReadOnly, dev)

			// The version of a device moves once a write reaches it.
			v1, err := src.Version(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(v1, "writes=") {
				t.Logf("no sysfs counters in version %q: a write cannot show", v1)
				return
			}
			if _, err := d.WriteAt(bytes.Repeat([]byte{5}, int(sector)), 0); err != nil {
				t.Fatal(err)
			}
			d.Flush(ctx)
			if v2, _ := src.Version(ctx); v2 == v1 {
				t.Fatalf("version %q unchanged after a write", v1)
			}
		})
	}
}

// TestLoopExclusive: a device someone holds with O_EXCL is refused.
func TestLoopExclusive(t *testing.T) {
	dev := loopDevice(t, MiB, 0, false, nil)
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = localdisk.OpenTarget(dev, localdisk.TargetOptions{})
	wantErr(t, err, localdisk.ErrLocked, dev)
	_, err = localdisk.OpenSource(dev, localdisk.SourceOptions{})
	wantErr(t, err, localdisk.ErrLocked, dev)
	unix.Close(fd)

	// A source holds O_EXCL too: nothing can claim the device while it is read.
	src := openSource(t, dev, localdisk.SourceOptions{})
	if !src.Exclusive() {
		t.Fatal("source device not held with O_EXCL")
	}
	if _, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("O_EXCL open of a device held by a source: %v", err)
	}
	src.Close()
	openTarget(t, dev, localdisk.TargetOptions{})
}

func TestLoopMounted(t *testing.T) {
	dev := loopDevice(t, 8*MiB, 0, false, nil)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })

	_, err := localdisk.OpenTarget(dev, localdisk.TargetOptions{})
	wantErr(t, err, localdisk.ErrMounted, dev)
	if !strings.Contains(err.Error(), mnt) {
		t.Errorf("error %q does not name the mount point", err)
	}
	_, err = localdisk.OpenSource(dev, localdisk.SourceOptions{})
	wantErr(t, err, localdisk.ErrMounted, dev)
	openSource(t, dev, localdisk.SourceOptions{AllowLive: true}).Close()

	// Mounted read-only: fine for a source, not for a target.
	if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
		t.Skipf("remount ro: %v: %s", err, out)
	}
	s := openSource(t, dev, localdisk.SourceOptions{})
	if s.Size() != 8*MiB || s.Exclusive() {
		t.Fatalf("size %d, exclusive %v", s.Size(), s.Exclusive())
	}
	_, err = localdisk.OpenTarget(dev, localdisk.TargetOptions{})
	wantErr(t, err, localdisk.ErrMounted, dev)
}

func TestLoopReadOnly(t *testing.T) {
	dev := loopDevice(t, MiB, 0, true, nil)
	_, err := localdisk.OpenTarget(dev, localdisk.TargetOptions{})
	wantErr(t, err, localdisk.ErrReadOnly, dev)
	openSource(t, dev, localdisk.SourceOptions{})
}

// TestLoopDirect: O_DIRECT on a 4096-byte-sector device, with unaligned
// buffers, offsets and lengths.
func TestLoopDirect(t *testing.T) {
	rng := newRNG(t)
	const size = 4 * MiB
	model := randomBytes(rng, size)
	dev := loopDevice(t, size, 4096, false, model)
	d := openTarget(t, dev, localdisk.TargetOptions{Direct: true})
	if a, _ := d.WriteLimits(); a != 4096 {
		t.Fatalf("align %d", a)
	}
	if d.BackingFile() != nil {
		t.Fatal("BackingFile with Direct")
	}
	directRoundTrip(t, rng, d, model)
	src := openSource(t, dev, localdisk.SourceOptions{AllowLive: true})
	mustEqual(t, "read back buffered", readAll(t, src), model)
}

// TestLoopBlockdiffDirect: blockdiff reads loop devices (512- and
// 4096-byte sectors) with O_DIRECT and finds exactly the blocks that
// differ, in every read mode, the last chunk short of a whole one.
func TestLoopBlockdiffDirect(t *testing.T) {
	for _, sector := range []int{512, 4096} {
		t.Run(fmt.Sprint(sector), func(t *testing.T) {
			rng := newRNG(t)
			const size = 9*MiB + 4096
			a := randomBytes(rng, size)
			b := append([]byte(nil), a...)
			var want []disk.Extent
			for _, off := range []int64{0, 5 * MiB, size - 4096} {
				b[off+7] ^= 0xff
				bs := int64(blockdiff.DefaultBlockSize)
				s := off / bs * bs
				want = append(want, disk.Extent{Off: s, Len: min(bs, size-s), Kind: disk.Data})
			}
			sa := openSource(t, loopDevice(t, size, sector, true, a), localdisk.SourceOptions{})
			sb := openSource(t, loopDevice(t, size, sector, true, b), localdisk.SourceOptions{})
			for _, mode := range []blockdiff.DirectMode{blockdiff.DirectNever, blockdiff.DirectAuto, blockdiff.DirectAlways} {
				var got []disk.Extent
				_, err := blockdiff.Compare(context.Background(), sa, size, sb, size, &blockdiff.Options{Direct: mode, DropBehind: true},
					func(e disk.Extent) error { got = append(got, e); return nil })
				if err != nil {
					t.Fatalf("mode %d: %v", mode, err)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("mode %d: got %v, want %v", mode, got, want)
				}
			}
		})
	}
}
