package pageblob

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// A fixed VHD is the raw disk followed by a 512-byte footer (Microsoft's
// "Virtual Hard Disk Image Format Specification", version 1.0). Azure
// managed disks are uploaded as fixed VHDs whose disk is a multiple of
// 1 MiB.
const (
	VHDFooterSize = 512
	VHDAlign      = 1 << 20 // Azure's alignment of a managed disk's size

	vhdCookie     = "conectix"
	vhdFeatures   = 0x00000002 // reserved bit, always set
	vhdVersion    = 0x00010000
	vhdFixed      = 2
	vhdNoData     = 0xFFFFFFFFFFFFFFFF // data offset of a fixed disk
	vhdMaxCHSSecs = 65535 * 16 * 255
)

// vhdEpoch is the VHD timestamp's origin: 2000-01-01 00:00:00 UTC.
var vhdEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Geometry is a disk's cylinder/head/sector geometry as the VHD
// specification computes it from the size.
type Geometry struct {
	Cylinders       uint16
	Heads           uint8
	SectorsPerTrack uint8
}

// VHDGeometry computes the CHS geometry of a disk of size bytes with the
// VHD specification's algorithm (Appendix: CHS calculation). Sizes over
// 65535*16*255 sectors (about 127 GiB) are capped, and most sizes are not
// a whole number of cylinders: the geometry then addresses less than the
// disk, which is why readers must take the size from the footer's
// current size field, not from the geometry.
func VHDGeometry(size int64) Geometry {
	total := size / 512
	if total > vhdMaxCHSSecs {
		total = vhdMaxCHSSecs
	}
	var spt, heads, cth int64
	if total >= 65535*16*63 {
		spt, heads = 255, 16
		cth = total / spt
	} else {
		spt = 17
		cth = total / spt
		heads = (cth + 1023) / 1024
		if heads < 4 {
			heads = 4
		}
		if cth >= heads*1024 || heads > 16 {
			spt, heads = 31, 16
			cth = total / spt
		}
		if cth >= heads*1024 {
			spt, heads = 63, 16
			cth = total / spt
		}
	}
	return Geometry{Cylinders: uint16(cth / heads), Heads: uint8(heads), SectorsPerTrack: uint8(spt)}
}

// VHDFooter is the footer of a fixed VHD.
//
// CreatorApp is "win " (Hyper-V) by default: qemu's vpc driver, among
// others, takes the disk size from the CHS geometry unless the creator
// is one it knows records the exact size in the footer ("win ", "qem2",
// "d2v ", "CTXS", "tap"); Hyper-V's tag is the one Azure's own tools
// write. With "win ", the creator version is Hyper-V's 10.0 and the host
// OS "Wi2k".
type VHDFooter struct {
	Size           int64 // current size = original size, bytes of disk
	Timestamp      time.Time
	CreatorApp     string // four bytes
	CreatorVersion uint32
	CreatorHostOS  string // four bytes
	Geometry       Geometry
	UniqueID       [16]byte
}

// NewVHDFooter returns the footer of a fixed VHD of size bytes (a
// multiple of 512), created now, with a random unique ID.
func NewVHDFooter(size int64) (VHDFooter, error) {
	if size <= 0 || size%512 != 0 {
		return VHDFooter{}, fmt.Errorf("%w: VHD size %d is not a positive multiple of 512", ErrBadSize, size)
	}
	f := VHDFooter{
		Size:           size,
		Timestamp:      time.Now().UTC().Truncate(time.Second),
		CreatorApp:     "win ",
		CreatorVersion: 0x000a0000,
		CreatorHostOS:  "Wi2k",
		Geometry:       VHDGeometry(size),
	}
	_, _ = rand.Read(f.UniqueID[:]) // never fails (Go 1.24+)
	return f, nil
}

