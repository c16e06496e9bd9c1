package pageblob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"
)

// crc64Table is Azure Storage's CRC64 (the polynomial azblob uses).
var crc64Table = crc64.MakeTable(0x9A6C9329AC4BC9B5)

type mode uint8

const (
	modeRead   mode = iota // a source: never written
	modeTarget             // a page blob target: lease and sequence number
	modeUpload             // a managed disk upload: no lease, no sequence number
)

// Blob is an open page blob, a snapshot of one, or a managed disk being
// uploaded. It is a disk.Source (ReadAt, Size) and, when opened with
// OpenTarget, a disk.Target with the optional capabilities Zeroer,
// Resizer, Flusher, WriteLimits, Identifier, Versioner and
// AllocationMapper.
//
// All methods are safe for concurrent use; writes and clears must be on
// disjoint ranges, and Resize must not run concurrently with writes. A
// target takes its lease before its first change and holds it until
// Close (see OpenTarget).
type Blob struct {
	loc   BlobURL
	cl    *clients
	pb    *pageblob.Client
	mode  mode
	vhd   bool
	size  atomic.Int64          // bytes of disk: the blob's size, less the VHD footer
	seq   atomic.Int64          // the run's sequence number (target mode), once held
	lease atomic.Pointer[lease] // target mode, once taken (witness.go)
	wit   witnessState          // the run's hold and its evidence (witness.go)
	cache *rangeCache

	created   bool        // OpenTarget created the blob (Options.CreateSize)
	keepPrior bool        // snapshot the blob before its first change (Options.KeepPrior)
	prior     priorState  // that snapshot
	noCopy    atomic.Bool // CopyRange declined: the service cannot copy from the source
	copied    atomic.Bool // a CopyRange succeeded
	copyStats copyStats   // bytes copied and why copies declined (rangecopy.go)

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool
}

// Open opens a page blob, or a snapshot (a URL with ?snapshot=), as a
// read-only source. location is a URL (see ParseURL), or CONTAINER/BLOB
// resolved with a connection string. Requests are authorised by the
// first of: the URL's SAS; Options.RefreshSAS; Options.Credential;
// Options.AccountKey; the connection string (Options.ConnectionString or
// AZURE_STORAGE_CONNECTION_STRING) when it names the URL's account;
// AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY when it names the URL's
// account; the emulator's public development key for devstoreaccount1 on
// loopback; azidentity.DefaultAzureCredential (Azure AD).
//
// A managed disk URL (md- host) or Options.VHD opens the disk inside a
// fixed VHD: Size excludes the footer, which must be valid.
func Open(ctx context.Context, location string, o *Options) (*Blob, error) {
	return open(ctx, location, o, modeRead)
}

// OpenTarget opens a page blob for writing (see Open for location and
// credentials). When the blob is missing it is created if
// Options.CreateSize is set, else ErrNotFound is returned. Opening
// changes nothing else: before the blob's first change the target takes
// a lease (Options.LeaseDuration; another holder gives ErrLeaseHeld,
// unless Options.BreakLease) and sets the blob's sequence number for the
// run (Options.SequenceNumber); every write and clear carries both, so
// another writer makes them fail with ErrLeaseLost or
// ErrConcurrentWriter. The lease is taken by Check when a rerun takes
// over the lease of the interrupted run it resumes, else by Watch or the
// first write (see witness.go). Close releases the lease.
//
// A managed disk upload URL (an md- host with a write SAS, or
// Options.ManagedDisk) opens the disk for seeding: the blob exists with
// the size chosen when the disk was created, holds a fixed VHD whose
// footer is written last (FinishUpload, which the Watch's Done calls),
// and takes neither lease nor sequence number (Azure offers neither on
// upload URLs); Resize and snapshots are refused.
func OpenTarget(ctx context.Context, location string, o *Options) (*Blob, error) {
	return open(ctx, location, o, modeTarget)
}

