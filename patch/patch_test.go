package patch

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/disk/disktest"
	"github.com/deltasync/deltasync/transfer"
)

// signature returns a signature of base, with a fresh key.
func signature(t testing.TB, base []byte, alg blockdiff.HashAlgorithm, bs int) []byte {
	t.Helper()
	key, err := blockdiff.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var sig bytes.Buffer
	if _, err := blockdiff.WriteSignature(context.Background(), &sig, bytes.NewReader(base), int64(len(base)),
		blockdiff.Hasher{Alg: alg, Key: key}, &blockdiff.Options{BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	return sig.Bytes()
}

// diff makes a patch that turns base into src.
func diff(t testing.TB, base, src []byte, alg blockdiff.HashAlgorithm, bs int, o *WriteOptions) ([]byte, WriteStats) {
	t.Helper()
	return diffSig(t, signature(t, base, alg, bs), src, o)
}

func diffSig(t testing.TB, sig, src []byte, o *WriteOptions) ([]byte, WriteStats) {
	t.Helper()
	sr, err := blockdiff.NewSignatureReader(bytes.NewReader(sig))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	st, err := Write(context.Background(), &out, bytes.NewReader(src), int64(len(src)), sr, o)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes != int64(out.Len()) {
		t.Fatalf("WriteStats.Bytes %d, wrote %d", st.Bytes, out.Len())
	}
	return out.Bytes(), st
}

func apply(p []byte, dst disk.Target, o *ApplyOptions) (ApplyStats, error) {
	return Apply(context.Background(), bytes.NewReader(p), dst, o)
}

// fill fills b with random bytes, 8 at a time.
func fill(rng *rand.Rand, b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, rng.Uint64())
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// image returns n random bytes with some runs of zeros.
func image(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	fill(rng, b)
	for range rng.IntN(4) {
		if n == 0 {
			break
		}
		off := rng.IntN(n)
		clear(b[off:min(n, off+rng.IntN(n/4+1))])
	}
	return b
}

// mutate returns a copy of base resized to size with random changes:
// random data (whole blocks, parts of blocks, single bytes), zeroed
// ranges, and zeros over zeros.
func mutate(rng *rand.Rand, base []byte, size, bs int) []byte {
	src := make([]byte, size)
	copy(src, base)
	if size > len(base) {
		fill(rng, src[len(base):])
		if size-len(base) > 2*bs {
			off := len(base) + rng.IntN(size-len(base)-bs)
			clear(src[off : off+bs]) // a zero block in the grown part
		}
	}
	if size == 0 {
		return src
	}
	for range 1 + rng.IntN(12) {
		off := rng.IntN(size)
		var n int
		switch rng.IntN(4) {
		case 0:
			n = 1
		case 1:
			n = rng.IntN(bs) + 1
		default:
			n = rng.IntN(4*bs) + 1
		}
		end := min(size, off+n)
		if rng.IntN(3) == 0 {
			clear(src[off:end])
		} else {
			fill(rng, src[off:end])
		}
	}
	return src
}

func seeded(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

type sizeCase struct {
	name       string
	base, size int
	bs         int
}

var sizeCases = []sizeCase{
	{"equal", 256 << 10, 256 << 10, 4096},
	{"equal unaligned", 256<<10 + 1234, 256<<10 + 1234, 4096},
	{"equal odd", 100_001, 100_001, 512},
	{"grow", 128 << 10, 256 << 10, 4096},
	{"grow unaligned", 100_001, 200_003, 4096},
	{"grow within a block", 9000, 10000, 4096},
	{"grow from aligned", 64 << 10, 100_000, 4096},
	{"shrink", 256 << 10, 128 << 10, 4096},
	{"shrink unaligned", 200_003, 100_001, 4096},
	{"shrink within a block", 10000, 9000, 4096},
	{"shrink to aligned", 100_000, 64 << 10, 4096},
	{"empty base", 0, 50_000, 4096},
	{"empty source", 50_000, 0, 4096},
	{"both empty", 0, 0, 4096},
	{"big blocks", 1<<20 + 512, 1<<20 + 7, 64 << 10},
}

func TestRoundTrip(t *testing.T) {
	rng := seeded(t)
	for _, c := range sizeCases {
		for _, alg := range []blockdiff.HashAlgorithm{blockdiff.XXH3, blockdiff.BLAKE3} {
			t.Run(fmt.Sprintf("%s/%v", c.name, alg), func(t *testing.T) {
				for round := range 3 {
					base := image(rng, c.base)
					src := mutate(rng, base, c.size, c.bs)
					o := &WriteOptions{RecordSize: []int{0, c.bs, 3 * c.bs}[round], Compression: Compression(round % 4)}
					p, ws := diff(t, base, src, alg, c.bs, o)
					dst := disktest.NewMem(base)
					st, err := apply(p, dst, &ApplyOptions{Verify: round == 1})
					if err != nil {
						t.Fatalf("round %d: %v", round, err)
					}
					if !bytes.Equal(dst.Bytes(), src) {
						t.Fatalf("round %d: target differs from the source after apply (%d vs %d bytes)", round, dst.Size(), len(src))
					}
					if !st.BaseChecked || st.AlreadyApplied && !bytes.Equal(base, src) {
						t.Fatalf("round %d: stats %+v", round, st)
					}
					if st.Written != ws.Trailer.DataBytes || st.Zeroed != ws.Trailer.ZeroBytes {
						t.Fatalf("round %d: wrote %d, zeroed %d; the patch holds %d and %d", round, st.Written, st.Zeroed, ws.Trailer.DataBytes, ws.Trailer.ZeroBytes)
					}
					if dst.Flushes() == 0 && !st.AlreadyApplied {
						t.Fatalf("round %d: target not flushed", round)
					}
					// Again: the target is the result, and is left alone.
					spy := &spyDisk{d: dst, budget: -1}
					st, err = apply(p, spy, nil)
					if err != nil || !st.AlreadyApplied || spy.touched() {
						t.Fatalf("round %d: second apply: %v, %+v, touched %v", round, err, st, spy.touched())
					}
					// A target without capabilities takes it too.
					plain := disktest.NewMem(base)
					if len(src) == len(base) {
						if _, err := apply(p, plainDisk{plain}, nil); err != nil || !bytes.Equal(plain.Bytes(), src) {
							t.Fatalf("round %d: plain target: %v", round, err)
						}
					}
				}
			})
		}
	}
}

// TestDigests checks the digests a patch carries against those made
// independently: the signature's and the source's.
func TestDigests(t *testing.T) {
	rng := seeded(t)
	base := image(rng, 300_000)
	src := mutate(rng, base, 310_000, 4096)
	sig := signature(t, base, blockdiff.BLAKE3, 4096)
	p, ws := diffSig(t, sig, src, nil)
	sh, d, err := SignatureDigest(bytes.NewReader(sig))
	if err != nil {
		t.Fatal(err)
	}
	if d != ws.Trailer.BaseDigest {
		t.Fatalf("signature digest %s, the patch's base digest %s", d, ws.Trailer.BaseDigest)
	}
	// The source's signature with the same key has the result digest.
	var ss bytes.Buffer
	if _, err := blockdiff.WriteSignature(context.Background(), &ss, bytes.NewReader(src), int64(len(src)),
		blockdiff.Hasher{Alg: sh.Alg, Key: sh.Key}, &blockdiff.Options{BlockSize: 4096}); err != nil {
		t.Fatal(err)
	}
	if _, d, err = SignatureDigest(&ss); err != nil || d != ws.Trailer.ResultDigest {
		t.Fatalf("source digest %s (%v), the patch's result digest %s", d, err, ws.Trailer.ResultDigest)
	}
	h, err := ReadHeader(bytes.NewReader(p))
	if err != nil || h.Key != sh.Key || h.BaseSize != 300_000 || h.ResultSize != 310_000 || !h.BaseCreated.Equal(sh.Created) {
		t.Fatalf("header %+v, %v", h, err)
	}
}

// TestReader checks the records against the disks.
func TestReader(t *testing.T) {
	rng := seeded(t)
	for _, c := range sizeCases {
		base := image(rng, c.base)
		src := mutate(rng, base, c.size, c.bs)
		p, _ := diff(t, base, src, blockdiff.XXH3, c.bs, &WriteOptions{RecordSize: 2 * c.bs})
		rd, err := NewReader(bytes.NewReader(p))
		if err != nil {
			t.Fatal(err)
		}
		var kinds []Kind
		covered := make([]bool, len(src))
		for {
			rec, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			kinds = append(kinds, rec.Kind)
			switch rec.Kind {
			case Data:
				if !bytes.Equal(rec.Data, src[rec.Off:rec.End()]) || rec.Len > int64(2*c.bs) {
					t.Fatalf("%s: data record %d+%d does not hold the source", c.name, rec.Off, rec.Len)
				}
			case Zero:
				if !blockdiff.IsZero(src[rec.Off:rec.End()]) {
					t.Fatalf("%s: zero record %d+%d over data", c.name, rec.Off, rec.Len)
				}
			}
			if rec.Kind == Data || rec.Kind == Zero {
				for i := rec.Off; i < rec.End(); i++ {
					covered[i] = true
				}
			}
		}
		if _, ok := rd.Trailer(); !ok {
			t.Fatalf("%s: no trailer after EOF", c.name)
		}
		// Every byte that differs is covered.
		for i := range src {
			if (i >= len(base) || src[i] != base[i]) && !covered[i] {
				t.Fatalf("%s: byte %d differs but no record covers it", c.name, i)
			}
		}
		if n := len(kinds); c.size > c.base && (n == 0 || kinds[0] != Resize) || c.size < c.base && (n == 0 || kinds[n-1] != Truncate) {
			t.Fatalf("%s: record kinds %v", c.name, kinds)
		}
	}
}

// TestPatchSize: random data costs at most 2% more than itself in a
// patch, and compressible data much less.
func TestPatchSize(t *testing.T) {
	rng := seeded(t)
	const size, bs = 8 << 20, 16 << 10
	base := image(rng, size)
	for _, compressible := range []bool{false, true} {
		src := bytes.Clone(base)
		var changed int64
		for _, i := range rng.Perm(size / bs)[:40] {
			b := src[i*bs : (i+1)*bs]
			if compressible {
				for j := range b {
					b[j] = "the quick brown fox jumps over the lazy dog "[(j+i)%44]
				}
				b[rng.IntN(bs)] = byte(rng.Uint32())
			} else {
				fill(rng, b)
			}
			changed += bs
		}
		p, ws := diff(t, base, src, blockdiff.XXH3, bs, nil)
		ratio := float64(len(p)) / float64(changed)
		t.Logf("compressible %v: %d bytes changed, patch %d bytes (%.4fx), stored %d", compressible, changed, len(p), ratio, ws.Stored)
		if !compressible && float64(len(p)) > 1.02*float64(changed)+headerLen+trailerLen {
			t.Fatalf("patch of %d bytes for %d bytes of random changes", len(p), changed)
		}
		if compressible && ratio > 0.1 {
			t.Fatalf("patch of %d bytes for %d bytes of compressible changes", len(p), changed)
		}
		dst := disktest.NewMem(base)
		if _, err := apply(p, dst, nil); err != nil || !bytes.Equal(dst.Bytes(), src) {
			t.Fatalf("apply: %v", err)
		}
	}
}

// TestForeignBase: a patch is refused, with nothing written, by a target
// that is not its base.
func TestForeignBase(t *testing.T) {
	rng := seeded(t)
	const bs = 4096
	base := image(rng, 200_000)
	src := mutate(rng, base, 200_000, bs)
	p, _ := diff(t, base, src, blockdiff.XXH3, bs, nil)
	grown, _ := diff(t, base, mutate(rng, base, 300_000, bs), blockdiff.XXH3, bs, nil)

	// One byte changed in a block that the patch does not rewrite.
	rd, _ := NewReader(bytes.NewReader(p))
	touched := map[int64]bool{}
	for {
		rec, err := rd.Next()
		if err != nil {
			break
		}
		for b := rec.Off / bs; b*bs < rec.End(); b++ {
			touched[b] = true
		}
	}
	oneOff := bytes.Clone(base)
	for b := int64(0); ; b++ {
		if !touched[b] {
			oneOff[b*bs+7] ^= 1
			break
		}
	}
	for _, c := range []struct {
		name string
		p    []byte
		dst  []byte
	}{
		{"another disk", p, image(rng, len(base))},
		{"one byte", p, oneOff},
		{"longer", p, append(bytes.Clone(base), 1)},
		{"shorter", p, base[:len(base)-512]},
		{"zeros", p, make([]byte, len(base))},
		{"grown patch, another disk", grown, image(rng, len(base))},
	} {
		spy := &spyDisk{d: disktest.NewMem(c.dst), budget: -1}
		_, err := apply(c.p, spy, nil)
		if !errors.Is(err, ErrBaseMismatch) {
			t.Fatalf("%s: got %v, want ErrBaseMismatch", c.name, err)
		}
		if spy.touched() || !bytes.Equal(spy.d.Bytes(), c.dst) {
			t.Fatalf("%s: the target was written", c.name)
		}
	}

	// A block that the patch rewrites may hold anything: it is rewritten.
	var b int64
	for b = range touched {
		break
	}
	mixed := bytes.Clone(base)
	mixed[b*bs] ^= 0xff
	dst := disktest.NewMem(mixed)
	if _, err := apply(p, dst, nil); err != nil || !bytes.Equal(dst.Bytes(), src) {
		t.Fatalf("target differing only in a rewritten block: %v", err)
	}

	// NoBaseCheck does not read the target, and writes the patch.
	other := image(rng, len(base))
	spy := &spyDisk{d: disktest.NewMem(other), budget: -1}
	st, err := apply(p, spy, &ApplyOptions{NoBaseCheck: true})
	if err != nil || st.BaseChecked || spy.read.Load() != 0 {
		t.Fatalf("NoBaseCheck: %v, %+v, read %d", err, st, spy.read.Load())
	}
}

// TestDamagedPatch flips bytes of a patch and cuts it short: every one is
// refused by the reader, and by Apply before anything is written.
func TestDamagedPatch(t *testing.T) {
	rng := seeded(t)
	const bs = 512
	base := image(rng, 12<<10+100)
	src := mutate(rng, base, 14<<10+3, bs)
	src[5000] ^= 1 // at least one data record
	for i := 6000; i < 7000; i++ {
		src[i] = byte(i % 7) // and a compressed one
	}
	for i := 8192; i < 9216; i++ {
		base[i] |= 1
		src[i] = 0 // and a zero one
	}
	p, ws := diff(t, base, src, blockdiff.XXH3, bs, &WriteOptions{RecordSize: 4 * bs})
	t.Logf("patch of %d bytes, %d records", len(p), ws.Trailer.Records)
	if ws.Stored >= ws.Trailer.DataBytes || ws.Trailer.ZeroBytes == 0 || ws.Trailer.Records < 4 {
		t.Fatalf("the patch lacks a kind of record: %+v", ws)
	}
	readAll := func(b []byte) error {
		rd, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return err
		}
		for {
			if _, err := rd.Next(); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
		}
	}
	if err := readAll(p); err != nil {
		t.Fatal(err)
	}
	refused := func(what string, b []byte, viaApply bool) {
		t.Helper()
		var fe *FormatError
		if err := readAll(b); !errors.Is(err, ErrCorrupt) || !errors.As(err, &fe) {
			t.Fatalf("%s: reader: %v, want a *FormatError (ErrCorrupt)", what, err)
		}
		if !viaApply {
			return
		}
		for _, nbc := range []bool{false, true} {
			spy := &spyDisk{d: disktest.NewMem(base), budget: -1}
			_, err := apply(b, spy, &ApplyOptions{NoBaseCheck: nbc})
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: apply: %v, want ErrCorrupt", what, err)
			}
			if spy.touched() || !bytes.Equal(spy.d.Bytes(), base) {
				t.Fatalf("%s: the target was written", what)
			}
		}
	}
	for i := range p {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			if x != 0x01 && i%3 != 0 {
				continue
			}
			b := bytes.Clone(p)
			b[i] ^= x
			refused(fmt.Sprintf("byte %d ^ %#x", i, x), b, x == 0x80 && (i%37 == 0 || i < headerLen || i >= len(p)-trailerLen))
		}
	}
	for n := range p {
		refused(fmt.Sprintf("cut at %d", n), p[:n], n%31 == 0 || n > len(p)-trailerLen-20)
	}
	refused("one byte more", append(bytes.Clone(p), 0), true)
	refused("twice", append(bytes.Clone(p), p...), true)
}

