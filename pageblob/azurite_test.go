package pageblob

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/internal/azurite"
	"github.com/deltasync/deltasync/pageblob/pageblobtest"
)

func fastRetry() policy.RetryOptions {
	return policy.RetryOptions{RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond}
}

func TestWriteReadBack(t *testing.T) {
	const size = 10 << 20
	b, rec := newTarget(t, size)
	if b.Size() != size {
		t.Fatalf("Size %d, want %d", b.Size(), size)
	}
	if a, m := b.WriteLimits(); a != 512 || m != 4<<20 {
		t.Fatalf("WriteLimits %d, %d", a, m)
	}
	want := make([]byte, size)
	writes := []struct {
		off int64
		n   int
	}{{0, 512}, {4096, 64 << 10}, {1 << 20, 5<<20 + 512}, {size - 512, 512}}
	for _, w := range writes {
		p := randBytes(w.n)
		copy(want[w.off:], p)
		n, err := b.WriteAt(p, w.off)
		if err != nil || n != w.n {
			t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", w.n, w.off, n, err)
		}
	}
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, b, size); !bytes.Equal(got, want) {
		t.Fatal("read back differs from what was written")
	}
	// A read past the end is short, with io.EOF.
	p := make([]byte, 1024)
	if n, err := b.ReadAt(p, size-512); n != 512 || err != io.EOF {
		t.Fatalf("ReadAt across the end = %d, %v; want 512, EOF", n, err)
	}
	if n, err := b.ReadAt(p, size); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt at the end = %d, %v; want 0, EOF", n, err)
	}
	// The 5 MiB write went out as two Put Pages; every Put Page had a
	// transactional CRC64, the lease and the sequence number.
	puts := 0
	for _, r := range rec.Requests() {
		if r.Op != "put-page" {
			continue
		}
		puts++
		if r.End-r.Start+1 > MaxPut {
			t.Errorf("Put Page of %d bytes", r.End-r.Start+1)
		}
		for _, h := range []string{"x-ms-content-crc64", "x-ms-lease-id", "x-ms-if-sequence-number-eq"} {
			if r.Header.Get(h) == "" {
				t.Errorf("Put Page at %d without %s", r.Start, h)
			}
		}
	}
	if puts != 5 {
		t.Errorf("%d Put Pages, want 5", puts)
	}
}

func TestRefusedBeforeSending(t *testing.T) {
	const size = 1 << 20
	b, rec := newTarget(t, size)
	rec.Reset()
	ctx := context.Background()
	cases := []struct {
		name string
		err  error
		f    func() error
	}{
		{"unaligned offset", ErrUnaligned, func() error { _, err := b.WriteAt(make([]byte, 512), 100); return err }},
		{"unaligned length", ErrUnaligned, func() error { _, err := b.WriteAt(make([]byte, 100), 0); return err }},
		{"write past end", ErrPastEnd, func() error { _, err := b.WriteAt(make([]byte, 1024), size-512); return err }},
		{"write at end", ErrPastEnd, func() error { _, err := b.WriteAt(make([]byte, 512), size); return err }},
		{"clear unaligned", ErrUnaligned, func() error { return b.ZeroRange(ctx, 1, 512) }},
		{"clear past end", ErrPastEnd, func() error { return b.ZeroRange(ctx, 0, size+512) }},
		{"copy past end", ErrPastEnd, func() error { return b.CopyRangeFromURL(ctx, "https://a.blob.core.windows.net/c/b", 0, size+512) }},
		{"resize over 8 TiB", ErrBadSize, func() error { return b.Resize(ctx, MaxBlobSize+512) }},
		{"resize unaligned", ErrBadSize, func() error { return b.Resize(ctx, size+100) }},
		{"resize negative", ErrBadSize, func() error { return b.Resize(ctx, -512) }},
	}
	for _, c := range cases {
		err := c.f()
		if !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
		var pe *Error
		if !errors.As(err, &pe) || pe.URL == "" {
			t.Errorf("%s: %v is not a *pageblob.Error with the URL", c.name, err)
		}
	}
	if n := len(rec.Requests()); n != 0 {
		t.Fatalf("%d requests sent for refused operations: %+v", n, rec.Requests())
	}
	// Resize to exactly 8 TiB is Azure's maximum and is allowed.
	if err := b.Resize(ctx, MaxBlobSize); err != nil {
		t.Fatalf("Resize to 8 TiB: %v", err)
	}
}

