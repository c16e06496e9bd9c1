package replicate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/localdisk"
)

// ErrNoReflink is wrapped by NewReflinkFreezer's error on a filesystem
// that cannot share extents between files (ext4, tmpfs): there, an image
// cannot be frozen by a copy that costs nothing.
var ErrNoReflink = errors.New("replicate: the filesystem has no reflinks (FICLONE)")

// ReflinkFreezer freezes an image file by a reflink copy (the FICLONE
// ioctl; XFS, btrfs) each cycle: the view is the copy, which costs only
// metadata until the image's blocks change, and is deleted when released.
// The kernel writes the image's dirty pages back and takes its locks
// while it clones, so the copy holds every write that completed before
// Freeze and none that started after: a crash-consistent view, as a
// snapshot of the disk would be.
//
// Views are named .IMAGE.view-ID in Dir (the image's folder when
// empty), which must be on the image's filesystem. Like any reader of a
// live image, the view is only as consistent as what a power cut would
// leave: quiesce the guest's filesystem for an application-consistent
// one.
type ReflinkFreezer struct {
	path, dir string
	// Tag, when set before the first Freeze, goes in the views' names
	// (.IMAGE.TAG.view-ID), so that two replications of one image keep
	// apart the views each may delete (CleanViews).
	Tag string
	img *os.File // the image at NewReflinkFreezer, for Size after Close

	mu   sync.Mutex
	last int64           // the last view's ID, so that two never share one
	live map[string]bool // views this freezer made and not released: CleanViews keeps them
}

