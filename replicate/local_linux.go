package replicate

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/localdisk"
)

// FileTarget is a local image file (a localdisk target) whose recovery
// points are sparse copies of the image in Dir, named
// NAME@TIME.point (TIME is the UTC time of the copy, on this machine's
// clock, which is the target's own). A copy reads and writes only the
// image's allocated ranges (SEEK_DATA), in the kernel (copy_file_range)
// when it can; on filesystems that share extents (XFS, btrfs) the kernel
// makes that a reflink, so a point costs almost nothing; elsewhere (ext4)
// it costs a copy of the allocated data. For block-device targets use the
// volume manager's snapshots (LVM, ZFS) through your own Points.
//
// It embeds the Disk, so every transfer capability of the Disk is kept.
type FileTarget struct {
	*localdisk.Disk
	// Dir is where points are kept. Default: the image's directory.
	Dir string
	// Now is the clock of point times. Default time.Now.
	Now func() time.Time
}

var _ Target = (*FileTarget)(nil)

func (t *FileTarget) dir() string {
	if t.Dir != "" {
		return t.Dir
	}
	return filepath.Dir(t.Path())
}

func (t *FileTarget) prefix() string { return filepath.Base(t.Path()) + "@" }

func (t *FileTarget) pointPath(id string) string {
	return filepath.Join(t.dir(), t.prefix()+id+".point")
}

// CreatePoint copies the image into a new point file (written to a
// temporary name, synced, then renamed).
func (t *FileTarget) CreatePoint(ctx context.Context) (Point, error) {
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	ts := now().UTC()
	id := ts.Format(pointLayout)
	for {
		if _, err := os.Stat(t.pointPath(id)); os.IsNotExist(err) {
			break
		}
		ts = ts.Add(time.Nanosecond)
		id = ts.Format(pointLayout)
	}
	tmp, err := os.CreateTemp(t.dir(), "."+t.prefix()+"*.tmp")
	if err != nil {
		return Point{}, fmt.Errorf("replicate: recovery point: %w", err)
	}
	size := t.Size()
	err = tmp.Truncate(size)
	if err == nil {
		err = t.copyTo(ctx, tmp, size)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), t.pointPath(id))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return Point{}, fmt.Errorf("replicate: recovery point of %s: %w", t.Path(), err)
	}
	return Point{ID: id, Time: ts, Size: size}, nil
}

// copyTo copies the image's allocated ranges into dst at the same offsets.
func (t *FileTarget) copyTo(ctx context.Context, dst *os.File, size int64) error {
	rs, err := t.AllocatedRanges(ctx, 0, size)
	if err != nil {
		return err
	}
	src := t.BackingFile()
	var buf []byte
	for _, r := range rs {
		for off := r.Off; off < r.End(); {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(r.End()-off, 16<<20)
			if src != nil {
				ro, wo := off, off
				m, err := unix.CopyFileRange(int(src.Fd()), &ro, int(dst.Fd()), &wo, int(n), 0)
				if err == nil && m > 0 {
					off += int64(m)
					continue
				}
				src = nil // not supported here: copy through memory
			}
			if buf == nil {
				buf = make([]byte, 1<<20)
			}
			p := buf[:min(n, int64(len(buf)))]
			m, err := t.ReadAt(p, off)
			if err != nil && !(err == io.EOF && m == len(p)) {
				return err
			}
			if _, err := dst.WriteAt(p[:m], off); err != nil {
				return err
			}
			off += int64(m)
		}
	}
	return nil
}

// ListPoints lists the point files of the image, oldest first.
func (t *FileTarget) ListPoints(ctx context.Context) ([]Point, error) {
	ents, err := os.ReadDir(t.dir())
	if err != nil {
		return nil, err
	}
	var out []Point
	for _, e := range ents {
		id, ok := strings.CutPrefix(e.Name(), t.prefix())
		if !ok {
			continue
		}
		if id, ok = strings.CutSuffix(id, ".point"); !ok {
			continue
		}
		ts, err := time.Parse(pointLayout, id)
		if err != nil {
			continue
		}
		var size int64
		if fi, err := e.Info(); err == nil {
			size = fi.Size()
		}
		out = append(out, Point{ID: id, Time: ts, Size: size})
	}
	slices.SortFunc(out, func(a, b Point) int { return a.Time.Compare(b.Time) })
	return out, nil
}

// DeletePoint removes a point file.
func (t *FileTarget) DeletePoint(ctx context.Context, id string) error {
	return os.Remove(t.pointPath(id))
}

// OpenPoint opens a point file as a read-only source.
func (t *FileTarget) OpenPoint(ctx context.Context, id string) (PointSource, error) {
	return localdisk.OpenSource(t.pointPath(id), localdisk.SourceOptions{})
}
