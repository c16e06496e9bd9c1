package patch

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/deltasync/deltasync/blockdiff"
)

// Version is the patch format version this package writes and the only
// one it reads.
//
// A patch is written once, as a stream (Write), and read twice by Apply:
// once whole to check it, once to apply it. Neither side holds more than
// one record. All integers are little-endian; xxhash64 is XXH64
// (github.com/cespare/xxhash/v2), "seeded with S" meaning XXH64 with seed S.
//
// Blocks are those of blockdiff: block i is [i*bs, (i+1)*bs) clipped to a
// disk's size. The base has nB = ceil(B/bs) blocks, the result (the source
// the patch was made from) nS = ceil(S/bs). A block index i names base
// block i and result block i at once; the two have the same extent when i
// is below c, the common blocks: c = nS when S = B, else floor(min(S,B)/bs).
//
// The header, 96 bytes:
//
//	offset size  field
//	     0    8  magic "DSYNCPAT"
//	     8    2  format version, 1
//	    10    1  hash algorithm: 1 XXH3-128, 2 keyed BLAKE3 (blockdiff)
//	    11    1  hash size in bytes: 16 or 32
//	    12    4  block size bs: a multiple of 512, from 512 to 4 MiB
//	    16    8  base size B, at most 2^63-1
//	    24    8  result size S, at most 2^63-1
//	    32    4  largest data record in bytes: a multiple of bs, at most
//	             16 MiB (writers: 1 MiB, or bs if larger)
//	    36    4  most blocks per zero record, 1 to 65536 (writers: 16384)
//	    40   32  hash key of the base's signature
//	    72    8  creation time of the base's signature, Unix ns; 0 unknown
//	    80    8  creation time of the patch, Unix ns; 0 unknown
//	    88    8  HS = xxhash64 of bytes 0 to 87
//
// Then records, each
//
//	offset size  field
//	     0    1  tag: 'R' resize, 'D' data, 'Z' zero, 'X' truncate
//	     1    1  payload encoding: 0 raw, 1 one zstd frame (RFC 8878)
//	     2    8  offset on the disk
//	    10    8  length on the disk
//	    18    4  H, bytes of base hashes
//	    22    4  L, bytes of payload
//	    26    H  base hashes
//	  26+H    L  payload
//	26+H+L    8  xxhash64 of bytes 0 to 25+H+L, seeded with HS
//
// in this order: one 'R' record first if and only if S > B (offset B,
// length S-B: the target grows to S before anything is written); 'D' and
// 'Z' records at strictly ascending, non-overlapping offsets; one 'X'
// record last if and only if S < B (offset S, length B-S: the target is
// cut to S after everything is written). 'R' and 'X' have encoding 0 and
// H = L = 0.
//
// A 'D' record holds the result's bytes of [offset, offset+length); a 'Z'
// record says that they are zeros. Their offset is a multiple of bs, their
// end at most S and a multiple of bs or S: they cover whole result blocks.
// Together they cover every result block that differs from its base block,
// and every result block from c on. A 'D' record is at most the header's
// largest data record, a 'Z' record at most its blocks per zero record.
// The payload of a 'D' record is its bytes raw (encoding 0, L = length) or
// compressed (encoding 1, 1 <= L < length, a frame that decompresses to
// exactly length bytes; written when it saves at least 1/32); a 'Z'
// record has none (encoding 0, L = 0).
//
// The base hashes of a 'D' or 'Z' record are those, from the base's
// signature, of the base blocks it covers (those of index below nB), in
// order: one byte 0 and the hash (hash size bytes), or one byte 1 for a
// block of zeros. They let Apply prove the base without the blocks that
// the patch rewrites.
//
// The trailer, 105 bytes:
//
//	offset size  field
//	     0    1  tag 'T'
//	     1    8  number of records ('R', 'D', 'Z' and 'X')
//	     9    8  bytes of data: the sum of the lengths of 'D' records
//	    17    8  bytes of zeros: the sum of the lengths of 'Z' records
//	    25   32  base digest: the Digest of the base's signature
//	    57   32  result digest: the Digest of the result, hashed with
//	             the same algorithm, key and block size
//	    89    8  xxhash64 of the record checksums (8 bytes each, in order)
//	    97    8  xxhash64 of bytes 0 to 96, seeded with HS
//
// after which the stream ends. A reader refuses anything else: another
// magic or version, an unknown algorithm, a size or limit out of range, a
// failed checksum, a record out of place, out of order, unaligned, too
// long, leaving a block uncovered that must be covered, with a bad base
// hash list or a payload that does not decompress to its length, a count
// or sum in the trailer that does not match, and a missing trailer or
// bytes after it. Seeding with HS ties every record and the trailer to
// their header; the trailer's counts and sum of sums catch a patch cut at
// a record boundary. Checksums detect accidents, not tampering: a patch
// is trusted as much as where it came from.
//
// A reader allocates nothing from a length before checking it against a
// bound set by the header: a record is read in pieces as it arrives and
// decompressed only once its checksum holds.
const Version = 1

const (
	magic      = "DSYNCPAT"
	headerLen  = 96
	recHeadLen = 26
	trailerLen = 105

	tagResize   = 'R'
	tagData     = 'D'
	tagZero     = 'Z'
	tagTruncate = 'X'
	tagTrailer  = 'T'

	encRaw  = 0
	encZstd = 1

	flagHashed = 0
	flagZero   = 1

	// DefaultRecordSize is the largest data record a writer makes when
	// WriteOptions.RecordSize is 0 (or the block size, if larger).
	DefaultRecordSize = 1 << 20
	// MaxRecordSize is the largest data record allowed.
	MaxRecordSize = 16 << 20

	zeroRecordBlocks = 16384 // blocks per zero record that writers use
	maxZeroBlocks    = 65536 // most blocks per zero record a reader accepts
)

