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
)

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
