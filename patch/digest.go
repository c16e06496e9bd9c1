package patch

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"

	"github.com/zeebo/blake3"

	"github.com/deltasync/deltasync/blockdiff"
)

// Digest names the content of a disk, as its block hashes see it: the
// BLAKE3-256 (unkeyed) of
//
//	"deltasync block digest v1\x00", the algorithm (1 byte), the block
//	size (4 bytes) and the disk size (8 bytes, little-endian), then, for
//	each block in order, one byte 0 and its hash (the algorithm's size),
//	or one byte 1 for a block of zeros.
//
// Two disks hashed with one algorithm, key and block size have one Digest
// exactly when their block hashes are equal, so it is as strong as those
// hashes (see blockdiff on collision odds). The Digest of a signature is
// that of the disk it was made from (SignatureDigest).
type Digest [32]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

const digestPrefix = "deltasync block digest v1\x00"

// digester computes a Digest as block hashes come, in order.
type digester struct {
	h   *blake3.Hasher
	hs  int
	n   int64 // blocks added
	buf []byte
}

func newDigester(alg blockdiff.HashAlgorithm, bs int, size int64) *digester {
	d := &digester{h: blake3.New(), hs: alg.Size(), buf: make([]byte, 0, 32<<10)}
	d.buf = append(d.buf, digestPrefix...)
	d.buf = append(d.buf, uint8(alg))
	d.buf = binary.LittleEndian.AppendUint32(d.buf, uint32(bs))
	d.buf = binary.LittleEndian.AppendUint64(d.buf, uint64(size))
	return d
}

func (d *digester) spill() {
	if len(d.buf) > cap(d.buf)-64 {
		_, _ = d.h.Write(d.buf)
		d.buf = d.buf[:0]
	}
}

// add adds the hash of the next block.
func (d *digester) add(bh blockdiff.BlockHash) {
	if bh.Zero {
		d.buf = append(d.buf, flagZero)
	} else {
		d.buf = append(d.buf, flagHashed)
		d.buf = append(d.buf, bh.Sum[:d.hs]...)
	}
	d.n++
	d.spill()
}

// addEntry adds the next block as a base hash entry of a record, which is
// encoded as the digest encodes a block.
func (d *digester) addEntry(e []byte) {
	d.buf = append(d.buf, e...)
	d.n++
	d.spill()
}

func (d *digester) sum() Digest {
	_, _ = d.h.Write(d.buf)
	d.buf = d.buf[:0]
	var s Digest
	d.h.Sum(s[:0])
	return s
}

// SignatureDigest reads a whole signature, checking it, and returns its
// header and the Digest of its block hashes: the base digest of the
// patches made from it. A damaged signature is refused as
// blockdiff.NewSignatureReader and Next refuse it (blockdiff.ErrSignature).
func SignatureDigest(r io.Reader) (blockdiff.SignatureHeader, Digest, error) {
	sig, err := blockdiff.NewSignatureReader(r)
	if err != nil {
		return blockdiff.SignatureHeader{}, Digest{}, err
	}
	defer sig.Close()
	h := sig.Header()
	if err := fullRange(h); err != nil {
		return h, Digest{}, err
	}
	d := newDigester(h.Alg, h.BlockSize, h.DiskSize)
	for {
		bh, err := sig.Next()
		if errors.Is(err, io.EOF) {
			return h, d.sum(), nil
		}
		if err != nil {
			return h, Digest{}, err
		}
		d.add(bh)
	}
}

// fullRange refuses a signature of a range of a disk: a patch describes
// whole disks.
func fullRange(h blockdiff.SignatureHeader) error {
	if h.Offset != 0 || (h.Length != 0 && h.Length < h.DiskSize) {
		return badOptions("the signature covers [%d,+%d) of a disk of %d bytes; patches are made from signatures of whole disks", h.Offset, h.Length, h.DiskSize)
	}
	return nil
}