func open(ctx context.Context, location string, o *Options, m mode) (*Blob, error) {
	opts, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	loc, a, err := resolve(ctx, location, &opts)
	if err != nil {
		return nil, err
	}
	managed := loc.Kind == ManagedDisk || opts.ManagedDisk
	if m == modeTarget {
		if loc.Snapshot != "" {
			return nil, newError("open", loc.String(), 0, 0, fmt.Errorf("%w: a snapshot cannot be a target", ErrReadOnly))
		}
		if managed {
			m = modeUpload
		}
	}
	cl := newClients(loc, a, opts)
	b, err := newBlob(cl, loc, m, opts.VHD || managed)
	if err != nil {
		return nil, err
	}
	if err := b.init(ctx, managed); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func newBlob(cl *clients, loc BlobURL, m mode, vhd bool) (*Blob, error) {
	pb, err := cl.pageBlob(loc)
	if err != nil {
		return nil, newError("open", loc.String(), 0, 0, err)
	}
	b := &Blob{loc: loc, cl: cl, pb: pb, mode: m, vhd: vhd}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.cache = newRangeCache(cl.opts.ListSegment, cl.opts.RangeCacheSegments)
	return b, nil
}

// init reads the blob's properties (creating it if asked) and checks its
// size and, for a VHD, its footer. It changes nothing else: a target's
// lease and sequence number wait for its first change (hold).
func (b *Blob) init(ctx context.Context, managed bool) error {
	o := &b.cl.opts
	props, err := b.pb.GetProperties(ctx, nil)
	if err != nil && bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) && b.mode == modeTarget && o.CreateSize > 0 {
		if err := b.create(ctx, o.CreateSize); err != nil {
			return err
		}
		b.created = true
		props, err = b.pb.GetProperties(ctx, nil)
	}
	if err != nil {
		return b.wrap("open", 0, 0, b.noContainer(err))
	}
	if props.BlobType == nil || *props.BlobType != blob.BlobTypePageBlob {
		return b.wrap("open", 0, 0, ErrNotPageBlob)
	}
	if props.ContentLength == nil {
		return b.wrap("open", 0, 0, errors.New("no Content-Length in the blob's properties"))
	}
	blobSize := *props.ContentLength
	if managed && b.mode != modeRead {
		if err := checkManagedDiskSize(blobSize); err != nil {
			return b.wrap("open", 0, 0, err)
		}
	}
	size := blobSize
	if b.vhd {
		if size < VHDFooterSize {
			return b.wrap("open", 0, 0, fmt.Errorf("%w: blob of %d bytes has no room for a footer", ErrNotVHD, size))
		}
		size -= VHDFooterSize
	}
	b.size.Store(size)

	if b.mode == modeTarget {
		b.keepPrior = o.KeepPrior && !b.created
		b.noteMetadata(props.Metadata)
	}
	if b.vhd {
		return b.checkFooter(ctx, b.mode != modeRead)
	}
	return nil
}

// create makes the blob with size bytes of disk (plus a footer for a VHD).
func (b *Blob) create(ctx context.Context, size int64) error {
	blobSize, err := b.blobSizeFor(size)
	if err != nil {
		return b.refuse("create", 0, 0, ErrBadSize, "%v", err)
	}
	co := &pageblob.CreateOptions{
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
	}
	_, err = b.pb.Create(ctx, blobSize, co)
	if bloberror.HasCode(err, bloberror.ContainerNotFound) {
		if err := b.createContainer(ctx); err != nil {
			return err
		}
		_, err = b.pb.Create(ctx, blobSize, co)
	}
	if err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
		return b.wrap("create", 0, blobSize, err)
	}
	return nil // created, or created meanwhile by someone else: the lease decides
}

// blobSizeFor checks a disk size and returns the blob size that holds it.
func (b *Blob) blobSizeFor(size int64) (int64, error) {
	if size < 0 || size%PageSize != 0 {
		return 0, fmt.Errorf("size %d is not a multiple of %d", size, PageSize)
	}
	if b.vhd {
		if size%VHDAlign != 0 {
			return 0, fmt.Errorf("size %d of a VHD is not a multiple of 1 MiB", size)
		}
		size += VHDFooterSize
	}
	if size > MaxBlobSize {
		return 0, fmt.Errorf("blob size %d is over Azure's page blob maximum of 8 TiB (%d)", size, int64(MaxBlobSize))
	}
	return size, nil
}

