//go:build linux

package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/disk"
)

// directAlign is the alignment of direct reads (offset, length and buffer):
// the page size, which every logical sector size up to 4096 divides.
const directAlign = 4096

// directFile reads the chunks of a file or block device that are not in
// the page cache with O_DIRECT, into pooled aligned buffers: the disk
// DMA's straight into them, the kernel allocates, inserts and later
// reclaims no page-cache pages (on this project's reference machine that
// bookkeeping costs more CPU than the comparison itself), and a cold pass
// over a large disk leaves the host's page cache as it found it.
type directFile struct {
	f       *os.File // the same file, opened again with O_DIRECT
	orig    *os.File // the caller's file, for residency checks
	mode    DirectMode
	refused atomic.Bool // a direct read failed with EINVAL: page cache from now on
	pool    chan []byte
	bufLen  int
}

// openDirect opens f again with O_DIRECT, or returns nil when direct
// reads are off or impossible (not a regular file or block device, or a
// file system without O_DIRECT, such as tmpfs).
func openDirect(f *os.File, c *config) *directFile {
	if c.Direct == DirectNever {
		return nil
	}
	fi, err := f.Stat()
	if err != nil || !(fi.Mode().IsRegular() || fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0) {
		return nil
	}
	df, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_RDONLY|syscall.O_DIRECT, 0)
	runtime.KeepAlive(f)
	if err != nil {
		return nil
	}
	return &directFile{
		f: df, orig: f, mode: c.Direct,
		// Room for every buffer that can be out at once (the reads
		// ahead, one per worker and side, one spare): none is dropped
		// to the garbage collector and made again.
		pool:   make(chan []byte, c.directAhead+c.workers+1),
		bufLen: c.chunk + 2*directAlign,
	}
}

func (x *directFile) close() {
	if x != nil {
		_ = x.f.Close()
	}
}

// cold reports whether [off,end) should be read directly: always with
// DirectAlways; with DirectAuto when fewer than half of its pages are
// cached and none is dirty or under writeback (a direct read would first
// have to write those back).
func (x *directFile) cold(off, end int64) bool {
	if x == nil || x.refused.Load() || end <= off {
		return false
	}
	if x.mode == DirectAlways {
		return true
	}
	pages := uint64((end - off + pageSize - 1) / pageSize)
	cs, err := cachestat(x.orig, off, end)
	switch {
	case err == nil:
		return cs.Dirty == 0 && cs.Writeback == 0 && cs.Cache*2 < pages
	case err == unix.ENOSYS:
		return x.coldMincore(off, end, pages)
	}
	return false
}

// noCachestat is set once cachestat(2) is found missing (kernel < 6.5).
var noCachestat atomic.Bool

// cachestat reports how many pages of [off,end) of f are in the page
// cache, dirty, under writeback (cachestat(2)); ENOSYS without it.
func cachestat(f *os.File, off, end int64) (unix.Cachestat_t, error) {
	var cs unix.Cachestat_t
	if noCachestat.Load() {
		return cs, unix.ENOSYS
	}
	r := unix.CachestatRange{Off: uint64(off), Len: uint64(end - off)}
	err := unix.Cachestat(uint(f.Fd()), &r, &cs, 0)
	runtime.KeepAlive(f)
	if err == unix.ENOSYS {
		noCachestat.Store(true)
	}
	return cs, err
}

// cached reports whether every page of [off,end) of f is in the page
// cache; false when it cannot tell.
func cached(f *os.File, off, end int64) bool {
	cs, err := cachestat(f, off, end)
	return err == nil && cs.Cache >= uint64((end-off+pageSize-1)/pageSize)
}

// coldMincore is cold for kernels without cachestat: a temporary mapping
// of the range (no page is touched) and mincore.
func (x *directFile) coldMincore(off, end int64, pages uint64) bool {
	aoff := off / pageSize * pageSize
	b, err := unix.Mmap(int(x.orig.Fd()), aoff, int(end-aoff), unix.PROT_READ, unix.MAP_SHARED)
	runtime.KeepAlive(x.orig)
	if err != nil {
		return false
	}
	defer func() { _ = unix.Munmap(b) }()
	vec := make([]byte, (len(b)+int(pageSize)-1)/int(pageSize))
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return false
	}
	var cached uint64
	for _, v := range vec {
		cached += uint64(v & 1)
	}
	return cached*2 < pages
}

// errDirectRefused means the file system refused a direct read: the
// caller reads the chunk through the page cache instead.
var errDirectRefused = errors.New("direct read refused")

var errShortDisk = errors.New("unexpected end of disk (direct read): shorter than its size")

// read returns [off,end) read with O_DIRECT; only the allocated ranges are
// read (all: everything), the rest of the view is zeros.
func (x *directFile) read(ctx context.Context, side Side, off, end int64, alloc []disk.Range, all bool, count *atomic.Int64) (view, error) {
	base := off / directAlign * directAlign
	top := (end + directAlign - 1) / directAlign * directAlign
	buf := x.buffer(int(top - base))
	rel := func() {
		select {
		case x.pool <- buf[:cap(buf)]:
		default:
		}
	}
	// readAt fills [s,e) of the view, reading the aligned range around it.
	readAt := func(s, e int64) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		as := s / directAlign * directAlign
		ae := min((e+directAlign-1)/directAlign*directAlign, top)
		for pos := as; pos < e; {
			n, err := unix.Pread(int(x.f.Fd()), buf[pos-base:ae-base], pos)
			runtime.KeepAlive(x.f)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EINVAL {
				x.refused.Store(true)
				return errDirectRefused
			}
			if err != nil {
				return &ReadError{Side: side, Off: pos, Len: e - pos, Err: err}
			}
			if n == 0 {
				return &ReadError{Side: side, Off: pos, Len: e - pos, Err: errShortDisk}
			}
			count.Add(int64(min(int64(n), e-pos)))
			pos += int64(n)
			if pos < e && pos%directAlign != 0 {
				// A direct read ends short off the alignment only where
				// the disk ends.
				return &ReadError{Side: side, Off: pos, Len: e - pos, Err: errShortDisk}
			}
		}
		return nil
	}
	var err error
	if all {
		err = readAt(off, end)
	} else {
		pos := off
		for _, r := range alloc {
			s, e := max(r.Off, off), min(r.End(), end)
			if s >= e {
				continue
			}
			clear(buf[pos-base : s-base])
			if err = readAt(s, e); err != nil {
				break
			}
			pos = e
		}
		if err == nil {
			clear(buf[pos-base : end-base])
		}
	}
	if err != nil {
		rel()
		return view{}, err
	}
	return view{b: buf[off-base : end-base], off: off, free: rel}, nil
}

// buffer returns an aligned buffer of n bytes, pooled when it fits.
func (x *directFile) buffer(n int) []byte {
	select {
	case b := <-x.pool:
		if n <= cap(b) {
			return b[:n]
		}
	default:
	}
	return alignedBuffer(max(n, x.bufLen))[:n]
}

func alignedBuffer(n int) []byte {
	raw := make([]byte, n+directAlign)
	o := int(uintptr(unsafe.Pointer(&raw[0])) & (directAlign - 1))
	if o != 0 {
		o = directAlign - o
	}
	return raw[o : o+n : o+n]
}
