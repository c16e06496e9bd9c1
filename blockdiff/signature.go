package blockdiff

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/disk"
)

// SignatureVersion is the signature format version this package writes
// and the only one it reads.
//
// A signature is the list of a disk's block hashes, written once (by
// WriteSignature, or by a SignatureWriter fed from elsewhere) and compared
// later or far away (by CompareSignature, or by CompareHashes with a
// SignatureReader). It is written and read as a stream: neither side ever
// holds more than one chunk of records, so the signature of an 8 TiB disk
// (2^27 blocks of 64 KiB) costs the same memory as that of a small one.
//
// A signature carries the hash key, since whoever compares against it must
// hash with the same key. Anyone who holds a signature can therefore test
// guesses about the disk's content block by block, and, with XXH3 (which
// is not cryptographic), craft a block whose hash collides with one of its
// hashes. Keep a signature as private as the data it describes. Its
// checksums detect accidents (a bad disk, a cut transfer, a file of
// another kind), not tampering: a signature is trusted as much as where it
// came from.
//
// The format, version 1, byte by byte. All integers are little-endian.
// xxhash64 is XXH64 (github.com/cespare/xxhash/v2); "seeded with S" means
// XXH64 with seed S.
//
// The header, 92 bytes, uncompressed:
//
//	offset size  field
//	     0    8  magic "DSYNCSIG"
//	     8    2  format version, 1
//	    10    1  hash algorithm: 1 XXH3-128, 2 keyed BLAKE3 (HashAlgorithm)
//	    11    1  hash size in bytes: 16 for XXH3, 32 for BLAKE3
//	    12    4  block size: a multiple of 512, from 512 to 4 MiB
//	    16    8  disk size in bytes, at most 2^63-1
//	    24    8  range offset, a multiple of 512
//	    32    8  range length, 0 meaning to the end of the disk
//	    40    4  blocks per chunk, B, from 1 to 16384 (writers use 4096)
//	    44   32  hash key
//	    76    8  creation time, Unix nanoseconds; 0 when unknown
//	    84    8  H = xxhash64 of bytes 0 to 83
//
// The blocks are those HashBlocks yields for that disk size, block size
// and range: block boundaries sit on the absolute grid of multiples of the
// block size, clipped to [lo, hi), where lo is the range offset and hi is
// the disk size, or offset+length if smaller (hi = lo when the offset is
// past the disk). So the first block is short when the offset is not a
// block multiple, and the last when hi is not. Their offsets and lengths
// are not stored: a reader derives them, and with them the number of
// blocks N and of chunks ceil(N/B).
//
// The header is followed by records, each starting with a tag byte:
// first ceil(N/B) chunk records, chunk k holding blocks kB to kB+B-1 (the
// last chunk holds the rest),
//
//	offset size  field
//	     0    1  tag 'C' (0x43)
//	     1    4  L, length of the compressed body, from 1 to R+R/128+1024
//	             where R is the largest body of the chunk's blocks (below)
//	     5    L  the body, compressed as one zstd frame (RFC 8878; written
//	             without zstd's content checksum, the body has its own)
//
// whose body decompresses to
//
//	offset size  field
//	     0    8  chunk index k
//	     8    8  disk offset of the chunk's first block
//	    16    4  n, the number of blocks in the chunk: B, or N-kB for the last
//	    20       n block records, in block order, each
//	               1 byte flag: 0 hashed, 1 all zeros (no hash follows),
//	               then the block's hash (hash size bytes) when hashed
//	   end-8  8  xxhash64 of body bytes 0 to end-9, seeded with H
//
// (at most R = 28 + n*(1+hash size) bytes), and then the trailer record,
// 33 bytes, uncompressed,
//
//	offset size  field
//	     0    1  tag 'T' (0x54)
//	     1    8  N, the number of blocks
//	     9    8  the number of chunks
//	    17    8  xxhash64 of the chunk checksums (8 bytes each, in order)
//	    25    8  xxhash64 of trailer bytes 0 to 24, seeded with H
//
// after which the stream ends. Seeding with H ties every chunk and the
// trailer to their header; the chunk index ties a chunk to its place; the
// trailer's sum of sums catches a signature cut at a chunk boundary.
// A reader refuses anything else: another magic or version, an unknown
// algorithm, a size or count out of range, a failed checksum, a chunk out
// of place or with more blocks than B, a flag other than 0 or 1, a missing
// trailer or bytes after it.
//
// A reader allocates nothing from a length it read before checking it
// against a bound set by the header: a chunk body is at most
// 28+B*(1+hash size) bytes (540 KiB for B = 16384 and BLAKE3), and the
// decompressor is told so. Writer and reader each hold one chunk.
const SignatureVersion = 1