// Header describes a patch: the base it applies to, the result it makes,
// and how its blocks are hashed.
type Header struct {
	// Version is the format version.
	Version int
	// Alg is the hash algorithm of the block hashes.
	Alg blockdiff.HashAlgorithm
	// BlockSize is the block size of the base's signature.
	BlockSize int
	// BaseSize is the size of the base the patch applies to.
	BaseSize int64
	// ResultSize is the size of the result, the source it was made from.
	ResultSize int64
	// RecordSize is the largest data record, in bytes.
	RecordSize int
	// ZeroBlocks is the largest zero record, in blocks.
	ZeroBlocks int
	// Key is the hash key of the base's signature. It is as secret as the
	// signature: see the package documentation.
	Key blockdiff.Key
	// BaseCreated is when the base's signature was made; zero if unknown.
	BaseCreated time.Time
	// Created is when the patch was made; zero if unknown.
	Created time.Time
}

// grid is the block grid of a patch.
type grid struct {
	bs, base, result int64
	nBase, nResult   int64 // blocks of the base and of the result
	common           int64 // blocks with the same extent in both
	hashSize         int
}

func blocksOf(size, bs int64) int64 { return (size + bs - 1) / bs }

func (g *grid) baseLen(i int64) int64   { return min(g.base-i*g.bs, g.bs) }
func (g *grid) resultLen(i int64) int64 { return min(g.result-i*g.bs, g.bs) }

// entryBytes returns the bounds of the base hashes of n blocks.
func (g *grid) entryBytes(n int64) (lo, hi int64) { return n, n * int64(1+g.hashSize) }

// check validates a header and derives its grid. The message does not
// say who is wrong; callers add that.
func (h *Header) check() (grid, error) {
	var g grid
	if h.Version != Version {
		return g, fmt.Errorf("unsupported format version %d (this package handles version %d)", h.Version, Version)
	}
	if h.Alg.Size() == 0 {
		return g, fmt.Errorf("unknown hash algorithm %d", uint8(h.Alg))
	}
	bs := h.BlockSize
	if bs < blockdiff.SectorSize || bs%blockdiff.SectorSize != 0 || bs > blockdiff.MaxBlockSize {
		return g, fmt.Errorf("block size %d is not a multiple of 512 from 512 to %d", bs, blockdiff.MaxBlockSize)
	}
	if h.BaseSize < 0 || h.ResultSize < 0 {
		return g, fmt.Errorf("negative size (base %d, result %d)", h.BaseSize, h.ResultSize)
	}
	if h.RecordSize < bs || h.RecordSize%bs != 0 || h.RecordSize > MaxRecordSize {
		return g, fmt.Errorf("largest data record %d is not a multiple of the block size %d up to %d", h.RecordSize, bs, MaxRecordSize)
	}
	if h.ZeroBlocks < 1 || h.ZeroBlocks > maxZeroBlocks {
		return g, fmt.Errorf("%d blocks per zero record is not from 1 to %d", h.ZeroBlocks, maxZeroBlocks)
	}
	g = grid{bs: int64(bs), base: h.BaseSize, result: h.ResultSize, hashSize: h.Alg.Size()}
	g.nBase, g.nResult = blocksOf(g.base, g.bs), blocksOf(g.result, g.bs)
	if g.base == g.result {
		g.common = g.nResult
	} else {
		g.common = min(g.base, g.result) / g.bs
	}
	return g, nil
}

func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

func fromUnixNano(v uint64) time.Time {
	if v == 0 || v > math.MaxInt64 {
		return time.Time{}
	}
	return time.Unix(0, int64(v))
}

// marshal encodes a checked header.
func (h *Header) marshal() []byte {
	b := make([]byte, headerLen)
	le := binary.LittleEndian
	copy(b, magic)
	le.PutUint16(b[8:], uint16(h.Version))
	b[10] = uint8(h.Alg)
	b[11] = uint8(h.Alg.Size())
	le.PutUint32(b[12:], uint32(h.BlockSize))
	le.PutUint64(b[16:], uint64(h.BaseSize))
	le.PutUint64(b[24:], uint64(h.ResultSize))
	le.PutUint32(b[32:], uint32(h.RecordSize))
	le.PutUint32(b[36:], uint32(h.ZeroBlocks))
	copy(b[40:72], h.Key[:])
	le.PutUint64(b[72:], unixNano(h.BaseCreated))
	le.PutUint64(b[80:], unixNano(h.Created))
	le.PutUint64(b[88:], xxhash.Sum64(b[:88]))
	return b
}

// Trailer is what a patch says about itself at its end: how much it holds
// and the identities of its base and of its result.
type Trailer struct {
	// Records is the number of records (resize, data, zero, truncate).
	Records int64
	// DataBytes is the length of the result's bytes the patch carries,
	// before compression.
	DataBytes int64
	// ZeroBytes is the length of the ranges the patch clears.
	ZeroBytes int64
	// BaseDigest is the Digest of the base's signature: see Digest.
	BaseDigest Digest
	// ResultDigest is the Digest of the result's block hashes, made with
	// the base's algorithm, key and block size.
	ResultDigest Digest
}
