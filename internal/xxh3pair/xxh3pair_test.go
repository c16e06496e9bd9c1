package xxh3pair

import (
	"math/rand"
	"testing"

	"github.com/zeebo/xxh3"
)

// lengths around every boundary of XXH3's paths and of the loops here:
// the short paths, one stripe, a block, blocks plus stripes, plus a byte.
var lengths = []int{0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 255, 256, 320, 1023, 1024,
	1025, 1087, 1088, 1089, 2047, 2048, 2049, 4096, 4097, 65535, 65536, 65537, 1 << 20}

var seeds = []uint64{0, 1, 0x9E3779B185EBCA87, 0xffffffffffffffff, 0x0123456789abcdef}

// TestMatchesZeebo checks Sum, Sum2 and Sum4 against zeebo/xxh3, with the
// assembly and without (the fallback every other CPU takes).
func TestMatchesZeebo(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	buf := make([]byte, 4<<20+64)
	r.Read(buf)
	for _, asm := range []bool{true, false} {
		if asm && !useAsm {
			t.Log("no AVX-512 here: only the fallback is checked")
			continue
		}
		save := useAsm
		defer func() { useAsm = save }()
		useAsm = asm
		for _, seed := range seeds {
			h := New(seed)
			for _, n := range lengths {
				for _, off := range []int{0, 1, 7} { // unaligned inputs too
					p, q := buf[off:off+n], buf[off+n+3:off+2*n+3]
					wp, wq := xxh3.Hash128Seed(p, seed).Bytes(), xxh3.Hash128Seed(q, seed).Bytes()
					if got := h.Sum(p); got != wp {
						t.Fatalf("asm=%v seed=%#x len=%d off=%d: Sum %x, want %x", asm, seed, n, off, got, wp)
					}
					gp, gq := h.Sum2(p, q)
					if gp != wp || gq != wq {
						t.Fatalf("asm=%v seed=%#x len=%d off=%d: Sum2 %x %x, want %x %x", asm, seed, n, off, gp, gq, wp, wq)
					}
					x, y := buf[off+2*n+5:off+3*n+5], buf[off+3*n+8:off+4*n+8]
					wx, wy := xxh3.Hash128Seed(x, seed).Bytes(), xxh3.Hash128Seed(y, seed).Bytes()
					if g := h.Sum4(&[4][]byte{p, q, x, y}); g != [4][16]byte{wp, wq, wx, wy} {
						t.Fatalf("asm=%v seed=%#x len=%d off=%d: Sum4 %x, want %x %x %x %x", asm, seed, n, off, g, wp, wq, wx, wy)
					}
					if n > 0 {
						wy1 := xxh3.Hash128Seed(y[:n-1], seed).Bytes()
						if g := h.Sum4(&[4][]byte{p, q, x, y[:n-1]}); g != [4][16]byte{wp, wq, wx, wy1} {
							t.Fatalf("asm=%v seed=%#x len=%d,%d: Sum4 %x, want %x %x %x %x", asm, seed, n, n-1, g, wp, wq, wx, wy1)
						}
						gp, gq = h.Sum2(p, q[:n-1]) // unequal lengths
						if wq1 := xxh3.Hash128Seed(q[:n-1], seed).Bytes(); gp != wp || gq != wq1 {
							t.Fatalf("asm=%v seed=%#x len=%d,%d: Sum2 %x %x, want %x %x", asm, seed, n, n-1, gp, gq, wp, wq1)
						}
					}
				}
			}
		}
		useAsm = save
	}
}

// TestZeroCounts: the assembly loops leave the accumulators alone for a
// count of 0 (they decrement before testing, so without a guard they
// would run 2^64 times).
func TestZeroCounts(t *testing.T) {
	if !useAsm {
		t.Skip("no AVX-512 here")
	}
	h := New(9)
	a, b := initAcc, initAcc
	var d [64]byte
	accumBlocks(&a, &d[0], &h.secret, 0)
	accumBlocks2(&a, &b, &d[0], &d[0], &h.secret, 0)
	accumStripes(&a, &d[0], &h.secret[0], 0)
	four := [4][8]uint64{initAcc, initAcc, initAcc, initAcc}
	accumBlocks4(&four, &[4]*byte{&d[0], &d[0], &d[0], &d[0]}, &h.secret, 0)
	if a != initAcc || b != initAcc || four != [4][8]uint64{initAcc, initAcc, initAcc, initAcc} {
		t.Fatalf("accumulators changed: %x %x %x", a, b, four)
	}
}

// TestStreamsIndependent: changing one byte of one input of Sum2 changes
// that input's hash only, wherever the byte is.
func TestStreamsIndependent(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	p, q := make([]byte, 65536), make([]byte, 65536)
	r.Read(p)
	r.Read(q)
	h := New(42)
	sp, sq := h.Sum2(p, q)
	for _, i := range []int{0, 63, 64, 1023, 1024, 40000, 65472, 65535} {
		for which, b := range [][]byte{p, q} {
			b[i] ^= 1
			gp, gq := h.Sum2(p, q)
			if (gp != sp) != (which == 0) || (gq != sq) != (which == 1) {
				t.Fatalf("byte %d of input %d: first hash changed %v, second changed %v", i, which+1, gp != sp, gq != sq)
			}
			b[i] ^= 1
		}
	}
	// The same for Sum4: each of the four inputs in turn.
	var in [4][]byte
	for k := range in {
		in[k] = make([]byte, 65536)
		r.Read(in[k])
	}
	want := h.Sum4(&in)
	for _, i := range []int{0, 1023, 1024, 65535} {
		for k := range in {
			in[k][i] ^= 1
			got := h.Sum4(&in)
			for j := range got {
				if (got[j] != want[j]) != (j == k) {
					t.Fatalf("Sum4: byte %d of input %d flipped: hash %d changed %v", i, k+1, j+1, got[j] != want[j])
				}
			}
			in[k][i] ^= 1
		}
	}
}

var sink [16]byte

func benchBlocks(b *testing.B, pairs bool) {
	buf := make([]byte, 256<<20) // beyond the caches: read from memory
	rand.New(rand.NewSource(3)).Read(buf)
	const bs = 64 << 10
	h := New(7)
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		for o := 0; o < len(buf); o += 2 * bs {
			p, q := buf[o:o+bs], buf[o+bs:o+2*bs]
			if pairs {
				sink, _ = h.Sum2(p, q)
			} else {
				sink = h.Sum(p)
				sink = h.Sum(q)
			}
		}
	}
}

func BenchmarkOne(b *testing.B) { benchBlocks(b, false) }
func BenchmarkTwo(b *testing.B) { benchBlocks(b, true) }
func BenchmarkZeebo(b *testing.B) {
	buf := make([]byte, 256<<20)
	rand.New(rand.NewSource(3)).Read(buf)
	const bs = 64 << 10
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		for o := 0; o < len(buf); o += bs {
			sink = xxh3.Hash128Seed(buf[o:o+bs], 7).Bytes()
		}
	}
}