const (
	sigMagic         = "DSYNCSIG"
	sigHeaderLen     = 92
	sigChunkHeadLen  = 20
	sigTrailerLen    = 33
	sigTagChunk      = 'C'
	sigTagTrailer    = 'T'
	sigFlagHashed    = 0
	sigFlagZero      = 1
	sigChunkBlocks   = 4096  // blocks per chunk that writers use
	sigMaxChunkBlock = 16384 // most blocks per chunk a reader accepts
)

// SignatureHeader describes a signature: which blocks it covers and how
// they were hashed. Compare against it with Hasher{Alg, Key} and Options
// {BlockSize, Offset, Length}, and a target size of DiskSize.
type SignatureHeader struct {
	// Version is the format version; 0 means SignatureVersion when writing.
	Version int
	// Alg is the hash algorithm of the block hashes.
	Alg HashAlgorithm
	// BlockSize is the block size; 0 means DefaultBlockSize when writing.
	BlockSize int
	// DiskSize is the size of the disk that was hashed.
	DiskSize int64
	// Offset and Length are the range of the disk covered, as in Options:
	// Length 0 means to the end of the disk.
	Offset, Length int64
	// Key is the hash key. It is secret: see SignatureVersion.
	Key Key
	// Created is when the signature was made; zero means now when writing.
	Created time.Time
}

// sigGrid is the block grid of a signature: blocks of [lo,hi) on the
// absolute grid of multiples of bs, n of them, cb per chunk.
type sigGrid struct {
	bs, lo, hi, n, cb int64
	hashSize          int
}

// check validates a header, with messages that do not say who is wrong;
// callers add the sentinel (ErrBadOptions for a writer, ErrSignature for
// a reader).
func (h *SignatureHeader) check(cb int) (sigGrid, error) {
	var g sigGrid
	if h.Version != SignatureVersion {
		return g, fmt.Errorf("unsupported format version %d (this package handles version %d)", h.Version, SignatureVersion)
	}
	if h.Alg.Size() == 0 {
		return g, fmt.Errorf("unknown hash algorithm %d", uint8(h.Alg))
	}
	if h.BlockSize < SectorSize || h.BlockSize%SectorSize != 0 || h.BlockSize > MaxBlockSize {
		return g, fmt.Errorf("block size %d is not a multiple of 512 between 512 and %d", h.BlockSize, MaxBlockSize)
	}
	if h.DiskSize < 0 {
		return g, fmt.Errorf("disk size %d is negative", h.DiskSize)
	}
	if h.Offset < 0 || h.Offset%SectorSize != 0 {
		return g, fmt.Errorf("range offset %d is not a non-negative multiple of 512", h.Offset)
	}
	if h.Length < 0 || h.Length > math.MaxInt64-h.Offset {
		return g, fmt.Errorf("range length %d at offset %d is out of range", h.Length, h.Offset)
	}
	if cb < 1 || cb > sigMaxChunkBlock {
		return g, fmt.Errorf("%d blocks per chunk is not between 1 and %d", cb, sigMaxChunkBlock)
	}
	g = sigGrid{bs: int64(h.BlockSize), lo: h.Offset, hi: h.DiskSize, cb: int64(cb), hashSize: h.Alg.Size()}
	if h.Length > 0 {
		g.hi = min(g.hi, h.Offset+h.Length)
	}
	if g.hi > g.lo {
		g.n = (g.hi-1)/g.bs - g.lo/g.bs + 1
	} else {
		g.hi = g.lo
	}
	return g, nil
}

// end returns the end of the block that starts at b.
func (g *sigGrid) end(b int64) int64 {
	if rem := g.bs - b%g.bs; g.hi-b > rem {
		return b + rem
	}
	return g.hi
}

// chunkBlocks returns the number of blocks of chunk k.
func (g *sigGrid) chunkBlocks(k int64) int64 { return min(g.cb, g.n-k*g.cb) }

// maxBody returns the largest decompressed body of a chunk of n blocks,
// and the largest compressed one.
func (g *sigGrid) maxBody(n int64) (raw, comp int) {
	raw = sigChunkHeadLen + int(n)*(1+g.hashSize) + 8
	return raw, raw + raw/128 + 1024
}