// Bytes encodes the footer (big-endian fields, ones' complement checksum).
func (f VHDFooter) Bytes() [VHDFooterSize]byte {
	var b [VHDFooterSize]byte
	be := binary.BigEndian
	copy(b[0:8], vhdCookie)
	be.PutUint32(b[8:], vhdFeatures)
	be.PutUint32(b[12:], vhdVersion)
	be.PutUint64(b[16:], vhdNoData)
	ts := f.Timestamp.Sub(vhdEpoch) / time.Second
	be.PutUint32(b[24:], uint32(max(ts, 0)))
	copy(b[28:32], pad4(f.CreatorApp))
	be.PutUint32(b[32:], f.CreatorVersion)
	copy(b[36:40], pad4(f.CreatorHostOS))
	be.PutUint64(b[40:], uint64(f.Size)) // original size
	be.PutUint64(b[48:], uint64(f.Size)) // current size
	be.PutUint16(b[56:], f.Geometry.Cylinders)
	b[58] = f.Geometry.Heads
	b[59] = f.Geometry.SectorsPerTrack
	be.PutUint32(b[60:], vhdFixed)
	copy(b[68:84], f.UniqueID[:])
	// b[84] saved state 0; b[85:] reserved zeros
	be.PutUint32(b[64:], vhdChecksum(b[:]))
	return b
}

func pad4(s string) []byte {
	b := []byte("    ")
	copy(b, s)
	return b
}

// vhdChecksum is the ones' complement of the sum of the footer's bytes,
// the checksum field counted as zero.
func vhdChecksum(b []byte) uint32 {
	var sum uint32
	for i, c := range b[:VHDFooterSize] {
		if i >= 64 && i < 68 {
			continue
		}
		sum += uint32(c)
	}
	return ^sum
}

// ParseVHDFooter decodes and checks the footer of a fixed VHD: cookie,
// checksum, disk type fixed, current size a multiple of 512. Errors wrap
// ErrNotVHD.
func ParseVHDFooter(b []byte) (VHDFooter, error) {
	bad := func(why string, a ...any) (VHDFooter, error) {
		return VHDFooter{}, fmt.Errorf("%w: %s", ErrNotVHD, fmt.Sprintf(why, a...))
	}
	if len(b) < VHDFooterSize {
		return bad("footer of %d bytes", len(b))
	}
	b = b[:VHDFooterSize]
	if string(b[0:8]) != vhdCookie {
		return bad("no conectix cookie")
	}
	be := binary.BigEndian
	if got, want := be.Uint32(b[64:]), vhdChecksum(b); got != want {
		return bad("checksum %#x, computed %#x", got, want)
	}
	if t := be.Uint32(b[60:]); t != vhdFixed {
		return bad("disk type %d, not fixed (2)", t)
	}
	f := VHDFooter{
		Size:           int64(be.Uint64(b[48:])),
		Timestamp:      vhdEpoch.Add(time.Duration(be.Uint32(b[24:])) * time.Second),
		CreatorApp:     string(b[28:32]),
		CreatorVersion: be.Uint32(b[32:]),
		CreatorHostOS:  string(b[36:40]),
		Geometry:       Geometry{Cylinders: be.Uint16(b[56:]), Heads: b[58], SectorsPerTrack: b[59]},
	}
	copy(f.UniqueID[:], b[68:84])
	if f.Size <= 0 || f.Size%512 != 0 {
		return bad("current size %d is not a positive multiple of 512", f.Size)
	}
	return f, nil
}

