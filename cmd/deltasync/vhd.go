package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/pageblob"
)

// Fixed VHDs on either side (-vhd). A fixed VHD is the raw disk followed
// by a 512-byte footer (pageblob.VHDFooter): what Azure exports a managed
// disk as, and imports one from; qemu-img makes one with
// "convert -O vpc -o subformat=fixed,force_size=on".
//
// With -vhd, a side that is a fixed VHD is read and written as the disk
// inside it:
//   - a source (file or page blob) that ends in a valid fixed-VHD footer
//     is read without it;
//   - a file target that ends in one is written inside it, the footer kept
//     (and moved to the new end when the target grows);
//   - a page blob target is a fixed VHD (pageblob.Options.VHD): created as
//     one when missing, given a footer when the footer's place holds
//     zeros, refused when it holds other data;
//   - other sides, and a new file target, are raw.
//
// Managed disks (md- hosts) are fixed VHDs always. -vhd=false takes every
// side as raw bytes, footers included. Without the flag, a target that
// ends in a VHD footer is refused: writing it raw would destroy the VHD
// (qemu then calls it an invalid image), and syncing the disk inside it
// may not be what was meant either; a source that ends in one is read raw,
// with a note. Agent disks are always raw.

// vhdFlag is -vhd: not given, true or false.
type vhdFlag struct{ set, on bool }

func (v *vhdFlag) String() string {
	if v == nil || !v.set {
		return ""
	}
	return strconv.FormatBool(v.on)
}

func (v *vhdFlag) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false")
	}
	v.set, v.on = true, b
	return nil
}

func (v *vhdFlag) IsBoolFlag() bool { return true }

// given reports whether -vhd was given, and its value.
func (v vhdFlag) given() (set, on bool) { return v.set, v.on }

// registerVHD registers -vhd on fs: for seed and sync when run is set,
// else for verify.
func registerVHD(fs *flag.FlagSet, v *vhdFlag, run bool) {
	if run {
		fs.Var(v, "vhd", "fixed VHDs are the disk inside them: a source (file or page blob) or an existing file target that ends in a valid fixed-VHD footer "+
			"(the footer is kept, and moved when the target grows), and a page blob target (a missing one is created as a fixed VHD, a disk of whole MiB, "+
			"as Azure imports managed disks); other sides and a new file target are raw. -vhd=false: every side is raw bytes, footers included. "+
			"Without the flag, a target that ends in a VHD footer is refused. Always on for managed disks (md- hosts)")
		return
	}
	fs.Var(v, "vhd", "compare the disk inside a side (file or page blob) that ends in a valid fixed-VHD footer, not its footer; -vhd=false: raw bytes, footers included. Always on for managed disks (md- hosts)")
}

// vhdTail is what the last 512 bytes of a disk say about it.
type vhdTail struct {
	fixed  bool               // a valid fixed-VHD footer
	footer pageblob.VHDFooter // when fixed
	// other: a VHD footer that is not a fixed disk's (a dynamic or
	// differencing VHD), or a fixed one that does not describe this disk;
	// it says why.
	other string
}

func (t vhdTail) vhd() bool { return t.fixed || t.other != "" }

// readTail reads and classifies the last 512 bytes of r, of size bytes.
// A disk of less than two sectors is raw.
func readTail(r io.ReaderAt, size int64) (vhdTail, error) {
	if size < 2*pageblob.VHDFooterSize {
		return vhdTail{}, nil
	}
	p := make([]byte, pageblob.VHDFooterSize)
	if _, err := r.ReadAt(p, size-pageblob.VHDFooterSize); err != nil && !errors.Is(err, io.EOF) {
		return vhdTail{}, fmt.Errorf("reading its last %d bytes (is it a VHD?): %w", pageblob.VHDFooterSize, err)
	}
	return classifyTail(p, size), nil
}

// classifyTail tells a fixed-VHD footer, another VHD footer and raw data
// apart, p being the last 512 bytes of a disk of size bytes.
func classifyTail(p []byte, size int64) vhdTail {
	f, err := pageblob.ParseVHDFooter(p)
	if err == nil {
		if disk := size - pageblob.VHDFooterSize; f.Size != disk {
			return vhdTail{other: fmt.Sprintf("its footer describes a fixed VHD of %d bytes, but %d bytes precede it", f.Size, disk)}
		}
		return vhdTail{fixed: true, footer: f}
	}
	if !bytes.Equal(p[:8], []byte("conectix")) || !vhdChecksumOK(p) {
		return vhdTail{}
	}
	switch t := binary.BigEndian.Uint32(p[60:]); t {
	case 3:
		return vhdTail{other: "it is a dynamic VHD"}
	case 4:
		return vhdTail{other: "it is a differencing VHD"}
	default:
		return vhdTail{other: fmt.Sprintf("its footer says disk type %d", t)}
	}
}