// reseal recomputes the checksums of a patch, the way a writer would, so
// that a test can make a patch that is well formed but wrong.
func reseal(t *testing.T, p []byte, edit func(tag byte, body []byte)) []byte {
	t.Helper()
	p = bytes.Clone(p)
	le := binary.LittleEndian
	hs := le.Uint64(p[88:])
	sums := xxhash.New()
	pos := headerLen
	for p[pos] != tagTrailer {
		h, l := int(le.Uint32(p[pos+18:])), int(le.Uint32(p[pos+22:]))
		end := pos + recHeadLen + h + l
		edit(p[pos], p[pos:end])
		s := xxhash.NewWithSeed(hs)
		s.Write(p[pos:end])
		le.PutUint64(p[end:], s.Sum64())
		sums.Write(p[end : end+8])
		pos = end + 8
	}
	le.PutUint64(p[pos+89:], sums.Sum64())
	s := xxhash.NewWithSeed(hs)
	s.Write(p[pos : pos+97])
	le.PutUint64(p[pos+97:], s.Sum64())
	return p
}

// TestInconsistentPatch: a well-formed patch whose data does not make
// its result is refused before anything is written.
func TestInconsistentPatch(t *testing.T) {
	rng := seeded(t)
	base := image(rng, 100_000)
	src := mutate(rng, base, 100_000, 4096)
	src[1000] ^= 1
	p, _ := diff(t, base, src, blockdiff.XXH3, 4096, &WriteOptions{Compression: CompressNone})
	if _, err := apply(reseal(t, p, func(byte, []byte) {}), disktest.NewMem(base), nil); err != nil {
		t.Fatalf("resealed as it was: %v", err)
	}
	bad := reseal(t, p, func(tag byte, body []byte) {
		if tag == tagData {
			body[len(body)-1] ^= 1
		}
	})
	spy := &spyDisk{d: disktest.NewMem(base), budget: -1}
	if _, err := apply(bad, spy, nil); !errors.Is(err, ErrResultMismatch) || spy.touched() {
		t.Fatalf("got %v (touched %v), want ErrResultMismatch and nothing written", err, spy.touched())
	}
}