func (h *SignatureHeader) marshal(cb int) []byte {
	b := make([]byte, sigHeaderLen)
	copy(b, sigMagic)
	le := binary.LittleEndian
	le.PutUint16(b[8:], uint16(h.Version))
	b[10] = uint8(h.Alg)
	b[11] = uint8(h.Alg.Size())
	le.PutUint32(b[12:], uint32(h.BlockSize))
	le.PutUint64(b[16:], uint64(h.DiskSize))
	le.PutUint64(b[24:], uint64(h.Offset))
	le.PutUint64(b[32:], uint64(h.Length))
	le.PutUint32(b[40:], uint32(cb))
	copy(b[44:76], h.Key[:])
	if !h.Created.IsZero() {
		le.PutUint64(b[76:], uint64(h.Created.UnixNano()))
	}
	le.PutUint64(b[84:], xxhash.Sum64(b[:84]))
	return b
}

// SignatureError is a signature that cannot be read: corrupt, truncated,
// foreign, or of an unsupported version. It wraps ErrSignature, and Err
// when there is an underlying cause (a decompression error, for example).
type SignatureError struct {
	// Part is "header", "chunk" or "trailer".
	Part string
	// Chunk is the index of the chunk (for a trailer: the number of
	// chunks before it).
	Chunk int64
	// Off is the disk offset of the chunk's first block (for a trailer:
	// the end of the range).
	Off int64
	// Pos is the byte offset of the part in the signature stream.
	Pos int64
	// Msg says what is wrong.
	Msg string
	// Err is the underlying cause, or nil.
	Err error
}

func (e *SignatureError) Error() string {
	s := "blockdiff: bad signature: "
	switch e.Part {
	case "chunk":
		s += fmt.Sprintf("chunk %d (disk offset %d) at byte %d: ", e.Chunk, e.Off, e.Pos)
	case "trailer":
		s += fmt.Sprintf("trailer (after %d chunks) at byte %d: ", e.Chunk, e.Pos)
	default:
		s += e.Part + ": "
	}
	s += e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrSignature and the cause, if any.
func (e *SignatureError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrSignature}
	}
	return []error{ErrSignature, e.Err}
}

// newSigEncoder returns a compressor for chunk bodies. Hashes do not
// compress; runs of zero blocks do, at any level, so the fastest is used.
// The body carries its own checksum, so zstd's (weaker) one is left out.
func newSigEncoder() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false))
}

// WriteSignature hashes the blocks of r (size bytes) in the range of opts
// with h, in parallel as HashBlocks does (BlockSize, Offset, Length,
// Concurrency, ReadAhead, ChunkSize, NoMmap and Progress apply), and
// writes their signature to w as they come, one chunk record per Write.
// It returns the header written. opts.Hints must be nil: a signature
// holds every block of its range. RefineSize is ignored. After an error,
// what was written is not a valid signature (it has no trailer).
func WriteSignature(ctx context.Context, w io.Writer, r io.ReaderAt, size int64, h Hasher, opts *Options) (SignatureHeader, error) {
	return writeSignature(ctx, w, r, size, h, opts, sigChunkBlocks)
}

func writeSignature(ctx context.Context, w io.Writer, r io.ReaderAt, size int64, h Hasher, opts *Options, cb int) (SignatureHeader, error) {
	if err := h.check(); err != nil {
		return SignatureHeader{}, err
	}
	c, err := opts.config()
	if err != nil {
		return SignatureHeader{}, err
	}
	if c.Hints != nil {
		return SignatureHeader{}, fmt.Errorf("%w: a signature holds every block of its range, hints are not allowed", ErrBadOptions)
	}
	sw, err := newSignatureWriter(w, SignatureHeader{
		Alg: h.Alg, BlockSize: c.bs, DiskSize: size,
		Offset: c.Offset, Length: c.Length, Key: h.Key,
	}, cb)
	if err != nil {
		return SignatureHeader{}, err
	}
	err = HashBlocks(ctx, r, size, h, opts, sw.Add)
	if cerr := sw.Close(); err == nil {
		err = cerr
	}
	return sw.Header(), err
}

