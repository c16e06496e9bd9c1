package blockdiff

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/zeebo/blake3"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/internal/xxh3multi"
)

// HashAlgorithm names the keyed block hash of hash mode and signatures.
type HashAlgorithm uint8

const (
	// XXH3 is XXH3-128 seeded with the first 8 bytes of the hash key:
	// 16 bytes per block, the fastest (docs/bench/figures.md). Not
	// cryptographic.
	XXH3 HashAlgorithm = 1
	// BLAKE3 is BLAKE3 in keyed mode (a MAC) with the 32-byte hash key:
	// 32 bytes per block, a fifth of XXH3's speed. Cryptographic.
	BLAKE3 HashAlgorithm = 2
)

func (a HashAlgorithm) String() string {
	switch a {
	case XXH3:
		return "xxh3-128"
	case BLAKE3:
		return "blake3-keyed"
	}
	return fmt.Sprintf("HashAlgorithm(%d)", uint8(a))
}

// Size returns the number of bytes of one block hash, or 0 for an unknown
// algorithm.
func (a HashAlgorithm) Size() int {
	switch a {
	case XXH3:
		return 16
	case BLAKE3:
		return 32
	}
	return 0
}

// Key is a hash key. Use NewKey for a fresh random one per run.
type Key [32]byte

// NewKey returns a random hash key from the operating system's generator.
func NewKey() (Key, error) {
	var k Key
	_, err := rand.Read(k[:])
	return k, err
}

// Hasher hashes blocks with one algorithm and key. The zero value is not
// usable; a Hasher is a plain value, safe to copy and to use concurrently.
type Hasher struct {
	Alg HashAlgorithm
	Key Key
}

// Sum is a block hash; only the first Alg.Size() bytes are used.
type Sum [32]byte

func (h Hasher) check() error {
	if h.Alg.Size() == 0 {
		return fmt.Errorf("%w: unknown hash algorithm %d", ErrBadOptions, h.Alg)
	}
	return nil
}

// hashState is a per-goroutine hashing state.
type hashState struct {
	h  Hasher
	x3 *xxh3multi.Hasher
	b3 *blake3.Hasher
}

func (h Hasher) state() *hashState {
	st := &hashState{h: h}
	switch h.Alg {
	case XXH3:
		st.x3 = xxh3multi.New(binary.LittleEndian.Uint64(h.Key[:8]))
	case BLAKE3:
		b, err := blake3.NewKeyed(h.Key[:])
		if err != nil {
			panic(err) // only for a key of the wrong length, impossible here
		}
		st.b3 = b
	}
	return st
}

func (st *hashState) sum(p []byte) (s Sum) {
	switch st.h.Alg {
	case XXH3:
		v := st.x3.Sum(p)
		copy(s[:], v[:])
	case BLAKE3:
		st.b3.Reset()
		_, _ = st.b3.Write(p)
		st.b3.Sum(s[:0])
	}
	return s
}

// grouped says whether sum4 hashes four blocks faster than sum does one
// after the other: XXH3 on a CPU with AVX-512.
func (st *hashState) grouped() bool { return st.x3 != nil && xxh3multi.Fast() }

// sum4 sets each *out[i] to sum(b[i]), the four XXH3 hashes computed at
// once (four streams from memory instead of one; see internal/xxh3multi).
// Only for a grouped state.
func (st *hashState) sum4(b *[4][]byte, out [4]*Sum) {
	v := st.x3.Sum4(b)
	for i := range v {
		*out[i] = Sum{}
		copy(out[i][:], v[i][:])
	}
}

// Sum returns the hash of one block. HashBlocks is the fast way to hash a
// disk; Sum is for tests and single blocks.
func (h Hasher) Sum(p []byte) Sum { return h.state().sum(p) }

// BlockHash is the hash of one block of a disk. A block of zeros is marked
// Zero and carries no hash: zeros are recognised exactly, not by hash.
type BlockHash struct {
	Off  int64
	Len  int32
	Zero bool
	Sum  Sum
}

// HashIterator is a stream of block hashes in ascending offset order, such
// as a SignatureReader or a remote agent's answer. Next returns io.EOF
// after the last one.
type HashIterator interface {
	Next() (BlockHash, error)
}