// Managed disk upload sizes, from Azure's documentation: a fixed VHD of
// 20 MiB + 512 bytes up to 32 TiB + 512 bytes, its data a multiple of 1 MiB.
const (
	minManagedDisk = 20<<20 + VHDFooterSize
	maxManagedDisk = 32<<40 + VHDFooterSize
)

func checkManagedDiskSize(n int64) error {
	if n < minManagedDisk || n > maxManagedDisk || (n-VHDFooterSize)%VHDAlign != 0 {
		return fmt.Errorf("%w: a managed disk upload must be %d to %d bytes with (size - 512) a multiple of 1 MiB, not %d",
			ErrBadSize, int64(minManagedDisk), int64(maxManagedDisk), n)
	}
	return nil
}

// opCtx returns a context that ends when ctx ends or the Blob is closed.
func (b *Blob) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx == b.ctx {
		return ctx, func() {}
	}
	c, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.ctx, cancel)
	return c, func() { stop(); cancel() }
}

// Size returns the size of the disk in bytes: the blob's size, less the
// footer of a VHD.
func (b *Blob) Size() int64 { return b.size.Load() }

// WriteLimits returns 512 and 4 MiB: every write is 512-aligned, and
// WriteAt splits a longer one into Put Page requests of at most 4 MiB.
func (b *Blob) WriteLimits() (align, maxWrite int64) { return PageSize, MaxPut }

// Identity names the blob without secrets (see BlobURL.Identity).
func (b *Blob) Identity() string { return b.loc.Identity() }

// URL returns the blob's address without its SAS.
func (b *Blob) URL() string { return b.loc.String() }

// Location returns the parsed address (its SAS is not exposed).
func (b *Blob) Location() BlobURL { return b.loc }

// SequenceNumber returns the sequence number set for this run (target
// mode), 0 otherwise.
func (b *Blob) SequenceNumber() int64 { return b.seq.Load() }

// Version returns a token that changes whenever the blob's content may
// have changed: its ETag and size, from Get Blob Properties. A target's
// own writes change it too.
func (b *Blob) Version(ctx context.Context) (string, error) {
	props, err := b.pb.GetProperties(ctx, nil)
	if err != nil {
		return "", b.wrap("properties", 0, 0, err)
	}
	var etag string
	if props.ETag != nil {
		etag = string(*props.ETag)
	}
	var n int64
	if props.ContentLength != nil {
		n = *props.ContentLength
	}
	return fmt.Sprintf("etag=%s size=%d", etag, n), nil
}

// ReadAt reads len(p) bytes at off with one ranged Get Blob (its body
// resumed by the SDK's retry reader if the connection breaks). Reads
// past the end return io.EOF as io.ReaderAt requires. Concurrency is the
// caller's, bounded by the Blob's limiter. It stops when the Blob is
// closed; ReadAtContext takes a context.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	return b.ReadAtContext(b.ctx, p, off)
}

// ReadAtContext is ReadAt with a context.
func (b *Blob) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, b.refuse("read", off, int64(len(p)), ErrPastEnd, "negative offset")
	}
	if b.closed.Load() {
		return 0, b.wrap("read", off, int64(len(p)), ErrClosed)
	}
	size := b.size.Load()
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := min(int64(len(p)), size-off)
	if n == 0 {
		return 0, nil
	}
	ctx, done := b.opCtx(ctx)
	defer done()
	if err := b.cl.limiter.Acquire(ctx); err != nil {
		return 0, b.wrap("read", off, n, err)
	}
	got, err := b.download(ctx, p[:n], off)
	b.cl.limiter.Release()
	if err != nil {
		return got, b.wrap("read", off, n, err)
	}
	b.cl.limiter.Success()
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

func (b *Blob) download(ctx context.Context, p []byte, off int64) (int, error) {
	resp, err := b.pb.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: off, Count: int64(len(p))}})
	if err != nil {
		return 0, err
	}
	body := resp.NewRetryReader(ctx, &blob.RetryReaderOptions{MaxRetries: 3})
	defer body.Close()
	n, err := io.ReadFull(body, p)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = fmt.Errorf("short body: %d of %d bytes: %w", n, len(p), io.ErrUnexpectedEOF)
	}
	return n, err
}