// SignatureWriter writes a signature from block hashes made elsewhere (a
// remote agent's HashBlocks, for example). Create it with
// NewSignatureWriter, Add every block of the header's range in order, then
// Close. It is not safe for concurrent use.
type SignatureWriter struct {
	w     io.Writer
	hdr   SignatureHeader
	g     sigGrid
	hsum  uint64
	enc   *zstd.Encoder
	raw   []byte // body of the chunk being filled
	out   []byte // compressed chunk record
	nc    int64  // blocks in the chunk being filled
	chunk int64  // chunks written
	next  int64  // index of the next block
	off   int64  // offset of the next block
	sums  *xxhash.Digest
	err   error
	done  bool
}

// NewSignatureWriter writes the header of a signature to w and returns a
// writer for its blocks. Zero Version, BlockSize and Created mean
// SignatureVersion, DefaultBlockSize and now; the header is checked as a
// reader would check it, and an invalid one is refused with ErrBadOptions.
func NewSignatureWriter(w io.Writer, hdr SignatureHeader) (*SignatureWriter, error) {
	return newSignatureWriter(w, hdr, sigChunkBlocks)
}

func newSignatureWriter(w io.Writer, hdr SignatureHeader, cb int) (*SignatureWriter, error) {
	if hdr.Version == 0 {
		hdr.Version = SignatureVersion
	}
	if hdr.BlockSize == 0 {
		hdr.BlockSize = DefaultBlockSize
	}
	if hdr.Created.IsZero() {
		hdr.Created = time.Now()
	}
	if hdr.Created.Before(time.Unix(0, 1)) || hdr.Created.After(time.Unix(0, math.MaxInt64)) {
		return nil, fmt.Errorf("%w: signature creation time %v is out of range", ErrBadOptions, hdr.Created)
	}
	hdr.Created = time.Unix(0, hdr.Created.UnixNano()) // as a reader will return it
	g, err := hdr.check(cb)
	if err != nil {
		return nil, fmt.Errorf("%w: signature header: %v", ErrBadOptions, err)
	}
	enc, err := newSigEncoder()
	if err != nil {
		return nil, err
	}
	sw := &SignatureWriter{w: w, hdr: hdr, g: g, enc: enc, off: g.lo}
	b := hdr.marshal(cb)
	sw.hsum = binary.LittleEndian.Uint64(b[84:])
	sw.sums = xxhash.New()
	if _, err := w.Write(b); err != nil {
		enc.Close()
		return nil, fmt.Errorf("blockdiff: writing signature header: %w", err)
	}
	return sw, nil
}

// Header returns the header written, with its defaults filled in.
func (sw *SignatureWriter) Header() SignatureHeader { return sw.hdr }

// Add appends the hash of the next block. It must be the next block of the
// header's grid, as HashBlocks yields them (offset and length), or Add
// fails with ErrHashMismatch. Of Sum, only Alg.Size() bytes are kept. A
// failed Add (or a failed write underneath) makes every later call fail.
func (sw *SignatureWriter) Add(bh BlockHash) error {
	if sw.err != nil {
		return sw.err
	}
	if sw.done {
		return errors.New("blockdiff: SignatureWriter.Add after Close")
	}
	if sw.next == sw.g.n {
		sw.err = fmt.Errorf("%w: block [%d,+%d) is past the end %d of the signature's range", ErrHashMismatch, bh.Off, bh.Len, sw.g.hi)
		return sw.err
	}
	end := sw.g.end(sw.off)
	if bh.Off != sw.off || int64(bh.Len) != end-sw.off {
		sw.err = fmt.Errorf("%w: block [%d,+%d) added to a signature whose next block is [%d,+%d)", ErrHashMismatch, bh.Off, bh.Len, sw.off, end-sw.off)
		return sw.err
	}
	if sw.nc == 0 {
		sw.raw = binary.LittleEndian.AppendUint64(sw.raw[:0], uint64(sw.chunk))
		sw.raw = binary.LittleEndian.AppendUint64(sw.raw, uint64(sw.off))
		sw.raw = binary.LittleEndian.AppendUint32(sw.raw, 0) // count, set when full
	}
	if bh.Zero {
		sw.raw = append(sw.raw, sigFlagZero)
	} else {
		sw.raw = append(sw.raw, sigFlagHashed)
		sw.raw = append(sw.raw, bh.Sum[:sw.g.hashSize]...)
	}
	sw.nc++
	sw.next++
	sw.off = end
	if sw.nc == sw.g.cb {
		sw.err = sw.flush()
	}
	return sw.err
}