// HashBlocks hashes every block of r in the range of opts (Offset, Length,
// Hints, BlockSize; RefineSize is ignored) with h and calls fn with each
// block's hash in ascending order, from the calling goroutine. Blocks are
// read and hashed in parallel as Compare reads them. This is what a remote
// side runs on its own disk.
func HashBlocks(ctx context.Context, r io.ReaderAt, size int64, h Hasher, opts *Options, fn func(BlockHash) error) error {
	c, err := opts.config()
	if err != nil {
		return err
	}
	return hashBlocks(ctx, r, size, h, &c, fn)
}

func hashBlocks(ctx context.Context, r io.ReaderAt, size int64, h Hasher, cp *config, fn func(BlockHash) error) error {
	if err := h.check(); err != nil {
		return err
	}
	c := *cp
	d, err := newDisk(SourceSide, r, size, &c)
	if err != nil {
		return err
	}
	lo, hi := c.bounds(size)
	defer d.close()
	var prefetch func(context.Context, *chunk)
	if d.mm != nil || d.direct != nil {
		prefetch = func(ctx context.Context, ch *chunk) {
			ch.direct[0], ch.ahead[0] = d.plan(ctx, ch.off, min(ch.end, size))
		}
	}
	states := make(chan *hashState, c.workers)
	// The chunks' hash slices are reused: a fresh one per chunk costs a
	// first touch of new memory each time the collector has let go of
	// the last ones. At most inflight+workers are out at once.
	slices := make(chan []BlockHash, c.inflight+c.workers)
	return runOrdered(ctx, &c, newPlanner(&c, lo, hi), prefetch,
		func(ctx context.Context, ch chunk) ([]BlockHash, error) {
			var st *hashState
			select {
			case st = <-states:
			default:
				st = h.state()
			}
			defer func() { states <- st }()
			var hs []BlockHash
			select {
			case hs = <-slices:
			default:
			}
			return hashChunk(ctx, &c, d, st, ch, hs[:0])
		},
		func(ch chunk, hs []BlockHash) error {
			if c.Progress != nil {
				c.Progress(ch.end - ch.off)
			}
			for _, bh := range hs {
				if err := fn(bh); err != nil {
					return err
				}
			}
			select {
			case slices <- hs:
			default:
			}
			return nil
		})
}

// hashChunk hashes the blocks of ch, appending them to hs (empty, and
// reused when it has room).
func hashChunk(ctx context.Context, c *config, d *sideReader, st *hashState, ch chunk, hs []BlockHash) (_ []BlockHash, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	end := min(ch.end, d.size)
	if ch.off >= end {
		return nil, nil
	}
	if c.DropBehind {
		defer d.dropCache(ch.off, end, ch.direct[0])
	}
	alloc, all, v, err := d.chunkView(ctx, ch.off, end, ch.direct[0], ch.ahead[0])
	defer v.release()
	if err != nil {
		return nil, err
	}
	ac := allocCursor{rs: alloc, all: all}
	w := newFaultWindow(d.side, v)
	bs := int64(c.bs)
	if n := int((end-ch.off+bs-1)/bs + 1); cap(hs) < n {
		hs = make([]BlockHash, 0, n)
	}
	grouped := st.grouped()
	withFaults(func() {
		defer catchFault(&err, &w)
		// held are the indexes in hs of blocks waiting to be hashed
		// four at a time; those left at the chunk's end are hashed
		// one by one.
		var held [4]int
		nheld := 0
		data := func(i int) []byte {
			h := hs[i]
			return v.b[h.Off-ch.off : h.Off-ch.off+int64(h.Len)]
		}
		for b := ch.off; b < end; {
			e := min((b/bs+1)*bs, end)
			if b < c.splitAt && e > c.splitAt {
				e = c.splitAt
			}
			bh := BlockHash{Off: b, Len: int32(e - b)}
			if !ac.any(b, e) {
				bh.Zero = true
			} else if p := v.b[b-ch.off : e-ch.off]; isZero(p) {
				bh.Zero = true
			} else if !grouped {
				bh.Sum = st.sum(p)
			} else {
				held[nheld] = len(hs)
				nheld++
			}
			hs = append(hs, bh)
			if nheld == 4 {
				st.sum4(&[4][]byte{data(held[0]), data(held[1]), data(held[2]), data(held[3])},
					[4]*Sum{&hs[held[0]].Sum, &hs[held[1]].Sum, &hs[held[2]].Sum, &hs[held[3]].Sum})
				nheld = 0
			}
			b = e
		}
		for _, i := range held[:nheld] {
			hs[i].Sum = st.sum(data(i))
		}
	})
	return hs, err
}

