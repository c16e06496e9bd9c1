package xxh3multi

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

// TestMatchesZeebo checks Sum4 against zeebo/xxh3, with the assembly and
// without (the fallback every other CPU takes), on equal lengths and with
// one input a byte shorter.
func TestMatchesZeebo(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	buf := make([]byte, 4<<20+64)
	r.Read(buf)
	save := useAsm
	defer func() { useAsm = save }()
	for _, asm := range []bool{true, false} {
		if asm && !save {
			t.Log("no AVX-512 here: only the fallback is checked")
			continue
		}
		useAsm = asm
		for _, seed := range seeds {
			h := New(seed)
			for _, n := range lengths {
				for _, off := range []int{0, 1, 7} { // unaligned inputs too
					var in [4][]byte
					var want [4][16]byte
					for i := range in {
						o := off + i*(n+3)
						in[i] = buf[o : o+n]
						want[i] = xxh3.Hash128Seed(in[i], seed).Bytes()
					}
					if got := h.Sum4(&in); got != want {
						t.Fatalf("asm=%v seed=%#x len=%d off=%d: Sum4 %x, want %x", asm, seed, n, off, got, want)
					}
					if n > 0 {
						in[3] = in[3][:n-1]
						want[3] = xxh3.Hash128Seed(in[3], seed).Bytes()
						if got := h.Sum4(&in); got != want {
							t.Fatalf("asm=%v seed=%#x len=%d,%d: Sum4 %x, want %x", asm, seed, n, n-1, got, want)
						}
					}
				}
			}
		}
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
	a := initAcc
	var d [64]byte
	accumStripes(&a, &d[0], &h.secret[0], 0)
	four := [4][8]uint64{initAcc, initAcc, initAcc, initAcc}
	accumBlocks4(&four, &[4]*byte{&d[0], &d[0], &d[0], &d[0]}, &h.secret, 0)
	if a != initAcc || four != [4][8]uint64{initAcc, initAcc, initAcc, initAcc} {
		t.Fatalf("accumulators changed: %x %x", a, four)
	}
}

// TestStreamsIndependent: changing one byte of one input of Sum4 changes
// that input's hash only, wherever the byte is.
func TestStreamsIndependent(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	h := New(42)
	var in [4][]byte
	for k := range in {
		in[k] = make([]byte, 65536)
		r.Read(in[k])
	}
	want := h.Sum4(&in)
	for _, i := range []int{0, 63, 64, 1023, 1024, 40000, 65472, 65535} {
		for k := range in {
			in[k][i] ^= 1
			got := h.Sum4(&in)
			for j := range got {
				if (got[j] != want[j]) != (j == k) {
					t.Fatalf("byte %d of input %d flipped: hash %d changed %v", i, k+1, j+1, got[j] != want[j])
				}
			}
			in[k][i] ^= 1
		}
	}
}

var sink [4][16]byte

func benchBlocks(b *testing.B, four bool) {
	buf := make([]byte, 256<<20) // beyond the caches: read from memory
	rand.New(rand.NewSource(3)).Read(buf)
	const bs = 64 << 10
	h := New(7)
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		for o := 0; o < len(buf); o += 4 * bs {
			in := [4][]byte{buf[o : o+bs], buf[o+bs : o+2*bs], buf[o+2*bs : o+3*bs], buf[o+3*bs : o+4*bs]}
			if four {
				sink = h.Sum4(&in)
			} else {
				for k := range in {
					sink[k] = h.Sum(in[k])
				}
			}
		}
	}
}

func BenchmarkOne(b *testing.B)  { benchBlocks(b, false) }
func BenchmarkFour(b *testing.B) { benchBlocks(b, true) }