// flush compresses and writes the chunk being filled.
func (sw *SignatureWriter) flush() error {
	binary.LittleEndian.PutUint32(sw.raw[16:], uint32(sw.nc))
	sum := xxhash.NewWithSeed(sw.hsum)
	_, _ = sum.Write(sw.raw)
	sw.raw = binary.LittleEndian.AppendUint64(sw.raw, sum.Sum64())
	_, _ = sw.sums.Write(sw.raw[len(sw.raw)-8:])
	sw.out = append(sw.out[:0], sigTagChunk, 0, 0, 0, 0)
	sw.out = sw.enc.EncodeAll(sw.raw, sw.out)
	n := len(sw.out) - 5
	if _, limit := sw.g.maxBody(sw.nc); n > limit {
		return fmt.Errorf("blockdiff: signature chunk %d compressed to %d bytes, over the bound of %d", sw.chunk, n, limit)
	}
	binary.LittleEndian.PutUint32(sw.out[1:], uint32(n))
	if _, err := sw.w.Write(sw.out); err != nil {
		return fmt.Errorf("blockdiff: writing signature chunk %d (disk offset %d): %w", sw.chunk, binary.LittleEndian.Uint64(sw.raw[8:]), err)
	}
	sw.chunk++
	sw.nc = 0
	return nil
}

// Close writes the last chunk and the trailer. It fails with
// ErrHashMismatch, writing no trailer, if blocks are missing. It does not
// close the underlying writer. Calling it again returns the same result.
func (sw *SignatureWriter) Close() error {
	if sw.done {
		return sw.err
	}
	sw.done = true
	defer sw.enc.Close()
	if sw.err != nil {
		return sw.err
	}
	if sw.next != sw.g.n {
		sw.err = fmt.Errorf("%w: signature closed after %d of its %d blocks (next at offset %d)", ErrHashMismatch, sw.next, sw.g.n, sw.off)
		return sw.err
	}
	if sw.nc > 0 {
		if sw.err = sw.flush(); sw.err != nil {
			return sw.err
		}
	}
	t := make([]byte, 1, sigTrailerLen)
	t[0] = sigTagTrailer
	t = binary.LittleEndian.AppendUint64(t, uint64(sw.g.n))
	t = binary.LittleEndian.AppendUint64(t, uint64(sw.chunk))
	t = binary.LittleEndian.AppendUint64(t, sw.sums.Sum64())
	sum := xxhash.NewWithSeed(sw.hsum)
	_, _ = sum.Write(t)
	t = binary.LittleEndian.AppendUint64(t, sum.Sum64())
	if _, err := sw.w.Write(t); err != nil {
		sw.err = fmt.Errorf("blockdiff: writing signature trailer: %w", err)
	}
	return sw.err
}

// SignatureReader reads a signature as a stream of block hashes. It is a
// HashIterator, so CompareHashes can read it directly; CompareSignature
// does that with the settings of its header. It is not safe for
// concurrent use.
type SignatureReader struct {
	r     io.Reader
	pos   int64 // bytes read from r
	hdr   SignatureHeader
	g     sigGrid
	hsum  uint64
	dec   *zstd.Decoder
	comp  []byte // compressed body
	body  []byte // decompressed body
	rec   []byte // records not yet returned, of the current chunk
	left  int64  // blocks not yet returned, of the current chunk
	chunk int64  // chunks read
	next  int64  // index of the next block
	off   int64  // offset of the next block
	sums  *xxhash.Digest
	err   error // sticky; io.EOF after a valid trailer
}

var errSigClosed = errors.New("blockdiff: SignatureReader is closed")

