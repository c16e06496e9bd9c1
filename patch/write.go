package patch

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/blockdiff"
)

// Compression chooses how the data of a patch is compressed. Each data
// record is compressed on its own, and stored raw when that does not
// save at least 1/32 of it (random or already compressed data).
type Compression uint8

const (
	// CompressDefault is zstd's default level: about 300 MB/s per core
	// on compressible data, and cheap on incompressible data.
	CompressDefault Compression = iota
	// CompressFastest is zstd's fastest level.
	CompressFastest
	// CompressBetter is zstd's better level: smaller, about half as fast.
	CompressBetter
	// CompressNone stores every data record raw.
	CompressNone
)

// WriteOptions tune Write. The zero value means the documented defaults;
// a nil *WriteOptions is the zero value.
type WriteOptions struct {
	// Compression is how data records are compressed. Default zstd's
	// default level.
	Compression Compression
	// RecordSize is the largest data record, in bytes: rounded down to a
	// multiple of the signature's block size, at least one block, at most
	// MaxRecordSize. Default DefaultRecordSize (1 MiB). Write holds about
	// three times this much memory.
	RecordSize int
	// Concurrency is the number of workers hashing the source
	// (blockdiff.Options.Concurrency). Default max(4, GOMAXPROCS).
	Concurrency int
	// NoMmap makes blockdiff read a file source with pread instead of
	// memory mappings.
	NoMmap bool
	// Created is the patch's creation time. Default: now.
	Created time.Time
}

// WriteStats is what Write did.
type WriteStats struct {
	// Header and Trailer are those written.
	Header  Header
	Trailer Trailer
	// Compared is the number of source bytes hashed and compared.
	Compared int64
	// Stored is the number of payload bytes of the data records, after
	// compression (Trailer.DataBytes before).
	Stored int64
	// Bytes is the size of the patch.
	Bytes int64
	// Elapsed is the time Write took.
	Elapsed time.Duration
}