// TestInterruptedApply stops an apply after n bytes, at many n, and runs
// it again: the target ends identical to the source.
func TestInterruptedApply(t *testing.T) {
	rng := seeded(t)
	for _, c := range []sizeCase{
		{"equal", 200_000, 200_000, 4096},
		{"grow", 100_001, 230_000, 4096},
		{"shrink", 230_000, 100_001, 4096},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := image(rng, c.base)
			src := mutate(rng, base, c.size, c.bs)
			p, ws := diff(t, base, src, blockdiff.XXH3, c.bs, &WriteOptions{RecordSize: 2 * c.bs})
			total := ws.Trailer.DataBytes + ws.Trailer.ZeroBytes
			for n := int64(0); n < total; n += 1 + rng.Int64N(int64(c.bs)) {
				dst := disktest.NewMem(base)
				spy := &spyDisk{d: dst, budget: n, maxWrite: 3000, align: 1}
				if _, err := apply(p, spy, &ApplyOptions{WriteSize: 3000}); !errors.Is(err, errInjected) {
					t.Fatalf("interrupted at %d of %d: %v", n, total, err)
				}
				// Interrupted again, later, then run to the end.
				if n%3 == 0 {
					spy2 := &spyDisk{d: dst, budget: n + int64(c.bs), align: 1}
					if _, err := apply(p, spy2, nil); err != nil && !errors.Is(err, errInjected) {
						t.Fatalf("second run after %d: %v", n, err)
					}
				}
				st, err := apply(p, dst, nil)
				if err != nil {
					t.Fatalf("rerun after %d of %d: %v", n, total, err)
				}
				if !bytes.Equal(dst.Bytes(), src) {
					t.Fatalf("rerun after %d of %d: target differs from the source", n, total)
				}
				if !st.BaseChecked {
					t.Fatalf("rerun after %d: base not checked", n)
				}
			}
			// The cut (or the growth) fails: the data is written, the size
			// not; a rerun finishes.
			dst := disktest.NewMem(base)
			if _, err := apply(p, &spyDisk{d: dst, budget: -1, failResize: true}, nil); c.base != c.size && !errors.Is(err, errInjected) {
				t.Fatalf("failing resize: %v", err)
			}
			if _, err := apply(p, dst, nil); err != nil || !bytes.Equal(dst.Bytes(), src) {
				t.Fatalf("rerun after a failed resize: %v", err)
			}
		})
	}
}

