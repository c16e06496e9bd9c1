package localdisk

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ReadAt reads len(p) bytes at off (pread) under the io.ReaderAt contract:
// fewer bytes only with an error, and a bare io.EOF when the read reaches
// Size. It may be called concurrently. Other errors are *Error naming the
// path and the offset where the read failed.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, newError("read", d.path, off, int64(len(p)), errf(ErrOutOfRange, "negative offset"))
	}
	size := d.size.Load()
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := p
	if rest := size - off; int64(len(p)) > rest {
		want = p[:rest]
	}
	n, err := d.readAt(want, off)
	if err != nil {
		if err == io.EOF {
			err = fmt.Errorf("%w: the file ends before its size %d (truncated underneath?)", io.ErrUnexpectedEOF, size)
		}
		return n, newError("read", d.path, off+int64(n), int64(len(want)-n), err)
	}
	if len(want) < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *Disk) readAt(p []byte, off int64) (int, error) {
	if d.direct && !d.aligned(p, off) {
		return d.readBounce(p, off)
	}
	return d.f.ReadAt(p, off)
}

// WriteAt writes len(p) bytes at off (pwrite), all of them or an error. It
// may be called concurrently on disjoint ranges. It never grows the disk:
// a write past Size fails with ErrOutOfRange (use Resize). On a source it
// fails with ErrReadOnly.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	if err := d.checkWrite("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := d.writeAt(p, off)
	if err != nil {
		return n, newError("write", d.path, off+int64(n), int64(len(p)-n), err)
	}
	return n, nil
}

func (d *Disk) writeAt(p []byte, off int64) (int, error) {
	if d.direct && !d.aligned(p, off) {
		return d.writeBounce(p, off)
	}
	return d.f.WriteAt(p, off)
}

// checkWrite refuses writes to a source and writes outside [0, Size).
func (d *Disk) checkWrite(op string, off, n int64) error {
	if !d.writable {
		return newError(op, d.path, off, n, errf(ErrReadOnly, "opened as a source"))
	}
	if off < 0 || n < 0 {
		return newError(op, d.path, off, n, errf(ErrOutOfRange, "negative offset or length"))
	}
	if size := d.size.Load(); off > size-n {
		return newError(op, d.path, off, n, errf(ErrOutOfRange, "[%d,%d) reaches past the size %d; grow the target with Resize first", off, off+n, size))
	}
	return nil
}

// aligned reports whether p at off can go to O_DIRECT as it is.
func (d *Disk) aligned(p []byte, off int64) bool {
	a := d.dioAlign
	if off&(a-1) != 0 || int64(len(p))&(a-1) != 0 {
		return false
	}
	return len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))&uintptr(d.memAlign-1) == 0
}

// bounceLen is the size of a bounce buffer: unaligned direct I/O moves
// through it in pieces of at most this many bytes.
const bounceLen = 1 << 20

func (d *Disk) getBounce() []byte {
	select {
	case b := <-d.bounce:
		return b
	default:
		return alignedBuf(max(bounceLen, 2*int(d.dioAlign)), max(int(d.memAlign), int(d.dioAlign), pageSize))
	}
}

func (d *Disk) putBounce(b []byte) {
	select {
	case d.bounce <- b:
	default:
	}
}

var pageSize = unix.Getpagesize()

// alignedBuf returns n bytes starting at a multiple of align (a power of
// two), cut from a larger Go slice (the Go heap does not move objects).
func alignedBuf(n, align int) []byte {
	b := make([]byte, n+align)
	sh := (align - int(uintptr(unsafe.Pointer(&b[0]))&uintptr(align-1))) & (align - 1)
	return b[sh : sh+n : sh+n]
}

// zeroBuf is a shared, never written, page-aligned buffer of zeros for the
// write-zeros fallback of ZeroRange.
var zeroBuf = sync.OnceValue(func() []byte { return alignedBuf(bounceLen, pageSize) })

func alignDown(x, a int64) int64 { return x &^ (a - 1) }
func alignUp(x, a int64) int64   { return (x + a - 1) &^ (a - 1) }

// readBounce reads p at off through aligned pieces of a bounce buffer.
func (d *Disk) readBounce(p []byte, off int64) (int, error) {
	buf := d.getBounce()
	defer d.putBounce(buf)
	a, end := d.dioAlign, off+int64(len(p))
	for pos := off; pos < end; {
		s := alignDown(pos, a)
		e := min(alignUp(end, a), s+int64(len(buf)))
		stop := min(end, e)
		n, err := d.f.ReadAt(buf[:e-s], s)
		if int64(n) < stop-s {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return int(pos-off) + int(max(0, int64(n)-(pos-s))), err
		}
		copy(p[pos-off:stop-off], buf[pos-s:stop-s])
		pos = stop
	}
	return len(p), nil
}

// writeBounce writes p at off through aligned pieces of a bounce buffer.
// A piece whose first or last block is only partly written reads those
// blocks first (read-modify-write), under d.rmw so that two unaligned
// writes sharing a block do not undo each other. Whole-block writes need
// no lock: a write that is disjoint in bytes from a partial one cannot
// cover the partial one's blocks.
func (d *Disk) writeBounce(p []byte, off int64) (int, error) {
	buf := d.getBounce()
	defer d.putBounce(buf)
	a, end := d.dioAlign, off+int64(len(p))
	for pos := off; pos < end; {
		s := alignDown(pos, a)
		e := min(alignUp(end, a), s+int64(len(buf)))
		stop := min(end, e)
		if err := d.writePiece(buf[:e-s], s, p[pos-off:stop-off], pos-s); err != nil {
			return int(pos - off), err
		}
		pos = stop
	}
	return len(p), nil
}

// writePiece writes data at s+at through seg, the aligned blocks
// [s, s+len(seg)) that hold it.
func (d *Disk) writePiece(seg []byte, s int64, data []byte, at int64) error {
	a, e := d.dioAlign, s+int64(len(seg))
	head := at > 0
	tail := at+int64(len(data)) < int64(len(seg))
	if head || tail {
		d.rmw.Lock()
		defer d.rmw.Unlock()
		if head {
			if err := d.readBlock(seg[:a], s); err != nil {
				return err
			}
		}
		if tail && (!head || e-a > s) {
			if err := d.readBlock(seg[int64(len(seg))-a:], e-a); err != nil {
				return err
			}
		}
	}
	copy(seg[at:], data)
	if _, err := d.f.WriteAt(seg, s); err != nil {
		return err
	}
	// The last block of a file whose size is not a multiple of the block
	// was written whole: cut the file back to its size.
	if size := d.size.Load(); tail && d.kind == RegularFile && e > size {
		if err := d.control(func(fd int) error { return retryEINTR(func() error { return unix.Ftruncate(fd, size) }) }); err != nil {
			return fmt.Errorf("restoring the size %d after a partial last block: %w", size, err)
		}
	}
	return nil
}

// readBlock reads one aligned block; the part past the end of a file
// reads as zeros.
func (d *Disk) readBlock(b []byte, off int64) error {
	n, err := d.f.ReadAt(b, off)
	if errors.Is(err, io.EOF) {
		clear(b[n:])
		return nil
	}
	return err
}

func retryEINTR(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}