// writable checks that a write of [off, off+n) may be sent.
func (b *Blob) writable(op string, off, n int64) error {
	switch {
	case b.closed.Load():
		return b.wrap(op, off, n, ErrClosed)
	case b.mode == modeRead:
		return b.refuse(op, off, n, ErrReadOnly, "opened with Open or OpenSnapshot; use OpenTarget to write")
	case b.lease.Load() != nil && b.lease.Load().lost.Load():
		return b.refuse(op, off, n, ErrLeaseLost, "the lease could not be renewed")
	case off%PageSize != 0 || n%PageSize != 0:
		return b.refuse(op, off, n, ErrUnaligned, "offset %d and length %d must be multiples of %d", off, n, PageSize)
	case off < 0 || n < 0 || off+n > b.size.Load():
		return b.refuse(op, off, n, ErrPastEnd, "[%d, %d) is not inside the disk's %d bytes", off, off+n, b.size.Load())
	}
	return nil
}

func (b *Blob) leaseCond() *blob.AccessConditions {
	l := b.lease.Load()
	if l == nil {
		return nil
	}
	return &blob.AccessConditions{LeaseAccessConditions: &blob.LeaseAccessConditions{LeaseID: to.Ptr(l.id)}}
}

func (b *Blob) seqCond() *pageblob.SequenceNumberAccessConditions {
	if b.mode != modeTarget {
		return nil
	}
	return &pageblob.SequenceNumberAccessConditions{IfSequenceNumberEqualTo: to.Ptr(b.seq.Load())}
}

// WriteAt writes p at off with Put Page requests of at most 4 MiB, each
// with a transactional CRC64 and, in target mode, the lease ID and the
// run's sequence number. off and len(p) must be multiples of 512 and the
// range inside the disk: anything else is refused before a request is
// sent. On error, n counts the bytes of the requests that succeeded.
func (b *Blob) WriteAt(p []byte, off int64) (int, error) {
	return b.WriteAtContext(b.ctx, p, off)
}

// WriteAtContext is WriteAt with a context.
func (b *Blob) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := b.writable("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := b.beforeChange(ctx); err != nil {
		return 0, err
	}
	ctx, done := b.opCtx(ctx)
	defer done()
	n := 0
	for n < len(p) {
		end := min(n+MaxPut, len(p))
		if err := b.putPages(ctx, p[n:end], off+int64(n)); err != nil {
			return n, b.wrap("write", off+int64(n), int64(end-n), err)
		}
		n = end
	}
	return n, nil
}

// putPages sends one Put Page of at most 4 MiB. The CRC64 is computed
// here and handed to the SDK as a precomputed value (the SDK's
// TransferValidationTypeComputeCRC64 would copy the body first), and the
// CRC64 Azure echoes is compared with it.
func (b *Blob) putPages(ctx context.Context, p []byte, off int64) error {
	if err := b.cl.limiter.Acquire(ctx); err != nil {
		return err
	}
	defer b.cl.limiter.Release()
	crc := crc64.Checksum(p, crc64Table)
	resp, err := b.pb.UploadPages(ctx, streaming.NopCloser(bytes.NewReader(p)), blob.HTTPRange{Offset: off, Count: int64(len(p))},
		&pageblob.UploadPagesOptions{
			TransactionalValidation:        blob.TransferValidationTypeCRC64(crc),
			SequenceNumberAccessConditions: b.seqCond(),
			AccessConditions:               b.leaseCond(),
		})
	b.cache.wrote(off, int64(len(p))) // even on failure: the pages may be written
	if err != nil {
		return err
	}
	b.cl.limiter.Success()
	if len(resp.ContentCRC64) == 8 {
		var want [8]byte
		for i := range want {
			want[i] = byte(crc >> (8 * i)) // little-endian, as the SDK sends it
		}
		if !bytes.Equal(resp.ContentCRC64, want[:]) {
			return fmt.Errorf("%w: Azure stored CRC64 %x, sent %x", ErrIntegrity, resp.ContentCRC64, want)
		}
	}
	return nil
}