// TestWriteLimits: writes follow the target's alignment and largest write.
func TestWriteLimits(t *testing.T) {
	rng := seeded(t)
	base := image(rng, 300_000)
	src := mutate(rng, base, 400_000, 4096)
	p, _ := diff(t, base, src, blockdiff.XXH3, 4096, nil)
	dst := disktest.NewMem(base)
	spy := &spyDisk{d: dst, budget: -1, align: 512, maxWrite: 8192}
	if _, err := apply(p, spy, nil); err != nil || !bytes.Equal(dst.Bytes(), src) {
		t.Fatalf("%v", err)
	}
	spy = &spyDisk{d: disktest.NewMem(base), budget: -1, align: 8192}
	if _, err := apply(p, spy, nil); !errors.Is(err, ErrBadOptions) || spy.touched() {
		t.Fatalf("alignment over the block size: %v", err)
	}
	// A target that cannot grow is refused before anything is written.
	plain := disktest.NewMem(base)
	if _, err := apply(p, plainDisk{plain}, nil); !errors.Is(err, transfer.ErrTargetTooSmall) || !bytes.Equal(plain.Bytes(), base) {
		t.Fatalf("target that cannot grow: %v", err)
	}
	// One that cannot shrink keeps its tail with KeepExcess.
	p, _ = diff(t, base, src[:200_000], blockdiff.XXH3, 4096, nil)
	plain = disktest.NewMem(base)
	if _, err := apply(p, plainDisk{plain}, nil); !errors.Is(err, ErrBadOptions) || !bytes.Equal(plain.Bytes(), base) {
		t.Fatalf("target that cannot shrink: %v", err)
	}
	if _, err := apply(p, plainDisk{plain}, &ApplyOptions{KeepExcess: true, Verify: true}); err != nil ||
		!bytes.Equal(plain.Bytes()[:200_000], src[:200_000]) || !bytes.Equal(plain.Bytes()[200_000:], base[200_000:]) {
		t.Fatalf("KeepExcess: %v", err)
	}
	// And a rerun with KeepExcess still proves the base and applies.
	if st, err := apply(p, plainDisk{plain}, &ApplyOptions{KeepExcess: true}); err != nil || !st.BaseChecked {
		t.Fatalf("KeepExcess rerun: %v", err)
	}
}

