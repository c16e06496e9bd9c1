package replicate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

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
	img       *os.File

	mu   sync.Mutex
	last int64 // the last view's ID, so that two never share one
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
	trial := f.viewPath("trial")
	if err := f.clone(trial); err != nil {
		img.Close()
		return nil, err
	}
	os.Remove(trial)
	return f, nil
}

func (f *ReflinkFreezer) viewPath(id string) string {
	return filepath.Join(f.dir, "."+filepath.Base(f.path)+".view-"+id)
}

// clone makes a reflink copy of the image at dst (a new file).
func (f *ReflinkFreezer) clone(dst string) error {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = unix.IoctlFileClone(int(out.Fd()), int(f.img.Fd()))
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

// Size returns the image's size now.
func (f *ReflinkFreezer) Size() int64 {
	st, err := f.img.Stat()
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
	return &reflinkView{Disk: src, id: "r" + id, t: time.Unix(0, n), path: p}, nil
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
	once sync.Once
	err  error
}

func (v *reflinkView) ID() string      { return v.id }
func (v *reflinkView) Time() time.Time { return v.t }

// Release closes the copy and deletes it.
func (v *reflinkView) Release(context.Context) error {
	v.once.Do(func() {
		v.err = errors.Join(v.Disk.Close(), os.Remove(v.path))
	})
	return v.err
}

var (
	_ Freezer      = (*ReflinkFreezer)(nil)
	_ ViewReleaser = (*ReflinkFreezer)(nil)
)