// ZeroRange clears [off, off+n) with one Clear Pages request: the pages
// read as zeros and are no longer allocated. off and n must be multiples
// of 512 inside the disk.
func (b *Blob) ZeroRange(ctx context.Context, off, n int64) error {
	if err := b.writable("clear", off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil // a zero Count means "to the end" to the SDK
	}
	if err := b.beforeChange(ctx); err != nil {
		return err
	}
	ctx, done := b.opCtx(ctx)
	defer done()
	if err := b.cl.limiter.Acquire(ctx); err != nil {
		return b.wrap("clear", off, n, err)
	}
	_, err := b.pb.ClearPages(ctx, blob.HTTPRange{Offset: off, Count: n}, &pageblob.ClearPagesOptions{
		SequenceNumberAccessConditions: b.seqCond(),
		AccessConditions:               b.leaseCond(),
	})
	b.cl.limiter.Release()
	if err != nil {
		b.cache.touched(off, n)
		return b.wrap("clear", off, n, err)
	}
	b.cl.limiter.Success()
	b.cache.cleared(off, n)
	return nil
}

// Resize changes the disk's size: a multiple of 512 (of 1 MiB for a VHD),
// at most 8 TiB with the footer, checked before any request. Growing adds
// zeros. A VHD's footer is moved to the new end. Managed disk uploads
// cannot be resized (ErrNotSupported).
func (b *Blob) Resize(ctx context.Context, size int64) error {
	if b.mode == modeUpload {
		return b.refuse("resize", size, 0, ErrNotSupported, "a managed disk upload has the size it was created with")
	}
	if err := b.writable("resize", 0, 0); err != nil {
		return err
	}
	blobSize, err := b.blobSizeFor(size)
	if err != nil {
		return b.refuse("resize", size, 0, ErrBadSize, "%v", err)
	}
	old := b.size.Load()
	if size == old {
		return nil
	}
	if err := b.beforeChange(ctx); err != nil {
		return err
	}
	ctx, done := b.opCtx(ctx)
	defer done()
	defer b.cache.reset()
	if b.vhd && size < old {
		// The new footer goes inside the old disk, which is cut after it.
		if err := b.writeFooter(ctx, size); err != nil {
			return err
		}
	}
	if _, err := b.pb.Resize(ctx, blobSize, &pageblob.ResizeOptions{AccessConditions: b.leaseCond()}); err != nil {
		return b.wrap("resize", size, 0, err)
	}
	b.size.Store(size)
	if b.vhd && size > old {
		if err := b.writeFooter(ctx, size); err != nil {
			return err
		}
		// The old footer is now disk that must read as zeros.
		_, err := b.pb.ClearPages(ctx, blob.HTTPRange{Offset: old, Count: VHDFooterSize}, &pageblob.ClearPagesOptions{
			SequenceNumberAccessConditions: b.seqCond(), AccessConditions: b.leaseCond()})
		if err != nil {
			return b.wrap("resize", old, VHDFooterSize, err)
		}
	}
	return nil
}

// Flush writes nothing: Azure acknowledges a Put Page or Clear Pages
// only once the pages are durable (stored three times or more), so
// completed writes need no flush. It proves instead that the lease still
// holds (one renewal): a lease broken or taken since the last write makes
// it fail with ErrLeaseLost, so that nothing the run wrote is trusted.
func (b *Blob) Flush(ctx context.Context) error {
	if b.closed.Load() {
		return b.wrap("flush", 0, 0, ErrClosed)
	}
	if err := b.confirmLease(ctx, "flush"); err != nil {
		return err
	}
	return ctx.Err()
}

// Close releases the lease (target mode) and stops the Blob's
// operations. Snapshots opened from it stay usable until closed. Close
// may be called more than once.
func (b *Blob) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		if b.lease.Load() != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			b.closeErr = b.releaseLease(ctx)
			cancel()
		}
		b.cancel()
	})
	return b.closeErr
}