// lossyDisk drops writes at one offset: only Verify notices.
type lossyDisk struct {
	*disktest.Mem
	at int64
}

func (l lossyDisk) WriteAt(p []byte, off int64) (int, error) {
	if off <= l.at && l.at < off+int64(len(p)) {
		return len(p), nil
	}
	return l.Mem.WriteAt(p, off)
}

// WriteAtContext is the write Apply makes (disk.WriteAt prefers it), so
// it too drops the write.
func (l lossyDisk) WriteAtContext(_ context.Context, p []byte, off int64) (int, error) {
	return l.WriteAt(p, off)
}

func TestVerify(t *testing.T) {
	rng := seeded(t)
	base := image(rng, 100_000)
	src := bytes.Clone(base)
	fill(rng, src[8192:12288])
	p, _ := diff(t, base, src, blockdiff.BLAKE3, 4096, nil)
	if _, err := apply(p, lossyDisk{disktest.NewMem(base), 8192}, nil); err != nil {
		t.Fatalf("without Verify: %v", err)
	}
	st, err := apply(p, lossyDisk{disktest.NewMem(base), 8192}, &ApplyOptions{Verify: true})
	if !errors.Is(err, ErrResultMismatch) || st.Verified {
		t.Fatalf("got %v, want ErrResultMismatch", err)
	}
	if st, err := apply(p, disktest.NewMem(base), &ApplyOptions{Verify: true}); err != nil || !st.Verified {
		t.Fatalf("Verify: %v, %+v", err, st)
	}
}