// vhdChecksumOK checks a VHD footer's checksum: the ones' complement of
// the sum of its bytes, the checksum's own four counted as zero.
func vhdChecksumOK(p []byte) bool {
	var sum uint32
	for i, c := range p[:pageblob.VHDFooterSize] {
		if i < 64 || i >= 68 {
			sum += uint32(c)
		}
	}
	return binary.BigEndian.Uint32(p[64:]) == ^sum
}

// errVHDTarget refuses a target that ends in a VHD footer when -vhd was
// not given.
func errVHDTarget(arg string, t vhdTail) error {
	if t.fixed {
		return fmt.Errorf("%s ends in a fixed VHD footer (a disk of %d bytes): rerun with -vhd to write the disk inside it (the footer kept), "+
			"or with -vhd=false to write it as raw bytes (the footer overwritten)", shown(arg), t.footer.Size)
	}
	return fmt.Errorf("%s ends in a VHD footer, and %s: this tool reads and writes fixed VHDs only (qemu-img convert -O vpc -o subformat=fixed,force_size=on makes one); "+
		"-vhd=false writes it as raw bytes (the VHD is then lost)", shown(arg), t.other)
}

// errNotFixedVHD refuses a side that -vhd would take as a VHD but that
// is not a fixed VHD this tool can read.
func errNotFixedVHD(arg string, t vhdTail) error {
	return fmt.Errorf("-vhd: %s ends in a VHD footer, but %s: this tool reads and writes fixed VHDs only (qemu-img convert -O vpc -o subformat=fixed,force_size=on makes one); "+
		"-vhd=false takes its bytes as raw", shown(arg), t.other)
}

// noteRawVHD says that a source ending in a fixed-VHD footer is read as
// raw bytes, because -vhd was not given.
func noteRawVHD(arg string, t vhdTail) {
	fmt.Fprintf(os.Stderr, "deltasync: %s ends in a fixed VHD footer (a disk of %d bytes): read as raw bytes, footer included; -vhd reads the disk inside it, -vhd=false silences this note\n",
		shown(arg), t.footer.Size)
}

// localVHD opens a local disk's VHD view when -vhd asks for it, or
// refuses a target that ends in a VHD footer when the flag was not
// given. Only regular files are taken as VHDs; d is returned as it is
// otherwise, and closed when an error is returned.
func localVHD(arg string, d *localdisk.Disk, v vhdFlag, target bool) (opened, error) {
	set, on := v.given()
	if d.Kind() != localdisk.RegularFile || (set && !on) {
		return d, nil
	}
	t, err := readTail(d, d.Size())
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("%s: %w", shown(arg), err)
	}
	switch {
	case !set && target && t.vhd():
		d.Close()
		return nil, errVHDTarget(arg, t)
	case !set && t.fixed:
		noteRawVHD(arg, t)
		return d, nil
	case !set:
		return d, nil
	case t.other != "":
		d.Close()
		return nil, errNotFixedVHD(arg, t)
	case t.fixed:
		return newVHDDisk(d, t.footer), nil
	}
	if target && d.Size() > 0 {
		fmt.Fprintf(os.Stderr, "deltasync: -vhd: %s does not end in a VHD footer: written as a raw disk\n", shown(arg))
	}
	return d, nil
}

// vhdDisk is a local fixed VHD file seen as the disk inside it: bytes
// [0, Size) of the file, its footer after them. Every capability of the
// file is kept (embedded); those that reach the end are bounded by the
// disk, and Resize moves the footer.
type vhdDisk struct {
	*localdisk.Disk
	size   atomic.Int64
	footer pageblob.VHDFooter // as found, for its unique id
}

func newVHDDisk(d *localdisk.Disk, f pageblob.VHDFooter) *vhdDisk {
	v := &vhdDisk{Disk: d, footer: f}
	v.size.Store(f.Size)
	return v
}

// Size is the disk's, without the footer.
func (v *vhdDisk) Size() int64 { return v.size.Load() }

// Identity keeps the journals of the disk inside a VHD apart from those
// of the file's raw bytes.
func (v *vhdDisk) Identity() string { return v.Disk.Identity() + "#vhd" }

