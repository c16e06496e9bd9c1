//go:build linux || darwin || freebsd

package blockdiff

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/deltasync/deltasync/disk"
)

var pageSize = int64(os.Getpagesize())

// mmapFile reads a file or device through read-only shared mappings of
// bounded windows, each unmapped as soon as its chunk is compared: no copy
// into user space and no anonymous memory, and the mapped pages stay
// droppable page cache.
type mmapFile struct {
	f    *os.File
	fd   int
	size int64
}

func newMmapFile(f *os.File, size int64) *mmapFile {
	return &mmapFile{f: f, fd: int(f.Fd()), size: size}
}

func (m *mmapFile) mapRange(off, end int64) ([]byte, func(), error) {
	if end > m.size {
		return nil, nil, fmt.Errorf("window [%d,%d) past the end %d", off, end, m.size)
	}
	aoff := off / pageSize * pageSize
	b, err := unix.Mmap(m.fd, aoff, int(end-aoff), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap: %w", err)
	}
	// One pass, in order: the kernel then neither promotes the pages
	// to its active list when the window is unmapped (a scan of a whole
	// disk must not pass for a working set, and the promotion costs a
	// tenth of a warm pass's CPU) nor reads around a fault at random.
	_ = unix.Madvise(b, unix.MADV_SEQUENTIAL)
	runtime.KeepAlive(m.f)
	return b[off-aoff:], func() { _ = unix.Munmap(b) }, nil
}

// prefetch starts asynchronous reads of [off,end) into the page cache so
// that the worker that maps it later finds it there: this keeps several
// reads in flight per side even though page faults are synchronous.
func (m *mmapFile) prefetch(off, end int64) {
	adviseWillNeed(m.fd, off, end-off)
}

// catchFault turns a memory fault raised while touching a mapped window
// into a FaultError. It must be deferred in a goroutine that called
// debug.SetPanicOnFault(true).
func catchFault(err *error, wins ...*faultWindow) {
	r := recover()
	if r == nil {
		return
	}
	re, ok := r.(interface{ Addr() uintptr })
	if !ok {
		panic(r)
	}
	addr := re.Addr()
	for _, w := range wins {
		if w != nil && w.contains(addr) {
			*err = &FaultError{Side: w.side, Off: w.off, Len: w.len, Msg: fmt.Sprint(r)}
			return
		}
	}
	*err = &FaultError{Side: "unknown", Msg: fmt.Sprint(r)}
}

// withFaults runs fn with faults turned into panics on this goroutine.
func withFaults(fn func()) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	fn()
}

// seekMapper lists a file's data ranges with SEEK_DATA/SEEK_HOLE.
type seekMapper struct{ f *os.File }

func newSeekMapper(f *os.File) disk.AllocationMapper { return seekMapper{f} }

var errNoAllocationMap = errors.New("allocation map not supported")

func (s seekMapper) AllocatedRanges(ctx context.Context, off, n int64) ([]disk.Range, error) {
	fd := int(s.f.Fd())
	end := off + n
	var rs []disk.Range
	for pos := off; pos < end; {
		d, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if err == syscall.ENXIO {
			break // no data from pos to EOF
		}
		if err != nil {
			if err == syscall.EINVAL || err == syscall.EOPNOTSUPP || err == syscall.ESPIPE {
				return nil, errNoAllocationMap
			}
			return nil, fmt.Errorf("SEEK_DATA at %d: %w", pos, err)
		}
		if d >= end {
			break
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE at %d: %w", d, err)
		}
		h = min(h, end)
		rs = append(rs, disk.Range{Off: d, Len: h - d})
		pos = h
	}
	runtime.KeepAlive(s.f)
	return rs, nil
}

// dropPages asks the kernel to drop the clean cached pages of a range.
func dropPages(f *os.File, off, n int64) {
	adviseDontNeed(int(f.Fd()), off, n)
	runtime.KeepAlive(f)
}