// changingSource returns other bytes at one offset after the first read.
type changingSource struct {
	b     []byte
	at    int64
	reads int
}

func (c *changingSource) ReadAt(p []byte, off int64) (int, error) {
	n := copy(p, c.b[off:])
	if off <= c.at && c.at < off+int64(n) {
		c.reads++
		if c.reads > 1 {
			p[c.at-off] ^= 1
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestSourceChanged(t *testing.T) {
	rng := seeded(t)
	base := image(rng, 100_000)
	src := bytes.Clone(base)
	src[50_000] ^= 0x55
	sig := signature(t, base, blockdiff.XXH3, 4096)
	sr, err := blockdiff.NewSignatureReader(bytes.NewReader(sig))
	if err != nil {
		t.Fatal(err)
	}
	cs := &changingSource{b: src, at: 50_000}
	_, err = Write(context.Background(), io.Discard, cs, int64(len(src)), sr, &WriteOptions{NoMmap: true, Concurrency: 1})
	if !errors.Is(err, ErrSourceChanged) {
		t.Fatalf("got %v, want ErrSourceChanged", err)
	}
}

func TestBadOptions(t *testing.T) {
	base := make([]byte, 10000)
	key, _ := blockdiff.NewKey()
	var sig bytes.Buffer
	if _, err := blockdiff.WriteSignature(context.Background(), &sig, bytes.NewReader(base), 10000,
		blockdiff.Hasher{Alg: blockdiff.XXH3, Key: key}, &blockdiff.Options{BlockSize: 4096, Offset: 4096}); err != nil {
		t.Fatal(err)
	}
	sr, err := blockdiff.NewSignatureReader(&sig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Write(context.Background(), io.Discard, bytes.NewReader(base), 10000, sr, nil); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("ranged signature: %v", err)
	}
	sigb := signature(t, base, blockdiff.XXH3, 4096)
	for _, o := range []WriteOptions{{RecordSize: -1}, {RecordSize: MaxRecordSize + 1}, {Compression: 9}} {
		sr, _ := blockdiff.NewSignatureReader(bytes.NewReader(sigb))
		if _, err := Write(context.Background(), io.Discard, bytes.NewReader(base), 10000, sr, &o); !errors.Is(err, ErrBadOptions) {
			t.Fatalf("%+v: %v", o, err)
		}
	}
	p, _ := diffSig(t, sigb, base, nil)
	if _, err := apply(p, disktest.NewMem(base), &ApplyOptions{WriteSize: -1}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("negative write size: %v", err)
	}
}

// TestSignatureDamage: a damaged signature fails Write with ErrSignature.
func TestSignatureDamage(t *testing.T) {
	rng := seeded(t)
	base := image(rng, 100_000)
	sig := signature(t, base, blockdiff.XXH3, 4096)
	sig = sig[:len(sig)-1]
	sr, err := blockdiff.NewSignatureReader(bytes.NewReader(sig))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Write(context.Background(), io.Discard, bytes.NewReader(base), int64(len(base)), sr, nil); !errors.Is(err, blockdiff.ErrSignature) {
		t.Fatalf("got %v, want ErrSignature", err)
	}
}

func TestCancel(t *testing.T) {
	rng := seeded(t)
	base := image(rng, 1<<20)
	src := mutate(rng, base, 1<<20, 4096)
	p, _ := diff(t, base, src, blockdiff.XXH3, 4096, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	spy := &spyDisk{d: disktest.NewMem(base), budget: -1}
	if _, err := Apply(ctx, bytes.NewReader(p), spy, nil); !errors.Is(err, context.Canceled) || spy.touched() {
		t.Fatalf("got %v", err)
	}
}