// The recorder itself refuses what Azure refuses when something bypasses
// the library's checks (the SDK used directly).
func TestRecorderCatchesViolations(t *testing.T) {
	rec := &pageblobtest.Recorder{}
	cred, _ := blob.NewSharedKeyCredential(azurite.Account, azurite.Key)
	c, err := pageblob.NewClientWithSharedKeyCredential(az.BlobURL(testContainer, blobName(t)), cred,
		&pageblob.ClientOptions{ClientOptions: policy.ClientOptions{Transport: rec, Retry: policy.RetryOptions{MaxRetries: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Create(ctx, MaxBlobSize+512, nil); err == nil {
		t.Error("Create of 8 TiB + 512 was not refused")
	}
	if _, err := c.Create(ctx, 1<<20, nil); err != nil {
		t.Fatal(err)
	}
	body := func(n int) io.ReadSeekCloser { return streaming.NopCloser(bytes.NewReader(make([]byte, n))) }
	if _, err := c.UploadPages(ctx, body(5<<20), blob.HTTPRange{Offset: 0, Count: 5 << 20}, nil); err == nil {
		t.Error("Put Page of 5 MiB was not refused")
	}
	if _, err := c.UploadPages(ctx, body(1024), blob.HTTPRange{Offset: 1<<20 - 512, Count: 1024}, nil); err == nil {
		t.Error("Put Page past the end was not refused")
	}
	if _, err := c.Resize(ctx, 1000, nil); err == nil {
		t.Error("resize to 1000 bytes was not refused")
	}
	if v := rec.Violations(); len(v) != 4 {
		t.Fatalf("%d violations recorded, want 4: %q", len(v), v)
	}
}

// The SDK version in use returns the error when a transactional
// validation cannot be computed (older versions returned nil and sent
// nothing). The library precomputes its CRC64, but keep the SDK honest.
func TestSDKReportsValidationErrors(t *testing.T) {
	cred, _ := blob.NewSharedKeyCredential(azurite.Account, azurite.Key)
	c, err := pageblob.NewClientWithSharedKeyCredential(az.BlobURL(testContainer, blobName(t)), cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.UploadPages(context.Background(), failingBody{}, blob.HTTPRange{Offset: 0, Count: 512},
		&pageblob.UploadPagesOptions{TransactionalValidation: blob.TransferValidationTypeComputeCRC64()})
	if err == nil {
		t.Fatal("UploadPages returned nil although the CRC64 could not be computed")
	}
}

type failingBody struct{}

func (failingBody) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }
func (failingBody) Seek(off int64, whence int) (int64, error) {
	if whence == io.SeekEnd {
		return 512, nil
	}
	return 0, nil
}
func (failingBody) Close() error { return nil }

func TestZeroRangeAndAllocatedRanges(t *testing.T) {
	const size = 8 << 20
	b, _ := newTarget(t, size)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := b.WriteAt(randBytes(1<<20), 0)
	must(err)
	_, err = b.WriteAt(randBytes(64<<10), 3<<20)
	must(err)
	_, err = b.WriteAt(randBytes(512), size-512)
	must(err)
	want := []disk.Range{{Off: 0, Len: 1 << 20}, {Off: 3 << 20, Len: 64 << 10}, {Off: size - 512, Len: 512}}
	check := func(what string, want []disk.Range) {
		t.Helper()
		got, err := b.AllocatedRanges(ctx, 0, size)
		must(err)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: AllocatedRanges = %v, want %v", what, got, want)
		}
		// A fresh reader (no cache) sees the same as the cached lists.
		r, err := Open(ctx, az.BlobURL(testContainer, b.loc.Blob), &Options{Getenv: noEnv, RangeCacheSegments: -1})
		must(err)
		defer r.Close()
		fresh, err := r.AllocatedRanges(ctx, 0, size)
		must(err)
		if !slices.Equal(fresh, want) {
			t.Fatalf("%s: fresh AllocatedRanges = %v, want %v", what, fresh, want)
		}
	}
	check("after writes", want)
	// Clear the middle of the first range and all of the second.
	must(b.ZeroRange(ctx, 256<<10, 256<<10))
	must(b.ZeroRange(ctx, 3<<20, 64<<10))
	check("after clears", []disk.Range{{Off: 0, Len: 256 << 10}, {Off: 512 << 10, Len: 512 << 10}, {Off: size - 512, Len: 512}})
	got := readAll(t, b, size)
	if !allZero(got[256<<10:512<<10]) || !allZero(got[3<<20:3<<20+64<<10]) {
		t.Fatal("cleared ranges do not read as zeros")
	}
	// A sub-range query is clipped to the range asked.
	sub, err := b.AllocatedRanges(ctx, 100<<10, 500<<10)
	must(err)
	if want := []disk.Range{{Off: 100 << 10, Len: 156 << 10}, {Off: 512 << 10, Len: 88 << 10}}; !slices.Equal(sub, want) {
		t.Fatalf("sub-range = %v, want %v", sub, want)
	}
	// Past the end: nothing.
	if rs, err := b.AllocatedRanges(ctx, size, 4096); err != nil || len(rs) != 0 {
		t.Fatalf("past the end: %v, %v", rs, err)
	}
}

// AllocatedRanges asked chunk by chunk (as blockdiff asks) lists each
// segment once, and follows the Blob's own writes.
func TestAllocatedRangesCache(t *testing.T) {
	const size = 4 << 20
	o, rec := testOptions(t)
	o.CreateSize = size
	o.ListSegment = 1 << 20
	ctx := context.Background()
	b, err := OpenTarget(ctx, az.BlobURL(testContainer, blobName(t)), o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.WriteAt(randBytes(4096), 8192); err != nil {
		t.Fatal(err)
	}
	rec.Reset()
	for off := int64(0); off < size; off += 64 << 10 {
		if _, err := b.AllocatedRanges(ctx, off, 64<<10); err != nil {
			t.Fatal(err)
		}
	}
	if n := rec.Count("page-ranges"); n != 4 {
		t.Fatalf("%d Get Page Ranges for 4 segments asked in 64 chunks, want 4", n)
	}
	for _, r := range rec.Requests() {
		if r.Op == "page-ranges" && r.End-r.Start+1 != 1<<20 {
			t.Errorf("segment [%d, %d] is not 1 MiB", r.Start, r.End)
		}
	}
	if _, err := b.WriteAt(randBytes(512), 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := b.ZeroRange(ctx, 8192, 4096); err != nil {
		t.Fatal(err)
	}
	rs, err := b.AllocatedRanges(ctx, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	if want := []disk.Range{{Off: 2 << 20, Len: 512}}; !slices.Equal(rs, want) {
		t.Fatalf("after write and clear: %v, want %v", rs, want)
	}
	if n := rec.Count("page-ranges"); n != 4 {
		t.Fatalf("%d Get Page Ranges: the cache should have followed the writes", n)
	}
}

// A comparison reads only allocated ranges: a mostly empty blob costs a
// listing and the reads of its data.
func TestUnallocatedRangesSkipped(t *testing.T) {
	const size = 16 << 20
	b, rec := newTarget(t, size)
	data := randBytes(128 << 10)
	if _, err := b.WriteAt(data, 5<<20); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	src, err := Open(ctx, az.BlobURL(testContainer, b.loc.Blob), &Options{Getenv: noEnv, Transport: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	rec.Reset()
	// Compare the blob with a local copy of its content through blockdiff:
	// the blob is read only where it has pages.
	want := make([]byte, size)
	copy(want[5<<20:], data)
	var exts []disk.Extent
	_, err = blockdiff.Compare(ctx, bytes.NewReader(want), size, src, size, nil, func(e disk.Extent) error {
		exts = append(exts, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(exts) != 0 {
		t.Fatalf("differences found: %v", exts)
	}
	var read int64
	for _, r := range rec.Requests() {
		if r.Op == "get" {
			read += r.End - r.Start + 1
		}
	}
	if read != int64(len(data)) {
		t.Fatalf("read %d bytes of a blob holding %d", read, len(data))
	}
}

func TestCRC64CorruptionDetected(t *testing.T) {
	o, rec := testOptions(t)
	o.CreateSize = 1 << 20
	ctx := context.Background()
	b, err := OpenTarget(ctx, az.BlobURL(testContainer, blobName(t)), o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Flip one bit of every Put Page body on the wire.
	rec.Intercept = func(req *http.Request) *http.Response {
		if req.Method == http.MethodPut && req.URL.Query().Get("comp") == "page" && req.Header.Get("x-ms-page-write") == "update" {
			body, _ := io.ReadAll(req.Body)
			req.Body.Close()
			body[100] ^= 1
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		return nil
	}
	_, err = b.WriteAt(randBytes(4096), 0)
	if !errors.Is(err, ErrIntegrity) {
		t.Fatalf("corrupted Put Page: %v, want ErrIntegrity", err)
	}
	t.Logf("corrupted Put Page: %v", err)
	rec.Intercept = nil
	rs, err := b.AllocatedRanges(ctx, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := Open(ctx, az.BlobURL(testContainer, b.loc.Blob), &Options{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if got := readAll(t, fresh, 1<<20); !allZero(got) {
		t.Fatalf("corrupted bytes were stored (ranges %v)", rs)
	}
}

// A target takes its lease before its first change: a second target of
// the same blob opens (opening changes nothing), but its Watch and its
// writes fail with ErrLeaseHeld, saying the lease's state and duration.
func TestLeaseConflict(t *testing.T) {
	ctx := context.Background()
	a, _ := newTarget(t, 1<<20)
	if _, err := a.WriteAt(randBytes(512), 0); err != nil {
		t.Fatal(err)
	}
	u := az.BlobURL(testContainer, a.loc.Blob)
	o, _ := testOptions(t)
	second, err := OpenTarget(ctx, u, o)
	if err != nil {
		t.Fatalf("second OpenTarget: %v", err)
	}
	defer second.Close()
	_, err = second.Watch(ctx, true)
	if !errors.Is(err, ErrLeaseHeld) || !errors.Is(err, ErrConcurrentWriter) ||
		!strings.Contains(err.Error(), "lease state leased, duration fixed") {
		t.Fatalf("second target's Watch: %v, want ErrLeaseHeld (and ErrConcurrentWriter) with the lease's state and duration", err)
	}
	if _, err := second.WriteAt(randBytes(512), 512); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second target's write: %v, want ErrLeaseHeld", err)
	}
	// A reader is not a writer: Open works while the lease is held.
	r, err := Open(ctx, u, o)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := a.WriteAt(make([]byte, 512), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	b, err := OpenTarget(ctx, u, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Watch(ctx, true); err != nil {
		t.Fatalf("Watch after the first target released its lease: %v", err)
	}
	b.Close()
}

// Another writer that breaks the lease and takes its own makes the run's
// next write fail with ErrLeaseLost.
func TestLeaseLost(t *testing.T) {
	a, _ := newTarget(t, 1<<20)
	if _, err := a.WriteAt(randBytes(512), 0); err != nil {
		t.Fatal(err)
	}
	u := az.BlobURL(testContainer, a.loc.Blob) + "?comp=lease"
	if r := rawRequest(t, http.MethodPut, u, map[string]string{"x-ms-lease-action": "break", "x-ms-lease-break-period": "0"}); r.StatusCode != http.StatusAccepted {
		t.Fatalf("break lease: %s", r.Status)
	}
	if r := rawRequest(t, http.MethodPut, u, map[string]string{"x-ms-lease-action": "acquire", "x-ms-lease-duration": "-1",
		"x-ms-proposed-lease-id": newLeaseID()}); r.StatusCode != http.StatusCreated {
		t.Fatalf("acquire lease: %s", r.Status)
	}
	_, err := a.WriteAt(randBytes(512), 512)
	if !errors.Is(err, ErrLeaseLost) || !errors.Is(err, ErrConcurrentWriter) {
		t.Fatalf("write after the lease was taken: %v, want ErrLeaseLost", err)
	}
	if err := a.ZeroRange(context.Background(), 0, 512); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("clear after the lease was taken: %v, want ErrLeaseLost", err)
	}
}

// A writer that changes the sequence number (here with the run's own
// lease, as a second process of the same run would) is detected.
func TestSequenceNumberChanged(t *testing.T) {
	a, _ := newTarget(t, 1<<20)
	ctx := context.Background()
	if a.SequenceNumber() != 0 {
		t.Fatalf("sequence number %d set before the first change", a.SequenceNumber())
	}
	if _, err := a.Watch(ctx, false); err != nil {
		t.Fatal(err)
	}
	if a.SequenceNumber() <= 0 {
		t.Fatalf("sequence number %d", a.SequenceNumber())
	}
	_, err := a.pb.UpdateSequenceNumber(ctx, &pageblob.UpdateSequenceNumberOptions{
		ActionType: to.Ptr(pageblob.SequenceNumberActionTypeIncrement), AccessConditions: a.leaseCond()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.WriteAt(randBytes(512), 0)
	if !errors.Is(err, ErrConcurrentWriter) || errors.Is(err, ErrLeaseLost) {
		t.Fatalf("write after the sequence number changed: %v, want ErrConcurrentWriter", err)
	}
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != "SequenceNumberConditionNotMet" || pe.Status != 412 {
		t.Fatalf("error %#v", pe)
	}
	if err := a.ZeroRange(ctx, 0, 512); !errors.Is(err, ErrConcurrentWriter) {
		t.Fatalf("clear: %v", err)
	}
}

func TestLeaseRenewed(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 17 s for a 15 s lease to need renewing")
	}
	o, _ := testOptions(t)
	o.CreateSize = 1 << 20
	o.LeaseDuration = 15 * time.Second
	b, err := OpenTarget(context.Background(), az.BlobURL(testContainer, blobName(t)), o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.WriteAt(randBytes(512), 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(17 * time.Second)
	if _, err := b.WriteAt(randBytes(512), 0); err != nil {
		t.Fatalf("write after 17 s with a 15 s lease: %v", err)
	}
	o2, _ := testOptions(t)
	b2, err := OpenTarget(context.Background(), az.BlobURL(testContainer, b.loc.Blob), o2)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if _, err := b2.WriteAt(randBytes(512), 512); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("the renewed lease did not keep a second writer out: %v", err)
	}
}

func TestReadOnly(t *testing.T) {
	a, _ := newTarget(t, 1<<20)
	r, err := Open(context.Background(), az.BlobURL(testContainer, a.loc.Blob), &Options{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.WriteAt(make([]byte, 512), 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("WriteAt on a source: %v", err)
	}
	if err := r.ZeroRange(context.Background(), 0, 512); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("ZeroRange on a source: %v", err)
	}
	if err := r.Resize(context.Background(), 2<<20); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Resize on a source: %v", err)
	}
	if _, err := Open(context.Background(), az.BlobURL(testContainer, "missing-"+blobName(t)), &Options{Getenv: noEnv}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of a missing blob: %v", err)
	}
	if _, err := OpenTarget(context.Background(), az.BlobURL(testContainer, "missing-"+blobName(t)), &Options{Getenv: noEnv}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenTarget of a missing blob without CreateSize: %v", err)
	}
}

func TestSnapshots(t *testing.T) {
	const size = 2 << 20
	b, _ := newTarget(t, size)
	ctx := context.Background()
	v1 := randBytes(size)
	if _, err := b.WriteAt(v1, 0); err != nil {
		t.Fatal(err)
	}
	id1, err := b.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt(randBytes(512), 4096); err != nil {
		t.Fatal(err)
	}
	if err := b.ZeroRange(ctx, 1<<20, 64<<10); err != nil {
		t.Fatal(err)
	}
	id2, err := b.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id1 == id2 {
		t.Fatalf("two snapshots with one id %s", id1)
	}
	if _, err := time.Parse(time.RFC3339Nano, id1); err != nil {
		t.Fatalf("snapshot id %q is not a server timestamp: %v", id1, err)
	}
	list, err := b.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range list {
		ids = append(ids, s.ID)
		if s.Size != size {
			t.Errorf("snapshot %s size %d", s.ID, s.Size)
		}
	}
	if !slices.Equal(ids, []string{id1, id2}) {
		t.Fatalf("ListSnapshots = %v, want [%s %s]", ids, id1, id2)
	}
	s1, err := b.OpenSnapshot(ctx, id1)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	if got := readAll(t, s1, size); !bytes.Equal(got, v1) {
		t.Fatal("snapshot 1 does not read as it was")
	}
	if _, err := s1.WriteAt(make([]byte, 512), 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write to a snapshot: %v", err)
	}
	if s1.Identity() == b.Identity() || s1.Identity() != b.Identity()+"@"+id1 {
		t.Fatalf("snapshot identity %q (blob %q)", s1.Identity(), b.Identity())
	}
	// Azurite answers a diff with a plain listing of the blob: only check
	// that the request is accepted and the answer covers the changes.
	// The real diff is tested against recorded Azure answers.
	d, err := b.Diff(ctx, id1, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	if len(d) == 0 || d[0].Off > 4096 {
		t.Fatalf("Diff = %v", d)
	}
	if err := b.DeleteSnapshot(ctx, id1); err != nil {
		t.Fatal(err)
	}
	list, err = b.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != id2 {
		t.Fatalf("after delete: %+v", list)
	}
	if _, err := b.OpenSnapshot(ctx, id1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open deleted snapshot: %v", err)
	}
}

func TestResize(t *testing.T) {
	b, rec := newTarget(t, 1<<20)
	ctx := context.Background()
	data := randBytes(1 << 20)
	if _, err := b.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Resize(ctx, 3<<20); err != nil {
		t.Fatal(err)
	}
	if b.Size() != 3<<20 {
		t.Fatalf("Size %d after grow", b.Size())
	}
	// The new space is writable, reads as zeros, and the old data stays.
	if _, err := b.WriteAt(randBytes(512), 3<<20-512); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, b, 3<<20)
	if !bytes.Equal(got[:1<<20], data) || !allZero(got[1<<20:3<<20-512]) {
		t.Fatal("grown blob reads wrong")
	}
	if err := b.Resize(ctx, 512<<10); err != nil {
		t.Fatal(err)
	}
	fresh, err := Open(ctx, az.BlobURL(testContainer, b.loc.Blob), &Options{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if fresh.Size() != 512<<10 || !bytes.Equal(readAll(t, fresh, 512<<10), data[:512<<10]) {
		t.Fatal("shrunk blob reads wrong")
	}
	if rs, err := b.AllocatedRanges(ctx, 0, 1<<30); err != nil || !slices.Equal(rs, []disk.Range{{Off: 0, Len: 512 << 10}}) {
		t.Fatalf("ranges after shrink: %v, %v", rs, err)
	}
	if rec.Count("resize") != 2 {
		t.Fatalf("%d resizes sent", rec.Count("resize"))
	}
}

func TestVersionAndIdentity(t *testing.T) {
	b, _ := newTarget(t, 1<<20)
	ctx := context.Background()
	v1, err := b.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v2, _ := b.Version(ctx)
	if v1 != v2 {
		t.Fatalf("version changed without a write: %q %q", v1, v2)
	}
	if _, err := b.WriteAt(randBytes(512), 0); err != nil {
		t.Fatal(err)
	}
	if v3, _ := b.Version(ctx); v3 == v1 {
		t.Fatalf("version %q did not change after a write", v3)
	}
	want := "pageblob://" + b.loc.Host + "/" + azurite.Account + "/" + testContainer + "/" + b.loc.Blob
	if b.Identity() != want {
		t.Fatalf("Identity %q, want %q", b.Identity(), want)
	}
}

// Every way of authorising: the development key (implicit), a SAS URL, a
// connection string with CONTAINER/BLOB, AZURE_STORAGE_ACCOUNT and
// AZURE_STORAGE_KEY, and a SAS that is refreshed.
func TestCredentials(t *testing.T) {
	a, _ := newTarget(t, 1<<20)
	name := a.loc.Blob
	data := randBytes(512)
	if _, err := a.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	readFirst := func(what, loc string, o *Options) {
		t.Helper()
		if o.Getenv == nil {
			o.Getenv = noEnv
		}
		b, err := Open(ctx, loc, o)
		if err != nil {
			t.Fatalf("%s: Open: %v", what, err)
		}
		defer b.Close()
		p := make([]byte, 512)
		if _, err := b.ReadAt(p, 0); err != nil || !bytes.Equal(p, data) {
			t.Fatalf("%s: ReadAt: %v", what, err)
		}
	}
	sasq, err := azurite.BlobSAS(testContainer, name, "r", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	readFirst("SAS URL", az.BlobURL(testContainer, name)+"?"+sasq, &Options{})
	readFirst("connection string", testContainer+"/"+name, &Options{ConnectionString: az.ConnectionString()})
	env := map[string]string{"AZURE_STORAGE_CONNECTION_STRING": az.ConnectionString()}
	readFirst("AZURE_STORAGE_CONNECTION_STRING", testContainer+"/"+name, &Options{Getenv: func(k string) string { return env[k] }})
	env = map[string]string{"AZURE_STORAGE_ACCOUNT": azurite.Account, "AZURE_STORAGE_KEY": azurite.Key}
	readFirst("AZURE_STORAGE_KEY", az.BlobURL(testContainer, name), &Options{Getenv: func(k string) string { return env[k] }})
	readFirst("Options.AccountKey", az.BlobURL(testContainer, name), &Options{AccountKey: azurite.Key})

	// A SAS about to expire is refreshed before use.
	soon, _ := azurite.BlobSAS(testContainer, name, "r", 2*time.Minute)
	refreshes := 0
	readFirst("refreshed SAS", az.BlobURL(testContainer, name)+"?"+soon, &Options{RefreshSAS: func(context.Context) (string, error) {
		refreshes++
		q, err := azurite.BlobSAS(testContainer, name, "r", time.Hour)
		return az.BlobURL(testContainer, name) + "?" + q, err
	}})
	if refreshes != 1 {
		t.Fatalf("%d refreshes of a SAS expiring in 2 minutes, want 1", refreshes)
	}
	// A SAS Azure refuses (403 AuthenticationFailed) is refreshed once.
	bad := "sv=2021-12-02&se=2099-01-01T00%3A00%3A00Z&sr=b&sp=r&sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D"
	refreshes = 0
	readFirst("rejected SAS", az.BlobURL(testContainer, name)+"?"+bad, &Options{RefreshSAS: func(context.Context) (string, error) {
		refreshes++
		q, err := azurite.BlobSAS(testContainer, name, "r", time.Hour)
		return az.BlobURL(testContainer, name) + "?" + q, err
	}})
	if refreshes != 1 {
		t.Fatalf("%d refreshes after a 403, want 1", refreshes)
	}
	// A refresher that answers another blob's URL is refused.
	_, err = Open(ctx, az.BlobURL(testContainer, name)+"?"+bad, &Options{Getenv: noEnv, RefreshSAS: func(context.Context) (string, error) {
		return az.BlobURL(testContainer, "other") + "?" + sasq, nil
	}})
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("refresh to another blob: %v", err)
	}
}

// Throttling answers reach the observer and lower the limiter; the SDK's
// retry policy (the only retry layer) retries them.
func TestThrottle(t *testing.T) {
	var events []ThrottleEvent
	o, rec := testOptions(t)
	o.CreateSize = 1 << 20
	o.Concurrency = 8
	o.Throttle = func(e ThrottleEvent) { events = append(events, e) }
	b, err := OpenTarget(context.Background(), az.BlobURL(testContainer, blobName(t)), o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	busy := 2
	rec.Intercept = func(req *http.Request) *http.Response {
		if req.Method != http.MethodPut || req.URL.Query().Get("comp") != "page" || busy == 0 {
			return nil
		}
		busy--
		h := http.Header{}
		h.Set("x-ms-error-code", "ServerBusy")
		h.Set("x-ms-retry-after-ms", "20")
		return &http.Response{StatusCode: 503, Status: "503 Server Busy", Header: h, Request: req,
			Body: io.NopCloser(bytes.NewReader([]byte("<Error><Code>ServerBusy</Code></Error>")))}
	}
	rec.Reset()
	start := time.Now()
	if _, err := b.WriteAt(randBytes(4096), 0); err != nil {
		t.Fatalf("write with two ServerBusy answers: %v", err)
	}
	if time.Since(start) < 40*time.Millisecond {
		t.Errorf("retried after %v: Retry-After of 20 ms not honoured", time.Since(start))
	}
	if n := rec.Count("put-page"); n != 3 {
		t.Fatalf("%d Put Page tries, want 3 (two throttled, one retry layer)", n)
	}
	if len(events) != 2 || events[0].Code != "ServerBusy" || events[0].RetryAfter != 20*time.Millisecond || events[0].Status != 503 {
		t.Fatalf("throttle events %+v", events)
	}
	if l := b.cl.limiter.Limit(); l != 4 {
		t.Fatalf("limit %d after throttling within the cool-down, want 8/2 = 4", l)
	}
	// Throttled past the retries: ErrThrottled.
	busy = 100
	if _, err := b.WriteAt(randBytes(512), 0); !errors.Is(err, ErrThrottled) {
		t.Fatalf("write throttled past the retries: %v", err)
	}
}

// Put Page From URL is not implemented by Azurite (501): the error says
// so. The request itself is tested against recorded Azure answers.
func TestCopyRangeFromURLAzurite(t *testing.T) {
	src, _ := newTarget(t, 1<<20)
	dst, _ := newTarget(t, 1<<20)
	q, _ := azurite.BlobSAS(testContainer, src.loc.Blob, "r", time.Hour)
	err := dst.CopyRangeFromURL(context.Background(), az.BlobURL(testContainer, src.loc.Blob)+"?"+q, 0, 1<<20)
	if !errors.Is(err, ErrNotSupported) {
		t.Fatalf("CopyRangeFromURL on Azurite: %v, want ErrNotSupported (501)", err)
	}
}