func (v *vhdDisk) ReadAt(p []byte, off int64) (int, error) {
	size := v.size.Load()
	if off >= size {
		return 0, io.EOF
	}
	if rest := size - off; int64(len(p)) > rest {
		n, err := v.Disk.ReadAt(p[:rest], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return v.Disk.ReadAt(p, off)
}

// inside refuses a write or a zeroing that reaches the footer.
func (v *vhdDisk) inside(op string, off, n int64) error {
	if size := v.size.Load(); off < 0 || n < 0 || off > size-n {
		return fmt.Errorf("%s %s [%d,%d): %w: the VHD's disk is %d bytes, its footer follows", op, v.Path(), off, off+n, localdisk.ErrOutOfRange, size)
	}
	return nil
}

func (v *vhdDisk) WriteAt(p []byte, off int64) (int, error) {
	if err := v.inside("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	return v.Disk.WriteAt(p, off)
}

func (v *vhdDisk) ZeroRange(ctx context.Context, off, n int64) error {
	if err := v.inside("zero", off, n); err != nil {
		return err
	}
	return v.Disk.ZeroRange(ctx, off, n)
}

// CopyRange copies from a file, or from the disk inside another VHD
// file, whose bytes are those of its file.
func (v *vhdDisk) CopyRange(ctx context.Context, src any, off, n int64) (bool, error) {
	if err := v.inside("copy", off, n); err != nil {
		return false, err
	}
	if s, ok := src.(*vhdDisk); ok {
		if off > s.Size()-n {
			return false, nil
		}
		src = s.Disk
	}
	return v.Disk.CopyRange(ctx, src, off, n)
}

func (v *vhdDisk) AllocatedRanges(ctx context.Context, off, n int64) ([]disk.Range, error) {
	size := v.size.Load()
	if off >= size {
		return nil, nil
	}
	return v.Disk.AllocatedRanges(ctx, off, min(n, size-off)) // inside [off, off+n)
}

// Resize gives the disk size bytes (a multiple of 512) and moves the
// footer to its new end, in an order that leaves a valid fixed VHD at
// each step: growing writes the new footer past the end before the old
// one is cleared; shrinking writes it inside the old disk before the file
// is cut after it. The new footer keeps the VHD's unique id and records
// Hyper-V as its creator, whose footers readers trust for the size
// (qemu takes the size of other creators' from the CHS geometry, which
// addresses a whole number of cylinders only).
func (v *vhdDisk) Resize(ctx context.Context, size int64) error {
	old := v.size.Load()
	if size == old {
		return nil
	}
	if size <= 0 || size%pageblob.VHDFooterSize != 0 {
		return fmt.Errorf("resize %s: %w: a VHD holds a disk of whole 512-byte sectors, not %d bytes", v.Path(), localdisk.ErrOutOfRange, size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	nf, err := pageblob.NewVHDFooter(size)
	if err != nil {
		return err
	}
	nf.UniqueID = v.footer.UniqueID
	nf.Timestamp = time.Now().UTC().Truncate(time.Second)
	fb := nf.Bytes()
	if size > old {
		// Past the end: through the file itself where it is at hand (not
		// with -direct), so that the file ends in a valid footer at once;
		// else grow first, and write it then.
		if f := v.BackingFile(); f != nil {
			if _, err := f.WriteAt(fb[:], size); err != nil {
				return fmt.Errorf("resize %s: writing the footer at %d: %w", v.Path(), size, err)
			}
		}
		if err := v.Disk.Resize(ctx, size+pageblob.VHDFooterSize); err != nil {
			return err
		}
		if v.BackingFile() == nil {
			if _, err := v.Disk.WriteAt(fb[:], size); err != nil {
				return err
			}
		}
		// The old footer is now disk, which reads as zeros.
		if err := v.Disk.ZeroRange(ctx, old, pageblob.VHDFooterSize); err != nil {
			return err
		}
	} else {
		if _, err := v.Disk.WriteAt(fb[:], size); err != nil {
			return err
		}
		if err := v.Disk.Resize(ctx, size+pageblob.VHDFooterSize); err != nil {
			return err
		}
	}
	v.size.Store(size)
	v.footer = nf
	return nil
}

// unwrapLocal returns the local disk under a VHD view, for the checks
// that look at the storage (localdisk.CheckSides).
func unwrapLocal(d any) any {
	if v, ok := d.(*vhdDisk); ok {
		return v.Disk
	}
	return d
}
