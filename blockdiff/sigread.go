package blockdiff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"
)

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