// Write compares the source (srcSize bytes read through src) against the
// signature of the base, as blockdiff.CompareSignature would, and writes
// to w, as it goes, a patch that turns the base into the source: the
// source's blocks that differ from the base's (as data, or as zeros), a
// resize or truncate record when the sizes differ, and the identities of
// the base and of the result. sig must not have been read from; it must
// cover a whole disk (no range). The source is read twice at the blocks
// that differ (once to hash, once to copy, usually from the page cache),
// and a block whose second read has another hash fails the call with
// ErrSourceChanged: a live source does not make an inconsistent patch.
//
// Memory is bounded by the options, not by the disks or the patch:
// blockdiff's hashing workers, and about three data records. w sees one
// buffered stream; after an error, what was written is not a valid patch
// (it has no trailer). Write does not close w.
func Write(ctx context.Context, w io.Writer, src io.ReaderAt, srcSize int64, sig *blockdiff.SignatureReader, opts *WriteOptions) (WriteStats, error) {
	start := time.Now()
	var st WriteStats
	var o WriteOptions
	if opts != nil {
		o = *opts
	}
	if sig == nil || src == nil || w == nil {
		return st, badOptions("nil writer, source or signature")
	}
	sh := sig.Header()
	if err := fullRange(sh); err != nil {
		return st, err
	}
	if srcSize < 0 {
		return st, badOptions("source size %d", srcSize)
	}
	bs := sh.BlockSize
	rs := o.RecordSize
	if rs == 0 {
		rs = DefaultRecordSize
	}
	if rs < 0 || rs > MaxRecordSize {
		return st, badOptions("record size %d is not from 0 to %d", o.RecordSize, MaxRecordSize)
	}
	rs = max(bs, rs/bs*bs)
	var level zstd.EncoderLevel
	switch o.Compression {
	case CompressDefault:
		level = zstd.SpeedDefault
	case CompressFastest:
		level = zstd.SpeedFastest
	case CompressBetter:
		level = zstd.SpeedBetterCompression
	case CompressNone:
	default:
		return st, badOptions("compression %d", o.Compression)
	}
	created := o.Created
	if created.IsZero() {
		created = time.Now()
	}
	hdr := Header{
		Version: Version, Alg: sh.Alg, BlockSize: bs,
		BaseSize: sh.DiskSize, ResultSize: srcSize,
		RecordSize: rs, ZeroBlocks: zeroRecordBlocks,
		Key: sh.Key, BaseCreated: sh.Created, Created: time.Unix(0, created.UnixNano()),
	}
	g, err := hdr.check()
	if err != nil {
		return st, badOptions("patch header: %v", err)
	}
	pw := &patchWriter{
		g: g, rs: int64(rs), src: src, hasher: blockdiff.Hasher{Alg: sh.Alg, Key: sh.Key},
		cw: countWriter{w: w}, sums: xxhash.New(),
	}
	pw.bw = bufio.NewWriterSize(&pw.cw, 256<<10)
	if o.Compression != CompressNone {
		pw.enc, err = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false))
		if err != nil {
			return st, err
		}
		defer pw.enc.Close()
	}
	raw := hdr.marshal()
	pw.hsum = binary.LittleEndian.Uint64(raw[88:])
	st.Header = hdr
	if _, err := pw.bw.Write(raw); err != nil {
		return st, pw.werr("header", err)
	}
	if g.result > g.base {
		if err := pw.record(tagResize, encRaw, g.base, g.result-g.base, nil, nil); err != nil {
			return st, err
		}
	}

	baseD := newDigester(sh.Alg, bs, g.base)
	resD := newDigester(sh.Alg, bs, g.result)
	var nb int64 // base blocks read from the signature
	nextBase := func(want int64) (blockdiff.BlockHash, error) {
		bh, err := sig.Next()
		if err == io.EOF {
			return bh, fmt.Errorf("patch: reading signature: %w: it ends after %d of its %d blocks", blockdiff.ErrSignature, nb, g.nBase)
		}
		if err != nil {
			return bh, fmt.Errorf("patch: reading signature: %w", err)
		}
		if bh.Off != want {
			return bh, fmt.Errorf("patch: %w: signature block at %d, want %d", blockdiff.ErrHashMismatch, bh.Off, want)
		}
		nb++
		baseD.add(bh)
		return bh, nil
	}
	hopts := &blockdiff.Options{BlockSize: bs, Concurrency: o.Concurrency, NoMmap: o.NoMmap}
	err = blockdiff.HashBlocks(ctx, src, srcSize, pw.hasher, hopts, func(bh blockdiff.BlockHash) error {
		st.Compared += int64(bh.Len)
		resD.add(bh)
		i := bh.Off / g.bs
		if i < g.nBase {
			base, err := nextBase(bh.Off)
			if err != nil {
				return err
			}
			if base.Len == bh.Len && base.Zero == bh.Zero && (bh.Zero || base.Sum == bh.Sum) {
				return pw.flush(ctx) // equal: nothing to send
			}
			return pw.add(ctx, bh, &base)
		}
		return pw.add(ctx, bh, nil)
	})
	if err == nil {
		err = pw.flush(ctx)
	}
	for err == nil && nb < g.nBase {
		_, err = nextBase(nb * g.bs)
	}
	if err == nil {
		if _, nerr := sig.Next(); nerr != io.EOF {
			if nerr == nil {
				nerr = fmt.Errorf("%w: the signature has more than %d blocks", blockdiff.ErrSignature, g.nBase)
			}
			err = fmt.Errorf("patch: reading signature: %w", nerr)
		}
	}
	if err == nil && g.result < g.base {
		err = pw.record(tagTruncate, encRaw, g.result, g.base-g.result, nil, nil)
	}
	if err != nil {
		st.Bytes, st.Elapsed = pw.cw.n, time.Since(start)
		return st, err
	}
	tr := Trailer{Records: pw.nrec, DataBytes: pw.dataB, ZeroBytes: pw.zeroB, BaseDigest: baseD.sum(), ResultDigest: resD.sum()}
	t := make([]byte, 1, trailerLen)
	t[0] = tagTrailer
	le := binary.LittleEndian
	t = le.AppendUint64(t, uint64(tr.Records))
	t = le.AppendUint64(t, uint64(tr.DataBytes))
	t = le.AppendUint64(t, uint64(tr.ZeroBytes))
	t = append(t, tr.BaseDigest[:]...)
	t = append(t, tr.ResultDigest[:]...)
	t = le.AppendUint64(t, pw.sums.Sum64())
	t = le.AppendUint64(t, 0) // the checksum, set below
	sum := xxhash.NewWithSeed(pw.hsum)
	_, _ = sum.Write(t[:97])
	le.PutUint64(t[97:], sum.Sum64())
	if _, err := pw.bw.Write(t); err != nil {
		return st, pw.werr("trailer", err)
	}
	if err := pw.bw.Flush(); err != nil {
		return st, pw.werr("trailer", err)
	}
	st.Trailer, st.Stored, st.Bytes, st.Elapsed = tr, pw.stored, pw.cw.n, time.Since(start)
	return st, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// patchWriter writes records, merging adjacent differing blocks of one
