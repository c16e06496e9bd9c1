package pageblob

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/deltasync/deltasync/internal/azurite"
)

// qemuImg returns the path of qemu-img, or skips the test saying why.
func qemuImg(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img is not installed (Debian: apt-get install -y qemu-utils): VHD footers not checked against qemu's vpc driver")
	}
	return p
}

func qemuVirtualSize(t *testing.T, qemu, path string) int64 {
	t.Helper()
	out, err := exec.Command(qemu, "info", "-f", "vpc", "--output", "json", path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v\n%s", path, err, out)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("qemu-img info output: %v\n%s", err, out)
	}
	return info.VirtualSize
}

func qemuCompare(t *testing.T, qemu, raw, vhd string) {
	t.Helper()
	out, err := exec.Command(qemu, "compare", "-f", "raw", "-F", "vpc", raw, vhd).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img compare -f raw -F vpc %s %s: %v\n%s", raw, vhd, err, out)
	}
}

// writeSparse writes a file of size bytes holding data at 0 (the rest a
// hole) followed by footer.
func writeSparse(t *testing.T, path string, data []byte, size int64, footer []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if footer != nil {
		if _, err := f.WriteAt(footer, size); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVHDGeometry(t *testing.T) {
	cases := []struct {
		size int64
		want Geometry
	}{
		{20 << 20, Geometry{Cylinders: 602, Heads: 4, SectorsPerTrack: 17}},
		{1 << 30, Geometry{Cylinders: 2080, Heads: 16, SectorsPerTrack: 63}},
		{127 << 30, Geometry{Cylinders: 65278, Heads: 16, SectorsPerTrack: 255}},
		{128 << 30, Geometry{Cylinders: 65535, Heads: 16, SectorsPerTrack: 255}}, // capped
		{8 << 40, Geometry{Cylinders: 65535, Heads: 16, SectorsPerTrack: 255}},
	}
	for _, c := range cases {
		if g := VHDGeometry(c.size); g != c.want {
			t.Errorf("VHDGeometry(%d) = %+v, want %+v", c.size, g, c.want)
		}
	}
}

func TestVHDFooterRoundTrip(t *testing.T) {
	f, err := NewVHDFooter(1<<30 + 3*512)
	if err != nil {
		t.Fatal(err)
	}
	b := f.Bytes()
	if string(b[:8]) != "conectix" || string(b[28:32]) != "win " || string(b[36:40]) != "Wi2k" {
		t.Fatalf("footer header % x", b[:40])
	}
	g, err := ParseVHDFooter(b[:])
	if err != nil {
		t.Fatal(err)
	}
	if g.Size != f.Size || g.Geometry != f.Geometry || g.UniqueID != f.UniqueID || !g.Timestamp.Equal(f.Timestamp) {
		t.Fatalf("round trip: %+v != %+v", g, f)
	}
	b[100] ^= 1
	if _, err := ParseVHDFooter(b[:]); !errors.Is(err, ErrNotVHD) {
		t.Fatalf("corrupt footer: %v", err)
	}
	for _, bad := range []int64{0, -512, 1000} {
		if _, err := NewVHDFooter(bad); !errors.Is(err, ErrBadSize) {
			t.Errorf("NewVHDFooter(%d): %v", bad, err)
		}
	}
	if _, err := ParseVHDFooter(make([]byte, 512)); !errors.Is(err, ErrNotVHD) {
		t.Fatalf("zeros: %v", err)
	}
}

// qemu-img computes geometry with the spec's algorithm too: ours must
// agree with its, and parse its footers. (Without force_size, qemu rounds
// the size up to what a geometry addresses and records that.)
func TestVHDGeometryMatchesQemu(t *testing.T) {
	qemu := qemuImg(t)
	dir := t.TempDir()
	for _, size := range []int64{3 * 512, 20 << 20, 1<<30 + 512, 40 << 30, 200 << 30} {
		p := filepath.Join(dir, "q.vhd")
		out, err := exec.Command(qemu, "create", "-q", "-f", "vpc", "-o", "subformat=fixed", p, strconv.FormatInt(size, 10)).CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img create %d: %v\n%s", size, err, out)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		b := make([]byte, VHDFooterSize)
		_, err = f.ReadAt(b, st.Size()-VHDFooterSize)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		q, err := ParseVHDFooter(b)
		if err != nil {
			t.Fatalf("qemu's footer for %d: %v", size, err)
		}
		if q.Size < size || q.Geometry != VHDGeometry(q.Size) {
			t.Errorf("size %d: qemu wrote size %d geometry %+v, ours for that size %+v", size, q.Size, q.Geometry, VHDGeometry(q.Size))
		}
		os.Remove(p)
	}
}

// Our footers make qemu's vpc driver report exactly the intended size,
// including sizes that no CHS geometry represents (all but a few), and
// the disk compares equal to the raw image byte for byte.
func TestVHDFooterQemu(t *testing.T) {
	qemu := qemuImg(t)
	dir := t.TempDir()
	for _, size := range []int64{7 * 512, 1 << 20, 20<<20 + 512, 1<<30 + 3*512, 130 << 30, 2000<<30 + 512} { // qemu reads VHDs up to about 2040 GiB
		var data []byte
		if size <= 32<<20 {
			data = randBytes(int(size))
		} else {
			data = randBytes(1 << 20) // large sizes: sparse, checked by info only
		}
		footer, err := NewVHDFooter(size)
		if err != nil {
			t.Fatal(err)
		}
		fb := footer.Bytes()
		raw, vhd := filepath.Join(dir, "raw.img"), filepath.Join(dir, "out.vhd")
		writeSparse(t, vhd, data, size, fb[:])
		if got := qemuVirtualSize(t, qemu, vhd); got != size {
			t.Errorf("qemu-img info: virtual size %d, want %d (geometry %+v addresses %d)", got, size, footer.Geometry,
				int64(footer.Geometry.Cylinders)*int64(footer.Geometry.Heads)*int64(footer.Geometry.SectorsPerTrack)*512)
		}
		if size <= 32<<20 {
			writeSparse(t, raw, data, size, nil)
			qemuCompare(t, qemu, raw, vhd)
		}
		os.Remove(raw)
		os.Remove(vhd)
	}
	// The control: a creator qemu does not trust gets the geometry's size.
	size := int64(1<<30 + 3*512)
	footer, _ := NewVHDFooter(size)
	footer.CreatorApp = "vpc "
	fb := footer.Bytes()
	vhd := filepath.Join(dir, "vpc.vhd")
	writeSparse(t, vhd, nil, size, fb[:])
	if got := qemuVirtualSize(t, qemu, vhd); got == size {
		t.Errorf("with creator \"vpc \" qemu still reports %d: the test cannot tell creators apart", got)
	} else {
		t.Logf("creator \"vpc \": qemu reports %d for %d (CHS); \"win \": exact", got, size)
	}
}

func TestWriteFixedVHD(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	data := randBytes(3<<20 + 1234)
	copy(data[1<<20:2<<20], make([]byte, 1<<20)) // a MiB of zeros, skipped
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "disk.vhd")
	if err := WriteFixedVHD(out, raw); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4<<20+512 {
		t.Fatalf("VHD of %d bytes, want 4 MiB + 512", len(got))
	}
	if !bytes.Equal(got[:len(data)], data) || !allZero(got[len(data):4<<20]) {
		t.Fatal("VHD data differs from the image")
	}
	f, err := ParseVHDFooter(got[4<<20:])
	if err != nil || f.Size != 4<<20 {
		t.Fatalf("footer %+v, %v", f, err)
	}
	if err := WriteFixedVHD(filepath.Join(dir, "x.vhd"), filepath.Join(dir, "missing")); err == nil {
		t.Fatal("no error for a missing image")
	}
	qemu := qemuImg(t)
	if got := qemuVirtualSize(t, qemu, out); got != 4<<20 {
		t.Fatalf("qemu-img info: virtual size %d, want %d", got, 4<<20)
	}
	// The image is shorter than the VHD (padded to 1 MiB): qemu-img
	// compare checks the padding reads as zeros.
	qemuCompare(t, qemu, raw, out)
}

// A managed disk upload target (simulated on Azurite with
// Options.ManagedDisk): the blob exists with Azure's smallest upload size,
// the footer is written last (FinishUpload), no lease, sequence number or
// Create is sent, and the blob's bytes are a fixed VHD qemu reads as the
// disk.
func TestManagedDiskUpload(t *testing.T) {
	ctx := context.Background()
	name := blobName(t)
	cred, _ := blob.NewSharedKeyCredential(azurite.Account, azurite.Key)
	c, err := pageblob.NewClientWithSharedKeyCredential(az.BlobURL(testContainer, name), cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, minManagedDisk, nil); err != nil { // done by Azure when the disk is created for upload
		t.Fatal(err)
	}
	o, rec := testOptions(t)
	o.ManagedDisk = true
	d, err := OpenTarget(ctx, az.BlobURL(testContainer, name), o)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const size = 20 << 20
	if d.Size() != size {
		t.Fatalf("Size %d, want %d", d.Size(), size)
	}
	want := make([]byte, size)
	for _, off := range []int64{0, 7 << 20, size - 1<<20} {
		p := randBytes(1 << 20)
		copy(want[off:], p)
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.WriteAt(make([]byte, 512), size); !errors.Is(err, ErrPastEnd) {
		t.Fatalf("write over the footer: %v", err)
	}
	if err := d.Resize(ctx, 40<<20); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Resize: %v", err)
	}
	if _, err := d.Snapshot(ctx); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Snapshot: %v", err)
	}
	for _, op := range []string{"lease", "sequence", "create"} {
		if n := rec.Count(op); n != 0 {
			t.Errorf("%d %s requests sent to a managed disk upload", n, op)
		}
	}
	if _, err := d.Footer(ctx); !errors.Is(err, ErrNotVHD) {
		t.Fatalf("footer before FinishUpload: %v, want none (ErrNotVHD)", err)
	}
	if err := d.FinishUpload(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := d.Footer(ctx)
	if err != nil || f.Size != size {
		t.Fatalf("footer %+v, %v", f, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// Read it back as Azure would export it: the whole blob is a fixed VHD.
	dir := t.TempDir()
	raw, vhd := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.vhd")
	if err := os.WriteFile(raw, want, 0o644); err != nil {
		t.Fatal(err)
	}
	whole := make([]byte, minManagedDisk)
	if _, err := c.DownloadBuffer(ctx, whole, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vhd, whole, 0o644); err != nil {
		t.Fatal(err)
	}
	// Open reads the disk inside the VHD.
	src, err := Open(ctx, az.BlobURL(testContainer, name), &Options{Getenv: noEnv, VHD: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Size() != size || !bytes.Equal(readAll(t, src, size), want) {
		t.Fatal("the disk does not read back")
	}
	qemu := qemuImg(t)
	if got := qemuVirtualSize(t, qemu, vhd); got != size {
		t.Fatalf("qemu-img info: %d", got)
	}
	qemuCompare(t, qemu, raw, vhd)
}

func TestManagedDiskSizeRules(t *testing.T) {
	ctx := context.Background()
	cred, _ := blob.NewSharedKeyCredential(azurite.Account, azurite.Key)
	for _, n := range []int64{20 << 20, 20<<20 + 1024, 21<<20 + 512 + 512} {
		name := blobName(t)
		c, _ := pageblob.NewClientWithSharedKeyCredential(az.BlobURL(testContainer, name), cred, nil)
		if _, err := c.Create(ctx, n, nil); err != nil {
			t.Fatal(err)
		}
		o, _ := testOptions(t)
		o.ManagedDisk = true
		if _, err := OpenTarget(ctx, az.BlobURL(testContainer, name), o); !errors.Is(err, ErrBadSize) {
			t.Errorf("managed disk upload of %d bytes: %v, want ErrBadSize", n, err)
		}
	}
}

// A page blob in VHD layout (to be imported as a managed disk) keeps a
// valid footer through a resize, and the old footer reads as zeros.
func TestVHDPageBlobResize(t *testing.T) {
	ctx := context.Background()
	o, _ := testOptions(t)
	o.VHD = true
	o.CreateSize = 1000 * 512 // not a multiple of 1 MiB
	u := az.BlobURL(testContainer, blobName(t))
	if _, err := OpenTarget(ctx, u, o); !errors.Is(err, ErrBadSize) {
		t.Fatalf("VHD of 1000 sectors: %v", err)
	}
	o.CreateSize = 2 << 20
	b, err := OpenTarget(ctx, u, o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	data := randBytes(2 << 20)
	if _, err := b.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Resize(ctx, 3<<20); err != nil {
		t.Fatal(err)
	}
	if f, err := b.Footer(ctx); err != nil || f.Size != 3<<20 {
		t.Fatalf("footer after grow: %+v, %v", f, err)
	}
	got := readAll(t, b, 3<<20)
	if !bytes.Equal(got[:2<<20], data) || !allZero(got[2<<20:]) {
		t.Fatal("grown VHD reads wrong (old footer not cleared?)")
	}
	if err := b.Resize(ctx, 1<<20); err != nil {
		t.Fatal(err)
	}
	if f, err := b.Footer(ctx); err != nil || f.Size != 1<<20 {
		t.Fatalf("footer after shrink: %+v, %v", f, err)
	}
	if err := b.Resize(ctx, 1<<20+512); !errors.Is(err, ErrBadSize) {
		t.Fatalf("resize a VHD to a size not a multiple of 1 MiB: %v", err)
	}
	if !bytes.Equal(readAll(t, b, 1<<20), data[:1<<20]) {
		t.Fatal("shrunk VHD reads wrong")
	}
	// A raw disk opened as a VHD by mistake: its last 512 bytes are data,
	// not a footer, and are not overwritten.
	rawBlob, _ := newTarget(t, 2<<20+512)
	last := randBytes(512)
	if _, err := rawBlob.WriteAt(last, 2<<20); err != nil {
		t.Fatal(err)
	}
	rawBlob.Close()
	o2, _ := testOptions(t)
	o2.VHD = true
	if _, err := OpenTarget(ctx, az.BlobURL(testContainer, rawBlob.loc.Blob), o2); !errors.Is(err, ErrNotVHD) {
		t.Fatalf("raw disk opened as a VHD target: %v, want ErrNotVHD", err)
	}
	// The failed open released its lease.
	o3, _ := testOptions(t)
	again, err := OpenTarget(ctx, az.BlobURL(testContainer, rawBlob.loc.Blob), o3)
	if err != nil {
		t.Fatalf("OpenTarget after a failed open: %v", err)
	}
	again.Close()
	r, err := Open(ctx, az.BlobURL(testContainer, rawBlob.loc.Blob), &Options{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got = make([]byte, 512)
	if _, err := r.ReadAt(got, 2<<20); err != nil || !bytes.Equal(got, last) {
		t.Fatalf("the raw disk's last bytes were changed (%v)", err)
	}
}
