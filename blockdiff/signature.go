package blockdiff

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/cespare/xxhash/v2"
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