// NewSignatureReader reads and checks the header of a signature. A header
// that is not a signature's, of another version, or damaged, is refused
// with a *SignatureError (wrapping ErrSignature). The blocks are read,
// each chunk checked whole before its first block is returned, by Next.
func NewSignatureReader(r io.Reader) (*SignatureReader, error) {
	sr := &SignatureReader{r: r}
	b := make([]byte, sigHeaderLen)
	// Magic and version first, so that a newer version with another
	// header is reported as such, not as truncated or damaged.
	if err := sr.read(b[:10], "header", 0, 0, "header's magic and version"); err != nil {
		return nil, err
	}
	herr := func(format string, args ...any) error {
		return &SignatureError{Part: "header", Msg: fmt.Sprintf(format, args...)}
	}
	if string(b[:8]) != sigMagic {
		return nil, herr("not a signature: magic %q, want %q", b[:8], sigMagic)
	}
	le := binary.LittleEndian
	if v := le.Uint16(b[8:]); v != SignatureVersion {
		return nil, herr("unsupported format version %d (this package reads version %d)", v, SignatureVersion)
	}
	if err := sr.read(b[10:], "header", 0, 0, "rest of the header"); err != nil {
		return nil, err
	}
	if got, want := xxhash.Sum64(b[:84]), le.Uint64(b[84:]); got != want {
		return nil, herr("checksum mismatch (computed %#016x, stored %#016x)", got, want)
	}
	alg := HashAlgorithm(b[10])
	if alg.Size() == 0 {
		return nil, herr("unknown hash algorithm %d", b[10])
	}
	if int(b[11]) != alg.Size() {
		return nil, herr("hash size %d, but %v hashes are %d bytes", b[11], alg, alg.Size())
	}
	for i, v := range []uint64{le.Uint64(b[16:]), le.Uint64(b[24:]), le.Uint64(b[32:])} {
		if v > math.MaxInt64 {
			return nil, herr("%s %d is out of range", [...]string{"disk size", "range offset", "range length"}[i], v)
		}
	}
	sr.hdr = SignatureHeader{
		Version:   SignatureVersion,
		Alg:       alg,
		BlockSize: int(le.Uint32(b[12:])),
		DiskSize:  int64(le.Uint64(b[16:])),
		Offset:    int64(le.Uint64(b[24:])),
		Length:    int64(le.Uint64(b[32:])),
	}
	copy(sr.hdr.Key[:], b[44:76])
	if t := int64(le.Uint64(b[76:])); t != 0 {
		sr.hdr.Created = time.Unix(0, t)
	}
	cb := le.Uint32(b[40:])
	if cb > sigMaxChunkBlock {
		return nil, herr("%d blocks per chunk, more than the %d allowed", cb, sigMaxChunkBlock)
	}
	g, err := sr.hdr.check(int(cb))
	if err != nil {
		return nil, herr("%v", err)
	}
	sr.g, sr.off, sr.hsum = g, g.lo, le.Uint64(b[84:])
	sr.sums = xxhash.New()
	sr.dec, err = zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecodeAllCapLimit(true),
		// Bodies are decoded into a buffer of the largest body's size, and
		// the decoder refuses to go past it; the window of a frame so
		// small does not matter, but a silly one is refused.
		zstd.WithDecoderMaxMemory(8<<20),
		zstd.WithDecoderMaxWindow(8<<20))
	if err != nil {
		return nil, err
	}
	return sr, nil
}

// Header returns the signature's header.
func (sr *SignatureReader) Header() SignatureHeader { return sr.hdr }

// Next returns the hash of the next block, with its offset and length
// derived from the header. It returns io.EOF only after the last block,
// once the trailer has been checked and found to be the end of the
// stream. A damaged signature is reported as a *SignatureError that wraps
// ErrSignature and says where; an error of the underlying reader is
// returned wrapped, without ErrSignature. Errors are sticky.
func (sr *SignatureReader) Next() (BlockHash, error) {
	if sr.err != nil {
		return BlockHash{}, sr.err
	}
	if sr.left == 0 {
		var err error
		if sr.next == sr.g.n {
			if err = sr.readTrailer(); err == nil {
				err = io.EOF
			}
		} else {
			err = sr.readChunk()
		}
		if err != nil {
			sr.fail(err)
			return BlockHash{}, err
		}
	}
	end := sr.g.end(sr.off)
	bh := BlockHash{Off: sr.off, Len: int32(end - sr.off)}
	if sr.rec[0] == sigFlagZero {
		bh.Zero = true
		sr.rec = sr.rec[1:]
	} else {
		copy(bh.Sum[:], sr.rec[1:1+sr.g.hashSize])
		sr.rec = sr.rec[1+sr.g.hashSize:]
	}
	sr.left--
	sr.next++
	sr.off = end
	return bh, nil
}

// Close releases the decompressor; Next then fails. It does not close the
// underlying reader. The decompressor is also released when Next returns
// io.EOF or an error, so Close is only needed to stop early.
func (sr *SignatureReader) Close() error {
	if sr.err == nil {
		sr.fail(errSigClosed)
	}
	return nil
}