// NewReflinkFreezer opens the image at path and proves the filesystem
// has reflinks by cloning it once (the trial copy is deleted). dir is
// where views are made ("" for the image's folder).
func NewReflinkFreezer(path, dir string) (*ReflinkFreezer, error) {
	img, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := img.Stat()
	if err != nil || !st.Mode().IsRegular() {
		img.Close()
		if err == nil {
			err = fmt.Errorf("%s is not a regular file: %w (a block device is frozen by its volume manager's snapshot)", path, ErrNoReflink)
		}
		return nil, err
	}
	if dir == "" {
		dir = filepath.Dir(path)
	}
	f := &ReflinkFreezer{path: path, dir: dir, img: img}
	trial := f.viewPath(fmt.Sprintf("trial-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := f.clone(trial); err != nil {
		img.Close()
		return nil, err
	}
	os.Remove(trial)
	return f, nil
}

func (f *ReflinkFreezer) viewPrefix() string {
	p := "." + filepath.Base(f.path)
	if f.Tag != "" {
		p += "." + f.Tag
	}
	return p + ".view-"
}

func (f *ReflinkFreezer) viewPath(id string) string {
	return filepath.Join(f.dir, f.viewPrefix()+id)
}

// CleanViews deletes the views of this freezer's image and tag left by a
// process that was killed, but for those named in keep (the base of the
// next cycle, which the state file names) and those this freezer made
// and has not released (another replicator sharing it holds them).
func (f *ReflinkFreezer) CleanViews(ctx context.Context, keep []string) error {
	names, err := filepath.Glob(filepath.Join(f.dir, f.viewPrefix()+"*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		id := "r" + strings.TrimPrefix(filepath.Base(n), f.viewPrefix())
		f.mu.Lock()
		live := f.live[id]
		f.mu.Unlock()
		if live || slices.Contains(keep, id) || strings.HasPrefix(id, "rtrial-") {
			continue
		}
		if err := os.Remove(n); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// clone makes a reflink copy of the image at dst (a new file), from the
// file the path names now: an image replaced by a rename (a restore,
// qemu-img convert) is the one cloned, not the file opened first.
func (f *ReflinkFreezer) clone(dst string) error {
	src, err := os.Open(f.path)
	if err != nil {
		return err
	}
	defer src.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = unix.IoctlFileClone(int(out.Fd()), int(src.Fd()))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			return fmt.Errorf("%s: %w: %v; use XFS (mkfs.xfs -m reflink=1) or btrfs, a volume snapshot (LVM, ZFS), or a source nothing writes during a cycle", f.path, ErrNoReflink, err)
		}
		return fmt.Errorf("%s: cloning to %s: %w", f.path, dst, err)
	}
	return nil
}

// Size returns the size of the image the path names now.
func (f *ReflinkFreezer) Size() int64 {
	st, err := os.Stat(f.path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// Close closes the image; views already made stay valid.
func (f *ReflinkFreezer) Close() error { return f.img.Close() }

// Freeze makes a reflink copy of the image and opens it as the view.
func (f *ReflinkFreezer) Freeze(ctx context.Context) (View, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	n := max(time.Now().UnixNano(), f.last+1)
	f.last = n
	f.mu.Unlock()
	id := strconv.FormatInt(n, 10)
	p := f.viewPath(id)
	if err := f.clone(p); err != nil {
		return nil, err
	}
	src, err := localdisk.OpenSource(p, localdisk.SourceOptions{})
	if err != nil {
		os.Remove(p)
		return nil, err
	}
	f.mu.Lock()
	if f.live == nil {
		f.live = map[string]bool{}
	}
	f.live["r"+id] = true
	f.mu.Unlock()
	return &reflinkView{Disk: src, id: "r" + id, t: time.Unix(0, n), path: p, f: f}, nil
}

// ReleaseView deletes the view of an earlier process (the base a state
// file names).
func (f *ReflinkFreezer) ReleaseView(ctx context.Context, id string) error {
	n, ok := strings.CutPrefix(id, "r")
	if _, err := strconv.ParseInt(n, 10, 64); !ok || err != nil {
		return fmt.Errorf("replicate: %q is not a reflink view's ID", id)
	}
	err := os.Remove(f.viewPath(n))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

type reflinkView struct {
	*localdisk.Disk
	id   string
	t    time.Time
	path string
	f    *ReflinkFreezer
	once sync.Once
	err  error
}

// ChangedSince lists the ranges that may differ from the earlier view
// prevID, from the two copies' extent maps (FIEMAP): where both map a
// range to the same physical extent they share its blocks, so its bytes
// are equal; everything else (written since, holes on one side only,
// extents the filesystem cannot place, a size change) is listed. A write
// to the image after a clone lands in new blocks (copy on write), so a
// change is never missed. A missing earlier view, or a filesystem that
// cannot map extents, is ErrNoBase: the cycle compares everything.
func (v *reflinkView) ChangedSince(ctx context.Context, prevID string) ([]disk.Range, error) {
	n, ok := strings.CutPrefix(prevID, "r")
	if !ok {
		return nil, fmt.Errorf("%w: %q is not a reflink view", ErrNoBase, prevID)
	}
	prev, err := os.Open(v.f.viewPath(n))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoBase, err)
	}
	defer prev.Close()
	cur, err := os.Open(v.path)
	if err != nil {
		return nil, err
	}
	defer cur.Close()
	old, err := fiemap(ctx, prev)
	if err != nil {
		return nil, fmt.Errorf("%w: extent map of %s: %v", ErrNoBase, prev.Name(), err)
	}
	now, err := fiemap(ctx, cur)
	if err != nil {
		return nil, fmt.Errorf("%w: extent map of %s: %v", ErrNoBase, cur.Name(), err)
	}
	ps, err := prev.Stat()
	if err != nil {
		return nil, err
	}
	return extentDiff(old, now, ps.Size(), v.Size()), nil
}

func (v *reflinkView) ID() string      { return v.id }
func (v *reflinkView) Time() time.Time { return v.t }

// Release closes the copy and deletes it.
func (v *reflinkView) Release(context.Context) error {
	v.once.Do(func() {
		v.err = errors.Join(v.Disk.Close(), os.Remove(v.path))
		v.f.mu.Lock()
		delete(v.f.live, v.id)
		v.f.mu.Unlock()
	})
	return v.err
}

// extent is one FIEMAP extent.
type extent struct {
	logical, physical, length int64
	flags                     uint32
}

// FIEMAP flags (linux/fiemap.h).
const (
	fiemapFlagSync   = 0x1
	fiemapExtentLast = 0x1
	// Extents whose physical place says nothing about their bytes:
	// unknown, delayed allocation, encoded, encrypted, not aligned,
	// inline, tail-packed.
	fiemapExtentOpaque    = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400
	fiemapExtentUnwritten = 0x800 // allocated, reads as zeros
	fsIocFiemap           = 0xC020660B
)

// fiemap returns f's extents, its dirty pages written first
// (FIEMAP_FLAG_SYNC).
func fiemap(ctx context.Context, f *os.File) ([]extent, error) {
	const hdr, size, count = 32, 56, 256
	buf := make([]byte, hdr+size*count)
	ne := binary.NativeEndian
	var out []extent
	start := uint64(0)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		clear(buf)
		ne.PutUint64(buf[0:], start)
		ne.PutUint64(buf[8:], ^uint64(0)-start)
		ne.PutUint32(buf[16:], fiemapFlagSync)
		ne.PutUint32(buf[24:], count)
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
			return nil, e
		}
		n := int(ne.Uint32(buf[20:]))
		if n == 0 {
			return out, nil
		}
		for i := range n {
			e := buf[hdr+i*size:]
			out = append(out, extent{logical: int64(ne.Uint64(e[0:])), physical: int64(ne.Uint64(e[8:])),
				length: int64(ne.Uint64(e[16:])), flags: ne.Uint32(e[40:])})
		}
		last := out[len(out)-1]
		if last.flags&fiemapExtentLast != 0 || last.length <= 0 {
			return out, nil
		}
		start = uint64(last.logical + last.length)
	}
}

// extentDiff returns the ranges of [0, max(oldSize, newSize)) whose
// bytes may differ between two files with those extents: all but the
// ranges both leave as holes, or both map to the same physical place
// (both unwritten or both written, neither opaque).
func extentDiff(old, now []extent, oldSize, newSize int64) []disk.Range {
	end := max(oldSize, newSize)
	cuts := []int64{0, end, min(oldSize, newSize)}
	for _, es := range [][]extent{old, now} {
		for _, e := range es {
			cuts = append(cuts, min(e.logical, end), min(e.logical+e.length, end))
		}
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	// at returns the extent of es holding off (es sorted, disjoint).
	at := func(es []extent, off int64) (extent, bool) {
		i, _ := slices.BinarySearchFunc(es, off, func(e extent, off int64) int {
			switch {
			case e.logical+e.length <= off:
				return -1
			case e.logical > off:
				return 1
			}
			return 0
		})
		if i < len(es) && es[i].logical <= off && off < es[i].logical+es[i].length {
			return es[i], true
		}
		return extent{}, false
	}
	var out []disk.Range
	for i := 0; i+1 < len(cuts); i++ {
		a, b := cuts[i], cuts[i+1]
		if a >= end {
			break
		}
		eo, inOld := at(old, a)
		en, inNew := at(now, a)
		same := false
		switch {
		case a >= min(oldSize, newSize):
			// past one file's end: the sizes differ here
		case !inOld && !inNew:
			same = true // a hole in both
		case inOld && inNew:
			same = eo.flags&fiemapExtentOpaque == 0 && en.flags&fiemapExtentOpaque == 0 &&
				eo.flags&fiemapExtentUnwritten == en.flags&fiemapExtentUnwritten &&
				eo.physical+(a-eo.logical) == en.physical+(a-en.logical)
		}
		if !same {
			out = append(out, disk.Range{Off: a, Len: b - a})
		}
	}
	return disk.Normalize(out)
}

var (
	_ ViewCleaner  = (*ReflinkFreezer)(nil)
	_ Changer      = (*reflinkView)(nil)
	_ Freezer      = (*ReflinkFreezer)(nil)
	_ ViewReleaser = (*ReflinkFreezer)(nil)
)