// kind into a pending record.
type patchWriter struct {
	g      grid
	rs     int64
	src    io.ReaderAt
	hasher blockdiff.Hasher
	enc    *zstd.Encoder
	cw     countWriter
	bw     *bufio.Writer
	hsum   uint64
	sums   *xxhash.Digest
	nrec   int64
	dataB  int64
	zeroB  int64
	stored int64

	// the pending record
	kind     byte
	off, end int64
	base     []byte                // base hash entries
	want     []blockdiff.BlockHash // the source hashes of its blocks (data)
	buf      []byte                // source bytes
	comp     []byte                // compressed
	head     [recHeadLen]byte
}

func (pw *patchWriter) werr(what string, err error) error {
	return fmt.Errorf("patch: writing %s at byte %d: %w", what, pw.cw.n+int64(pw.bw.Buffered()), err)
}

// add appends a differing source block, with its base block's hash when
// there is a base block, to the pending record, first writing the
// pending record if the block cannot join it.
func (pw *patchWriter) add(ctx context.Context, bh blockdiff.BlockHash, base *blockdiff.BlockHash) error {
	kind := byte(tagData)
	if bh.Zero {
		kind = tagZero
	}
	if pw.kind != 0 {
		full := false
		if kind == tagData {
			full = pw.end-pw.off+int64(bh.Len) > pw.rs
		} else {
			full = (pw.end-pw.off)/pw.g.bs >= zeroRecordBlocks
		}
		if pw.kind != kind || pw.end != bh.Off || full {
			if err := pw.flush(ctx); err != nil {
				return err
			}
		}
	}
	if pw.kind == 0 {
		pw.kind, pw.off, pw.end = kind, bh.Off, bh.Off
		pw.base, pw.want = pw.base[:0], pw.want[:0]
	}
	pw.end += int64(bh.Len)
	if base != nil {
		if base.Zero {
			pw.base = append(pw.base, flagZero)
		} else {
			pw.base = append(pw.base, flagHashed)
			pw.base = append(pw.base, base.Sum[:pw.g.hashSize]...)
		}
	}
	if kind == tagData {
		pw.want = append(pw.want, bh)
	}
	return nil
}

// flush writes the pending record, if any.
func (pw *patchWriter) flush(ctx context.Context) error {
	if pw.kind == 0 {
		return nil
	}
	kind, off, n := pw.kind, pw.off, pw.end-pw.off
	pw.kind = 0
	if err := ctx.Err(); err != nil {
		return err
	}
	if kind == tagZero {
		pw.zeroB += n
		return pw.record(tagZero, encRaw, off, n, pw.base, nil)
	}
	if int64(cap(pw.buf)) < n {
		pw.buf = make([]byte, n, pw.rs)
	}
	buf := pw.buf[:n]
	if m, err := pw.src.ReadAt(buf, off); m < len(buf) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return &blockdiff.ReadError{Side: blockdiff.SourceSide, Off: off, Len: n, Err: err}
	}
	for _, bh := range pw.want {
		p := buf[bh.Off-off : bh.Off-off+int64(bh.Len)]
		if blockdiff.IsZero(p) || pw.hasher.Sum(p) != bh.Sum {
			return fmt.Errorf("%w: the block at offset %d (+%d) was read with another content than it was hashed with", ErrSourceChanged, bh.Off, bh.Len)
		}
	}
	pw.dataB += n
	enc, payload := byte(encRaw), buf
	if pw.enc != nil {
		pw.comp = pw.enc.EncodeAll(buf, pw.comp[:0])
		if int64(len(pw.comp)) <= n-n/32 {
			enc, payload = encZstd, pw.comp
		}
	}
	pw.stored += int64(len(payload))
	return pw.record(tagData, enc, off, n, pw.base, payload)
}

// record writes one record.
func (pw *patchWriter) record(tag, enc byte, off, n int64, base, payload []byte) error {
	h := pw.head[:]
	le := binary.LittleEndian
	h[0], h[1] = tag, enc
	le.PutUint64(h[2:], uint64(off))
	le.PutUint64(h[10:], uint64(n))
	le.PutUint32(h[18:], uint32(len(base)))
	le.PutUint32(h[22:], uint32(len(payload)))
	sum := xxhash.NewWithSeed(pw.hsum)
	_, _ = sum.Write(h)
	_, _ = sum.Write(base)
	_, _ = sum.Write(payload)
	var s [8]byte
	le.PutUint64(s[:], sum.Sum64())
	_, _ = pw.sums.Write(s[:])
	pw.nrec++
	for _, p := range [][]byte{h, base, payload, s[:]} {
		if _, err := pw.bw.Write(p); err != nil {
			return pw.werr(fmt.Sprintf("%v record at disk offset %d", Kind(tag), off), err)
		}
	}
	return nil
}