func (sr *SignatureReader) fail(err error) {
	sr.err = err
	if sr.dec != nil {
		sr.dec.Close()
		sr.dec = nil
	}
	sr.comp, sr.body, sr.rec = nil, nil, nil
}

// read fills p from the stream; a short stream is a truncated signature.
func (sr *SignatureReader) read(p []byte, part string, chunk, off int64, what string) error {
	n, err := io.ReadFull(sr.r, p)
	sr.pos += int64(n)
	if err == nil {
		return nil
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return &SignatureError{Part: part, Chunk: chunk, Off: off, Pos: sr.pos - int64(n),
			Msg: fmt.Sprintf("truncated: the stream ends %d bytes into the %s (%d bytes)", n, what, len(p))}
	}
	return fmt.Errorf("blockdiff: reading signature at byte %d: %w", sr.pos, err)
}

// readChunk reads, decompresses and checks the next chunk whole.
func (sr *SignatureReader) readChunk() error {
	k, first, want := sr.chunk, sr.off, sr.g.chunkBlocks(sr.chunk)
	pos := sr.pos
	cerr := func(cause error, format string, args ...any) error {
		return &SignatureError{Part: "chunk", Chunk: k, Off: first, Pos: pos, Msg: fmt.Sprintf(format, args...), Err: cause}
	}
	var head [5]byte
	if n, err := io.ReadFull(sr.r, head[:1]); err == io.EOF {
		return cerr(nil, "truncated: the stream ends where chunk %d of %d should start", k+1, (sr.g.n+sr.g.cb-1)/sr.g.cb)
	} else if err != nil {
		return fmt.Errorf("blockdiff: reading signature at byte %d: %w", sr.pos, err)
	} else {
		sr.pos += int64(n)
	}
	switch head[0] {
	case sigTagChunk:
	case sigTagTrailer:
		return cerr(nil, "trailer found where chunk %d of %d should start", k+1, (sr.g.n+sr.g.cb-1)/sr.g.cb)
	default:
		return cerr(nil, "unknown record tag %#02x", head[0])
	}
	if err := sr.read(head[1:], "chunk", k, first, "chunk's length"); err != nil {
		return err
	}
	rawMax, compMax := sr.g.maxBody(want)
	clen := binary.LittleEndian.Uint32(head[1:])
	if clen == 0 || clen > uint32(compMax) {
		return cerr(nil, "compressed length %d is not between 1 and %d", clen, compMax)
	}
	if cap(sr.comp) < int(clen) {
		sr.comp = make([]byte, clen)
	}
	sr.comp = sr.comp[:clen]
	if err := sr.read(sr.comp, "chunk", k, first, "compressed chunk"); err != nil {
		return err
	}
	if cap(sr.body) < rawMax {
		sr.body = make([]byte, 0, rawMax)
	}
	body, err := sr.dec.DecodeAll(sr.comp, sr.body[:0:rawMax])
	if err != nil {
		return cerr(err, "decompression failed")
	}
	if len(body) < sigChunkHeadLen+8 {
		return cerr(nil, "body of %d bytes is too short", len(body))
	}
	le := binary.LittleEndian
	sum := xxhash.NewWithSeed(sr.hsum)
	_, _ = sum.Write(body[:len(body)-8])
	if got, stored := sum.Sum64(), le.Uint64(body[len(body)-8:]); got != stored {
		return cerr(nil, "checksum mismatch (computed %#016x, stored %#016x)", got, stored)
	}
	if idx := le.Uint64(body); idx != uint64(k) {
		return cerr(nil, "holds chunk index %d (out of place)", idx)
	}
	if off := le.Uint64(body[8:]); off != uint64(first) {
		return cerr(nil, "first block at offset %d, want %d", off, first)
	}
	n := int64(le.Uint32(body[16:]))
	if n > sr.g.cb {
		return cerr(nil, "declares %d blocks, more than the %d per chunk", n, sr.g.cb)
	}
	if n != want {
		return cerr(nil, "declares %d blocks, want %d", n, want)
	}
	rec := body[sigChunkHeadLen : len(body)-8]
	p, off := 0, first
	for i := int64(0); i < n; i++ {
		if p >= len(rec) {
			return cerr(nil, "records end after %d of %d blocks", i, n)
		}
		switch rec[p] {
		case sigFlagZero:
			p++
		case sigFlagHashed:
			p += 1 + sr.g.hashSize
		default:
			return cerr(nil, "block at offset %d has unknown flag %d", off, rec[p])
		}
		off = sr.g.end(off)
	}
	if p != len(rec) {
		return cerr(nil, "records take %d bytes, the body holds %d", p, len(rec))
	}
	_, _ = sr.sums.Write(body[len(body)-8:])
	sr.rec, sr.left = rec, n
	sr.chunk++
	return nil
}