var errStraddle = errors.New("target block straddles the source's end")

// CompareHashes compares the source, hashed here with h, against a stream
// of the target's block hashes made with the same Hasher and the same
// BlockSize, Offset, Length and Hints (for example a SignatureReader, or a
// remote agent running HashBlocks on its disk of size dstSize). It reports
// extents as Compare does. A block whose hashes match is taken as equal:
// see the package documentation for the odds. RefineSize is ignored.
func CompareHashes(ctx context.Context, src io.ReaderAt, srcSize int64, h Hasher, dst HashIterator, dstSize int64, opts *Options, fn func(disk.Extent) error) (Stats, error) {
	start := time.Now()
	var st Stats
	c, err := opts.config()
	if err != nil {
		return st, err
	}
	co := &coalescer{emit: fn, max: c.MaxExtent}
	_, dhi := c.bounds(dstSize)
	// expect reads the next target hash, which must be for block [off,end).
	expect := func(off, end int64) (BlockHash, error) {
		bh, err := dst.Next()
		if err == io.EOF {
			return bh, fmt.Errorf("%w: target hashes end before block at %d", ErrHashMismatch, off)
		}
		if err != nil {
			return bh, err
		}
		if bh.Off == off && end == srcSize && off+int64(bh.Len) > end && off+int64(bh.Len) <= dstSize {
			// The target's block runs past the source's end: it cannot
			// be matched by hash; the caller reports the source part.
			return bh, errStraddle
		}
		if bh.Off != off || int64(bh.Len) != end-off {
			return bh, fmt.Errorf("%w: expected target block [%d,%d), got [%d,+%d)", ErrHashMismatch, off, end, bh.Off, bh.Len)
		}
		return bh, nil
	}
	consume := func(sh BlockHash) error {
		st.Compared += int64(sh.Len)
		off, end := sh.Off, sh.Off+int64(sh.Len)
		if off >= dstSize {
			k := disk.Zero
			if !sh.Zero {
				k = disk.Data
			}
			st.Differ += end - off
			return co.add(disk.Extent{Off: off, Len: end - off, Kind: k})
		}
		th, err := expect(off, end)
		if err == errStraddle {
			if th.Zero && sh.Zero {
				return nil
			}
			th.Zero = !sh.Zero // force a difference: no hash covers this part alone
		} else if err != nil {
			return err
		}
		if th.Zero == sh.Zero && (sh.Zero || th.Sum == sh.Sum) {
			return nil
		}
		k := disk.Data
		if sh.Zero {
			k = disk.Zero
		}
		st.Differ += end - off
		return co.add(disk.Extent{Off: off, Len: end - off, Kind: k})
	}
	var nread int64
	c.splitAt = dstSize // the source's blocks end where the target does
	err = hashBlocks(ctx, src, srcSize, h, &c, func(bh BlockHash) error {
		nread += int64(bh.Len)
		if err := consume(bh); err != nil {
			return err
		}
		if c.Reached != nil {
			c.Reached(co.reached(bh.Off + int64(bh.Len)))
		}
		return nil
	})
	if err == nil && dstSize > srcSize {
		// The target's own tail: its hashes are consumed and it is Excess.
		for {
			th, nerr := dst.Next()
			if nerr == io.EOF {
				break
			}
			if nerr != nil {
				err = nerr
				break
			}
			if th.Off < srcSize || th.Off+int64(th.Len) > dhi {
				err = fmt.Errorf("%w: unexpected target block at %d", ErrHashMismatch, th.Off)
				break
			}
			st.Compared += int64(th.Len)
		}
		if from := max(c.Offset, srcSize); err == nil && from < dhi {
			st.Differ += dhi - from
			err = co.add(disk.Extent{Off: from, Len: dhi - from, Kind: disk.Excess})
		}
	} else if err == nil {
		if th, nerr := dst.Next(); nerr != io.EOF {
			if nerr == nil {
				nerr = fmt.Errorf("%w: extra target block at %d", ErrHashMismatch, th.Off)
			}
			err = nerr
		}
	}
	if err == nil {
		err = co.flush()
	}
	st.Extents = co.n
	st.SourceRead = nread
	st.Elapsed = time.Since(start)
	return st, err
}
