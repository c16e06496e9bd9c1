package patch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/blockdiff"
)

// Kind says what a Record asks of a target.
type Kind uint8

const (
	// Resize grows the target to the result's size, before anything is
	// written: [Off, Off+Len) is the part it gains.
	Resize Kind = tagResize
	// Data writes Data over [Off, Off+Len).
	Data Kind = tagData
	// Zero clears [Off, Off+Len) so that it reads as zeros.
	Zero Kind = tagZero
	// Truncate cuts the target to the result's size, after everything is
	// written: [Off, Off+Len) is the part it loses.
	Truncate Kind = tagTruncate
)

func (k Kind) String() string {
	switch k {
	case Resize:
		return "resize"
	case Data:
		return "data"
	case Zero:
		return "zero"
	case Truncate:
		return "truncate"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Record is one record of a patch, checked whole.
type Record struct {
	Kind Kind
	// Off and Len are the range of the disk the record is about.
	Off, Len int64
	// Data holds the Len bytes of a Data record, decompressed; nil for
	// other kinds. It is valid until the next call of Next.
	Data []byte
	// base holds the base hash entries of the blocks a Data or Zero
	// record covers (see Version); valid until the next call of Next.
	base []byte
}

// End returns Off+Len.
func (r Record) End() int64 { return r.Off + r.Len }

// reader states: what may come next.
const (
	stFirst   = iota // the first record or the trailer
	stRecords        // a data or zero record, the truncate record, the trailer
	stAfterX         // the trailer
	stDone
)

// Reader reads a patch as a stream of records, checking each one whole
// before returning it, and the trailer at the end. It holds one record
// at a time. It is not safe for concurrent use.
type Reader struct {
	r     io.Reader
	pos   int64 // bytes read
	hdr   Header
	g     grid
	hsum  uint64
	raw   []byte // header bytes
	dec   *zstd.Decoder
	buf   []byte // the record as stored
	data  []byte // decompressed payload
	state int
	nrec  int64
	end   int64 // end of the last data or zero record
	need  int64 // the first offset that must still be covered
	dataB int64
	zeroB int64
	sums  *xxhash.Digest
	tr    Trailer
	err   error // sticky; io.EOF after a valid trailer
}

var errClosed = errors.New("patch: Reader is closed")

// NewReader reads and checks the header of a patch. A header that is not
// a patch's, of another version, or damaged, is refused with a
// *FormatError (wrapping ErrCorrupt). Records are read by Next.
func NewReader(r io.Reader) (*Reader, error) {
	pr := &Reader{r: r, raw: make([]byte, headerLen)}
	b := pr.raw
	herr := func(format string, args ...any) error {
		return &FormatError{Part: "header", Msg: fmt.Sprintf(format, args...)}
	}
	// Magic and version first, so that another version is reported as
	// such, not as a damaged header.
	if err := pr.read(b[:10], "header", "header's magic and version"); err != nil {
		return nil, err
	}
	if string(b[:8]) != magic {
		return nil, herr("not a patch: magic %q, want %q", b[:8], magic)
	}
	le := binary.LittleEndian
	if v := le.Uint16(b[8:]); v != Version {
		return nil, herr("unsupported format version %d (this package reads version %d)", v, Version)
	}
	if err := pr.read(b[10:], "header", "rest of the header"); err != nil {
		return nil, err
	}
	if got, want := xxhash.Sum64(b[:88]), le.Uint64(b[88:]); got != want {
		return nil, herr("checksum mismatch (computed %#016x, stored %#016x)", got, want)
	}
	alg := blockdiff.HashAlgorithm(b[10])
	if alg.Size() == 0 {
		return nil, herr("unknown hash algorithm %d", b[10])
	}
	if int(b[11]) != alg.Size() {
		return nil, herr("hash size %d, but %v hashes are %d bytes", b[11], alg, alg.Size())
	}
	base, result := le.Uint64(b[16:]), le.Uint64(b[24:])
	if base > math.MaxInt64 || result > math.MaxInt64 {
		return nil, herr("size out of range (base %d, result %d)", base, result)
	}
	pr.hdr = Header{
		Version:     Version,
		Alg:         alg,
		BlockSize:   int(le.Uint32(b[12:])),
		BaseSize:    int64(base),
		ResultSize:  int64(result),
		RecordSize:  int(le.Uint32(b[32:])),
		ZeroBlocks:  int(le.Uint32(b[36:])),
		BaseCreated: fromUnixNano(le.Uint64(b[72:])),
		Created:     fromUnixNano(le.Uint64(b[80:])),
	}
	copy(pr.hdr.Key[:], b[40:72])
	g, err := pr.hdr.check()
	if err != nil {
		return nil, herr("%v", err)
	}
	pr.g, pr.hsum = g, le.Uint64(b[88:])
	pr.need = min(g.common*g.bs, g.result)
	pr.sums = xxhash.New()
	return pr, nil
}

// ReadHeader reads and checks the header of a patch, and nothing more.
func ReadHeader(r io.Reader) (Header, error) {
	pr, err := NewReader(r)
	if err != nil {
		return Header{}, err
	}
	return pr.hdr, nil
}

// Header returns the patch's header.
func (pr *Reader) Header() Header { return pr.hdr }

// Trailer returns the patch's trailer, once Next has returned io.EOF; ok
// is false before.
func (pr *Reader) Trailer() (t Trailer, ok bool) { return pr.tr, pr.err == io.EOF }

// Next returns the next record, checked whole: its checksum, its place,
// its alignment and bounds, its base hashes and its payload. It returns
// io.EOF only after the trailer has been read, checked against the
// records and found to be the end of the stream. A damaged patch is
// reported as a *FormatError that wraps ErrCorrupt and says where; an
// error of the underlying reader is returned wrapped, without ErrCorrupt.
// Errors are sticky.
func (pr *Reader) Next() (Record, error) {
	if pr.err != nil {
		return Record{}, pr.err
	}
	rec, err := pr.next()
	if err != nil {
		pr.fail(err)
		return Record{}, err
	}
	return rec, nil
}

// Close releases the decompressor; Next then fails. It does not close
// the underlying reader. The decompressor is also released when Next
// returns io.EOF or an error.
func (pr *Reader) Close() error {
	if pr.err == nil {
		pr.fail(errClosed)
	}
	return nil
}

func (pr *Reader) fail(err error) {
	pr.err = err
	if pr.dec != nil {
		pr.dec.Close()
		pr.dec = nil
	}
	pr.buf, pr.data = nil, nil
}

// read fills p; a short stream is a truncated patch.
func (pr *Reader) read(p []byte, part, what string) error {
	n, err := io.ReadFull(pr.r, p)
	pr.pos += int64(n)
	if err == nil {
		return nil
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return &FormatError{Part: part, Record: pr.nrec, Pos: pr.pos - int64(n),
			Msg: fmt.Sprintf("truncated: the stream ends %d bytes into the %s (%d bytes)", n, what, len(p))}
	}
	return fmt.Errorf("patch: reading at byte %d: %w", pr.pos, err)
}

// readGrow reads n bytes into pr.buf after its first keep bytes, in
// pieces, so that a length read from a damaged or cut stream costs no
// more memory than the bytes that really arrive.
func (pr *Reader) readGrow(keep, n int, what string) error {
	want := keep + n
	pr.buf = pr.buf[:keep]
	for len(pr.buf) < want {
		step := min(want-len(pr.buf), max(64<<10, min(len(pr.buf), 1<<20)))
		if cap(pr.buf) < len(pr.buf)+step {
			nb := make([]byte, len(pr.buf), max(len(pr.buf)+step, min(2*cap(pr.buf), want)))
			copy(nb, pr.buf)
			pr.buf = nb
		}
		got, err := io.ReadFull(pr.r, pr.buf[len(pr.buf):len(pr.buf)+step])
		pr.pos += int64(got)
		pr.buf = pr.buf[:len(pr.buf)+got]
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return &FormatError{Part: "record", Record: pr.nrec, Pos: pr.pos,
				Msg: fmt.Sprintf("truncated: the stream ends %d bytes into the %s (%d bytes)", len(pr.buf)-keep, what, n)}
		}
		if err != nil {
			return fmt.Errorf("patch: reading at byte %d: %w", pr.pos, err)
		}
	}
	return nil
}

func (pr *Reader) next() (Record, error) {
	pos := pr.pos
	rerr := func(cause error, format string, args ...any) error {
		return &FormatError{Part: "record", Record: pr.nrec, Pos: pos, Msg: fmt.Sprintf(format, args...), Err: cause}
	}
	var tag [1]byte
	if n, err := io.ReadFull(pr.r, tag[:]); err == io.EOF {
		return Record{}, rerr(nil, "truncated: the stream ends where a record or the trailer should start")
	} else if err != nil {
		return Record{}, fmt.Errorf("patch: reading at byte %d: %w", pr.pos, err)
	} else {
		pr.pos += int64(n)
	}
	switch tag[0] {
	case tagTrailer:
		return Record{}, pr.readTrailer(pos)
	case tagResize, tagData, tagZero, tagTruncate:
	default:
		return Record{}, rerr(nil, "unknown record tag %#02x", tag[0])
	}
	if cap(pr.buf) < recHeadLen {
		pr.buf = make([]byte, recHeadLen, 4<<10)
	}
	head := pr.buf[:recHeadLen]
	head[0] = tag[0]
	if err := pr.read(head[1:], "record", "record's head"); err != nil {
		return Record{}, err
	}
	le := binary.LittleEndian
	enc := head[1]
	uoff, ulen := le.Uint64(head[2:]), le.Uint64(head[10:])
	hl, pl := int64(le.Uint32(head[18:])), int64(le.Uint32(head[22:]))
	g := &pr.g
	kind := Kind(tag[0])
	if uoff > math.MaxInt64 || ulen > math.MaxInt64-uoff {
		return Record{}, rerr(nil, "%v range [%d,+%d) out of range", kind, uoff, ulen)
	}
	off, n := int64(uoff), int64(ulen)
	end := off + n
	var blocks, baseBlocks int64
	switch kind {
	case Resize:
		switch {
		case pr.state != stFirst || g.result <= g.base:
			return Record{}, rerr(nil, "resize record out of place (base %d bytes, result %d)", g.base, g.result)
		case off != g.base || end != g.result:
			return Record{}, rerr(nil, "resize record [%d,+%d), want [%d,+%d)", off, n, g.base, g.result-g.base)
		case enc != encRaw || hl != 0 || pl != 0:
			return Record{}, rerr(nil, "resize record with encoding %d, %d bytes of hashes and %d of payload", enc, hl, pl)
		}
	case Truncate:
		switch {
		case pr.state > stRecords || g.result >= g.base:
			return Record{}, rerr(nil, "truncate record out of place (base %d bytes, result %d)", g.base, g.result)
		case off != g.result || end != g.base:
			return Record{}, rerr(nil, "truncate record [%d,+%d), want [%d,+%d)", off, n, g.result, g.base-g.result)
		case enc != encRaw || hl != 0 || pl != 0:
			return Record{}, rerr(nil, "truncate record with encoding %d, %d bytes of hashes and %d of payload", enc, hl, pl)
		case pr.need < g.result:
			return Record{}, rerr(nil, "blocks from offset %d to the result's end %d are not covered", pr.need, g.result)
		}
	default:
		switch {
		case pr.state == stFirst && g.result > g.base:
			return Record{}, rerr(nil, "%v record where the resize record should be", kind)
		case pr.state > stRecords:
			return Record{}, rerr(nil, "%v record after the truncate record", kind)
		case n == 0 || off%g.bs != 0 || end > g.result || (end%g.bs != 0 && end != g.result):
			return Record{}, rerr(nil, "%v range [%d,+%d) is not whole blocks of %d within the result's %d bytes", kind, off, n, g.bs, g.result)
		case off < pr.end:
			return Record{}, rerr(nil, "%v range [%d,+%d) starts before the end %d of the previous record", kind, off, n, pr.end)
		case off > pr.need && pr.need < g.result:
			return Record{}, rerr(nil, "blocks from offset %d to %d are not covered", pr.need, off)
		}
		blocks = blocksOf(n, g.bs)
		first := off / g.bs
		baseBlocks = max(0, min(first+blocks, g.nBase)-first)
		if lo, hi := g.entryBytes(baseBlocks); hl < lo || hl > hi {
			return Record{}, rerr(nil, "%d bytes of base hashes for %d base blocks (want %d to %d)", hl, baseBlocks, lo, hi)
		}
		if kind == Data {
			if n > int64(pr.hdr.RecordSize) {
				return Record{}, rerr(nil, "data record of %d bytes, over the largest %d", n, pr.hdr.RecordSize)
			}
			switch enc {
			case encRaw:
				if pl != n {
					return Record{}, rerr(nil, "raw payload of %d bytes for %d bytes of data", pl, n)
				}
			case encZstd:
				if pl < 1 || pl >= n {
					return Record{}, rerr(nil, "compressed payload of %d bytes for %d bytes of data", pl, n)
				}
			default:
				return Record{}, rerr(nil, "unknown payload encoding %d", enc)
			}
		} else {
			if blocks > int64(pr.hdr.ZeroBlocks) {
				return Record{}, rerr(nil, "zero record of %d blocks, over the largest %d", blocks, pr.hdr.ZeroBlocks)
			}
			if enc != encRaw || pl != 0 {
				return Record{}, rerr(nil, "zero record with encoding %d and %d bytes of payload", enc, pl)
			}
		}
	}
	if err := pr.readGrow(recHeadLen, int(hl+pl)+8, "record's body"); err != nil {
		return Record{}, err
	}
	body := pr.buf[:recHeadLen+hl+pl]
	sum := xxhash.NewWithSeed(pr.hsum)
	_, _ = sum.Write(body)
	stored := pr.buf[len(body):]
	if got, want := sum.Sum64(), le.Uint64(stored); got != want {
		return Record{}, rerr(nil, "checksum mismatch (computed %#016x, stored %#016x)", got, want)
	}
	rec := Record{Kind: kind, Off: off, Len: n}
	if kind == Data || kind == Zero {
		ent := body[recHeadLen : recHeadLen+hl]
		p := int64(0)
		for i := int64(0); i < baseBlocks; i++ {
			if p >= hl {
				return Record{}, rerr(nil, "base hashes end after %d of %d blocks", i, baseBlocks)
			}
			switch ent[p] {
			case flagZero:
				p++
			case flagHashed:
				p += 1 + int64(g.hashSize)
			default:
				return Record{}, rerr(nil, "base block %d has unknown flag %d", off/g.bs+i, ent[p])
			}
		}
		if p != hl {
			return Record{}, rerr(nil, "base hashes take %d bytes, the record holds %d", p, hl)
		}
		rec.base = ent
	}
	if kind == Data {
		payload := body[recHeadLen+hl:]
		if enc == encRaw {
			rec.Data = payload
		} else {
			if pr.dec == nil {
				dec, err := zstd.NewReader(nil,
					zstd.WithDecoderConcurrency(1),
					zstd.WithDecodeAllCapLimit(true),
					zstd.WithDecoderMaxMemory(64<<20),
					zstd.WithDecoderMaxWindow(32<<20))
				if err != nil {
					return Record{}, err
				}
				pr.dec = dec
			}
			if cap(pr.data) < int(n) {
				pr.data = make([]byte, 0, n)
			}
			d, err := pr.dec.DecodeAll(payload, pr.data[:0:n])
			if err != nil {
				return Record{}, rerr(err, "decompression failed")
			}
			if int64(len(d)) != n {
				return Record{}, rerr(nil, "payload decompresses to %d bytes, want %d", len(d), n)
			}
			rec.Data = d
		}
	}
	_, _ = pr.sums.Write(stored)
	pr.nrec++
	switch kind {
	case Resize:
		pr.state = stRecords
	case Truncate:
		pr.state = stAfterX
	case Data, Zero:
		pr.state = stRecords
		pr.end = end
		if off <= pr.need && end > pr.need {
			pr.need = end
		}
		if kind == Data {
			pr.dataB += n
		} else {
			pr.zeroB += n
		}
	}
	return rec, nil
}

// readTrailer reads and checks the trailer and the end of the stream.
func (pr *Reader) readTrailer(pos int64) error {
	terr := func(format string, args ...any) error {
		return &FormatError{Part: "trailer", Record: pr.nrec, Pos: pos, Msg: fmt.Sprintf(format, args...)}
	}
	g := &pr.g
	switch {
	case pr.state == stFirst && g.result > g.base:
		return terr("trailer where the resize record should be")
	case pr.need < g.result:
		return terr("blocks from offset %d to the result's end %d are not covered", pr.need, g.result)
	case g.result < g.base && pr.state != stAfterX:
		return terr("trailer where the truncate record should be")
	}
	var t [trailerLen]byte
	t[0] = tagTrailer
	if err := pr.read(t[1:], "trailer", "trailer"); err != nil {
		return err
	}
	le := binary.LittleEndian
	sum := xxhash.NewWithSeed(pr.hsum)
	_, _ = sum.Write(t[:97])
	if got, stored := sum.Sum64(), le.Uint64(t[97:]); got != stored {
		return terr("checksum mismatch (computed %#016x, stored %#016x)", got, stored)
	}
	if n := le.Uint64(t[1:]); n != uint64(pr.nrec) {
		return terr("counts %d records, %d were read", n, pr.nrec)
	}
	if n := le.Uint64(t[9:]); n != uint64(pr.dataB) {
		return terr("counts %d bytes of data, the records hold %d", n, pr.dataB)
	}
	if n := le.Uint64(t[17:]); n != uint64(pr.zeroB) {
		return terr("counts %d bytes of zeros, the records hold %d", n, pr.zeroB)
	}
	if got, stored := pr.sums.Sum64(), le.Uint64(t[89:]); got != stored {
		return terr("sum of the record checksums is %#016x, the trailer says %#016x", got, stored)
	}
	var extra [1]byte
	switch n, err := io.ReadFull(pr.r, extra[:]); {
	case n > 0:
		return terr("extra data after the trailer, at byte %d", pr.pos)
	case err != io.EOF:
		return fmt.Errorf("patch: reading at byte %d: %w", pr.pos, err)
	}
	pr.tr = Trailer{Records: pr.nrec, DataBytes: pr.dataB, ZeroBytes: pr.zeroB}
	copy(pr.tr.BaseDigest[:], t[25:57])
	copy(pr.tr.ResultDigest[:], t[57:89])
	pr.state = stDone
	return io.EOF
}