// readTrailer reads and checks the trailer and the end of the stream.
func (sr *SignatureReader) readTrailer() error {
	pos := sr.pos
	terr := func(format string, args ...any) error {
		return &SignatureError{Part: "trailer", Chunk: sr.chunk, Off: sr.g.hi, Pos: pos, Msg: fmt.Sprintf(format, args...)}
	}
	var t [sigTrailerLen]byte
	if n, err := io.ReadFull(sr.r, t[:1]); err == io.EOF {
		return terr("truncated: the stream ends where the trailer should start")
	} else if err != nil {
		return fmt.Errorf("blockdiff: reading signature at byte %d: %w", sr.pos, err)
	} else {
		sr.pos += int64(n)
	}
	switch t[0] {
	case sigTagTrailer:
	case sigTagChunk:
		return terr("a chunk follows the last of the %d blocks", sr.g.n)
	default:
		return terr("unknown record tag %#02x", t[0])
	}
	if err := sr.read(t[1:], "trailer", sr.chunk, sr.g.hi, "trailer"); err != nil {
		return err
	}
	le := binary.LittleEndian
	sum := xxhash.NewWithSeed(sr.hsum)
	_, _ = sum.Write(t[:25])
	if got, stored := sum.Sum64(), le.Uint64(t[25:]); got != stored {
		return terr("checksum mismatch (computed %#016x, stored %#016x)", got, stored)
	}
	if n := le.Uint64(t[1:]); n != uint64(sr.g.n) {
		return terr("counts %d blocks, the header's range holds %d", n, sr.g.n)
	}
	if n := le.Uint64(t[9:]); n != uint64(sr.chunk) {
		return terr("counts %d chunks, %d were read", n, sr.chunk)
	}
	if got, stored := sr.sums.Sum64(), le.Uint64(t[17:]); got != stored {
		return terr("sum of the chunk checksums is %#016x, the trailer says %#016x", got, stored)
	}
	var extra [1]byte
	switch n, err := io.ReadFull(sr.r, extra[:]); {
	case n > 0:
		return terr("extra data after the trailer, at byte %d", sr.pos)
	case err != io.EOF:
		return fmt.Errorf("blockdiff: reading signature at byte %d: %w", sr.pos, err)
	}
	return nil
}

// CompareSignature compares the source against a signature of the target,
// as CompareHashes does, hashing the source with the signature's algorithm
// and key, at its block size, over its range; the target's size is the
// signature's disk size. Zero BlockSize, Offset and Length in opts are
// taken from the header; other values must equal the header's, and Hints
// must be nil, or the call fails with ErrBadOptions. sig must not have
// been read from yet.
func CompareSignature(ctx context.Context, src io.ReaderAt, srcSize int64, sig *SignatureReader, opts *Options, fn func(disk.Extent) error) (Stats, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	h := sig.Header()
	bad := func(what string, got, want int64) (Stats, error) {
		return Stats{}, fmt.Errorf("%w: %s %d contradicts the signature's %d", ErrBadOptions, what, got, want)
	}
	switch {
	case o.BlockSize != 0 && o.BlockSize != h.BlockSize:
		return bad("block size", int64(o.BlockSize), int64(h.BlockSize))
	case o.Offset != 0 && o.Offset != h.Offset:
		return bad("offset", o.Offset, h.Offset)
	case o.Length != 0 && o.Length != h.Length:
		return bad("length", o.Length, h.Length)
	case o.Hints != nil:
		return Stats{}, fmt.Errorf("%w: hints cannot be used with a signature, which holds every block of its range", ErrBadOptions)
	case sig.next != 0:
		return Stats{}, fmt.Errorf("%w: the signature has already been read from (%d blocks)", ErrBadOptions, sig.next)
	case sig.err != nil && sig.err != io.EOF:
		return Stats{}, sig.err
	}
	o.BlockSize, o.Offset, o.Length = h.BlockSize, h.Offset, h.Length
	return CompareHashes(ctx, src, srcSize, Hasher{Alg: h.Alg, Key: h.Key}, sig, h.DiskSize, &o, fn)
}