// WriteFixedVHD writes the raw disk image at rawImage as a fixed VHD at
// localPath, ready for a managed disk upload: the image, zeros up to a
// multiple of 1 MiB, and a footer. Blocks of zeros are skipped, so the
// output is as sparse as the file system allows. The file is written
// under a temporary name, synced and renamed, so localPath is either
// absent or complete.
func WriteFixedVHD(localPath, rawImage string) (err error) {
	src, err := os.Open(rawImage)
	if err != nil {
		return fmt.Errorf("pageblob: WriteFixedVHD: %w", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return fmt.Errorf("pageblob: WriteFixedVHD: %w", err)
	}
	size := (st.Size() + VHDAlign - 1) / VHDAlign * VHDAlign
	if size == 0 {
		size = VHDAlign
	}
	footer, err := NewVHDFooter(size)
	if err != nil {
		return err
	}
	dst, err := os.CreateTemp(filepath.Dir(localPath), "."+filepath.Base(localPath)+".tmp-*")
	if err != nil {
		return fmt.Errorf("pageblob: WriteFixedVHD: %w", err)
	}
	defer func() {
		if err != nil {
			dst.Close()
			os.Remove(dst.Name())
		}
	}()
	buf := make([]byte, VHDAlign)
	for off := int64(0); off < st.Size(); {
		n, rerr := src.ReadAt(buf, off)
		if n > 0 && !allZero(buf[:n]) {
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("pageblob: WriteFixedVHD: %w", err)
			}
		}
		off += int64(n)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("pageblob: WriteFixedVHD: reading %s at %d: %w", rawImage, off, rerr)
		}
	}
	fb := footer.Bytes()
	if _, err := dst.WriteAt(fb[:], size); err != nil {
		return fmt.Errorf("pageblob: WriteFixedVHD: %w", err)
	}
	if err := dst.Sync(); err != nil {
		return fmt.Errorf("pageblob: WriteFixedVHD: %w", err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("pageblob: WriteFixedVHD: %w", err)
	}
	if err := os.Rename(dst.Name(), localPath); err != nil {
		return fmt.Errorf("pageblob: WriteFixedVHD: %w", err)
	}
	return nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Footer reads the VHD footer of a blob opened with the VHD layout.
func (b *Blob) Footer(ctx context.Context) (VHDFooter, error) {
	if !b.vhd {
		return VHDFooter{}, b.refuse("footer", 0, 0, ErrNotVHD, "the blob was not opened as a VHD")
	}
	p := make([]byte, VHDFooterSize)
	off := b.size.Load()
	if _, err := b.download(ctx, p, off); err != nil {
		return VHDFooter{}, b.wrap("footer", off, VHDFooterSize, err)
	}
	f, err := ParseVHDFooter(p)
	if err != nil {
		return VHDFooter{}, b.wrap("footer", off, VHDFooterSize, err)
	}
	return f, nil
}

// checkFooter checks the footer of a VHD blob. When write is set, a
// footer of another size is rewritten and a footer region of zeros (a
// new blob, a managed disk created for upload) gets a footer; anything
// else there is refused with ErrNotVHD rather than overwritten, since it
// may be the last 512 bytes of a raw disk. Nothing is written here: a
// page blob target writes its footer before its first change (after its
// lease is taken), and a managed disk upload writes it last
// (FinishUpload), invalidating an old one at its first change.
func (b *Blob) checkFooter(ctx context.Context, write bool) error {
	size := b.size.Load()
	p := make([]byte, VHDFooterSize)
	if _, err := b.download(ctx, p, size); err != nil {
		return b.wrap("footer", size, VHDFooterSize, err)
	}
	f, err := ParseVHDFooter(p)
	switch {
	case err == nil && f.Size == size && b.mode != modeUpload:
		return nil
	case write && (err == nil || allZero(p)):
		b.wit.footerPending.Store(true)
		b.wit.footerPresent.Store(err == nil)
		return nil
	case err == nil:
		err = fmt.Errorf("%w: footer says %d bytes, blob holds %d", ErrNotVHD, f.Size, size)
	case write:
		err = fmt.Errorf("%w: the last 512 bytes hold data that is not a VHD footer; not overwriting them", err)
	}
	return b.wrap("footer", size, VHDFooterSize, err)
}

// writeFooter writes a new footer for a disk of size bytes at offset
// size, as a change of the blob (see beforeChange).
func (b *Blob) writeFooter(ctx context.Context, size int64) error {
	if err := b.beforeChange(ctx); err != nil {
		return err
	}
	return b.putFooter(ctx, size)
}

// putFooter sends a new footer for a disk of size bytes at offset size.
func (b *Blob) putFooter(ctx context.Context, size int64) error {
	f, err := NewVHDFooter(size)
	if err != nil {
		return b.wrap("footer", size, VHDFooterSize, err)
	}
	fb := f.Bytes()
	if err := b.putPages(ctx, fb[:], size); err != nil {
		return b.wrap("footer", size, VHDFooterSize, err)
	}
	return nil
}
