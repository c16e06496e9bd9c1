package agent

import (
	"encoding/binary"
	"math"

	"github.com/deltasync/deltasync/blockdiff"
)

// A batch of block hashes (an mHashes payload) is the first block's offset
// (uvarint) and then one entry per block or run of blocks. A block's
// standard length runs to the next multiple of the block size; every
// block starts where the previous one ended unless a gap is given.
//
//	tag  1 byte: low 2 bits the kind; 0x04 an explicit length follows;
//	     0x08 a gap (bytes skipped before the block) follows
//	[gap uvarint] [length uvarint]
//	kind 0, data: the hash, Alg.Size() bytes
//	kind 1, zero: nothing more
//	kind 2, zero run: uvarint count (at least 2) of contiguous zero
//	     blocks of standard length
//
// So a data block costs its hash and one byte, and a run of zero blocks a
// few bytes in all.
const (
	kindData    = 0
	kindZero    = 1
	kindZeroRun = 2
	flagLen     = 0x04
	flagGap     = 0x08
	kindMask    = 0x03
)

// stdLen is the standard length of a block starting at off.
func stdLen(off, bs int64) int64 { return bs - off%bs }

// hashEncoder builds batches. The zero value is not usable; see
// newHashEncoder.
type hashEncoder struct {
	size    int   // bytes of one hash
	bs      int64 // block size
	buf     []byte
	blocks  int   // blocks in the batch
	prevEnd int64 // end of the last block added
	run     int64 // zero blocks of standard length not yet written
}

func newHashEncoder(alg blockdiff.HashAlgorithm, bs int64) *hashEncoder {
	return &hashEncoder{size: alg.Size(), bs: bs}
}

// add appends one block; blocks come in ascending order.
func (e *hashEncoder) add(bh blockdiff.BlockHash) {
	if e.blocks == 0 {
		e.buf = binary.AppendUvarint(e.buf[:0], uint64(bh.Off))
		e.prevEnd = bh.Off
	}
	e.blocks++
	gap := bh.Off - e.prevEnd
	n := int64(bh.Len)
	std := n == stdLen(bh.Off, e.bs)
	e.prevEnd = bh.Off + n
	if bh.Zero && std && gap == 0 {
		e.run++
		return
	}
	e.flushRun()
	tag := byte(kindData)
	if bh.Zero {
		tag = kindZero
	}
	if !std {
		tag |= flagLen
	}
	if gap != 0 {
		tag |= flagGap
	}
	e.buf = append(e.buf, tag)
	if gap != 0 {
		e.buf = binary.AppendUvarint(e.buf, uint64(gap))
	}
	if !std {
		e.buf = binary.AppendUvarint(e.buf, uint64(n))
	}
	if !bh.Zero {
		e.buf = append(e.buf, bh.Sum[:e.size]...)
	}
}

func (e *hashEncoder) flushRun() {
	switch {
	case e.run == 1:
		e.buf = append(e.buf, kindZero)
	case e.run > 1:
		e.buf = append(e.buf, kindZeroRun)
		e.buf = binary.AppendUvarint(e.buf, uint64(e.run))
	}
	e.run = 0
}

// take returns the batch built so far and starts a new one. The bytes
// are valid until the next add.
func (e *hashEncoder) take() (payload []byte, blocks int) {
	e.flushRun()
	payload, blocks = e.buf, e.blocks
	e.buf, e.blocks = e.buf[:0], 0
	return payload, blocks
}

// decodeHashes decodes a batch and appends its blocks to out. Blocks must
// start at or after prevEnd, ascend without overlapping, be 1 to bs bytes
// long, and number at most limit; anything else is a protocol error.
// It returns the end of the last block.
func decodeHashes(p []byte, size int, bs int64, prevEnd int64, limit int, out []blockdiff.BlockHash) ([]blockdiff.BlockHash, int64, error) {
	if bs < 1 || bs > blockdiff.MaxBlockSize || size < 1 || size > len(blockdiff.Sum{}) {
		return out, prevEnd, protoErr("hash batch with block size %d, hash size %d", bs, size)
	}
	d := dec{b: p}
	off := d.ivarint("hash batch offset")
	if d.err != nil {
		return out, prevEnd, d.err
	}
	if off < prevEnd {
		return out, prevEnd, protoErr("hash batch starts at %d, before %d", off, prevEnd)
	}
	n := 0
	push := func(bh blockdiff.BlockHash) error {
		if n >= limit {
			return protoErr("more block hashes than the client's credit (%d)", limit)
		}
		n++
		out = append(out, bh)
		return nil
	}
	for len(d.b) > 0 {
		tag := d.u8("hash tag")
		if tag&^(kindMask|flagLen|flagGap) != 0 {
			return out, off, protoErr("unknown hash tag %#x", tag)
		}
		kind := tag & kindMask
		if tag&flagGap != 0 {
			g := d.ivarint("hash gap")
			if d.err != nil || g > math.MaxInt64-off {
				return out, off, protoErr("malformed hash gap")
			}
			off += g
		}
		if kind == kindZeroRun {
			if tag&(flagLen|flagGap) != 0 {
				return out, off, protoErr("zero run with a length or gap")
			}
			cnt := d.uvarint("zero run")
			if d.err != nil {
				return out, off, d.err
			}
			if cnt < 2 || cnt > uint64(limit-n) {
				return out, off, protoErr("zero run of %d blocks (credit %d)", cnt, limit-n)
			}
			for range cnt {
				l := stdLen(off, bs)
				if off > math.MaxInt64-l {
					return out, off, protoErr("block offset overflows")
				}
				if err := push(blockdiff.BlockHash{Off: off, Len: int32(l), Zero: true}); err != nil {
					return out, off, err
				}
				off += l
			}
			continue
		}
		if kind != kindData && kind != kindZero {
			return out, off, protoErr("unknown hash kind %d", kind)
		}
		l := stdLen(off, bs)
		if tag&flagLen != 0 {
			l = d.ivarint("hash length")
			if d.err == nil && (l < 1 || l > bs) {
				return out, off, protoErr("block length %d (block size %d)", l, bs)
			}
		}
		if d.err != nil {
			return out, off, d.err
		}
		if off > math.MaxInt64-l {
			return out, off, protoErr("block offset overflows")
		}
		bh := blockdiff.BlockHash{Off: off, Len: int32(l), Zero: kind == kindZero}
		if kind == kindData {
			copy(bh.Sum[:], d.bytes(size, "hash"))
			if d.err != nil {
				return out, off, d.err
			}
		}
		if err := push(bh); err != nil {
			return out, off, err
		}
		off += l
	}
	if n == 0 {
		return out, off, protoErr("empty hash batch")
	}
	return out, off, nil
}
