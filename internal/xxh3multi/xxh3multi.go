// Package xxh3multi computes XXH3-128 with a seed, bit for bit the value
// of github.com/zeebo/xxh3's Hash128Seed, with its own AVX-512 loop that
// hashes four equal-length inputs at once.
//
// Hashing a disk's blocks is bound by how fast memory delivers them, not
// by the arithmetic: one stream at a time leaves the core waiting on
// loads. Independent streams keep more loads in flight, as a comparison
// of two buffers does: four at a time is about a third faster than one
// (the figures and their command are in docs/bench/figures.md). A single
// input, and every input without AVX-512 (or off amd64), goes to
// zeebo/xxh3.
package xxh3multi

import (
	"encoding/binary"
	"math/bits"

	"github.com/zeebo/xxh3"
)

// kSecret is XXH3's default secret (XXH3 specification, kSecret).
var kSecret = [secretSize]byte{
	0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
	0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
	0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
	0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
	0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
	0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
	0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
	0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
	0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
	0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
	0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
	0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
}

const (
	secretSize = 192
	stripeLen  = 64
	blockLen   = 1024 // 16 stripes, each consuming 8 more bytes of secret

	prime32_1 = 0x9E3779B1
	prime32_2 = 0x85EBCA77
	prime32_3 = 0xC2B2AE3D
	prime64_1 = 0x9E3779B185EBCA87
	prime64_2 = 0xC2B2AE3D27D4EB4F
	prime64_3 = 0x165667B19E3779F9
	prime64_4 = 0x85EBCA77C2B2AE63
	prime64_5 = 0x27D4EB2F165667C5
)

var initAcc = [8]uint64{prime32_3, prime64_1, prime64_2, prime64_3, prime64_4, prime32_2, prime64_5, prime32_1}

// Hasher hashes with one seed. Its secret is derived once, in New. A
// Hasher is a plain value, safe for concurrent use.
type Hasher struct {
	seed   uint64
	secret [secretSize]byte
}

// New returns a Hasher for seed.
func New(seed uint64) *Hasher {
	h := &Hasher{seed: seed}
	for i := 0; i < secretSize; i += 16 {
		binary.LittleEndian.PutUint64(h.secret[i:], binary.LittleEndian.Uint64(kSecret[i:])+seed)
		binary.LittleEndian.PutUint64(h.secret[i+8:], binary.LittleEndian.Uint64(kSecret[i+8:])-seed)
	}
	return h
}

// Sum returns XXH3-128 of p with the Hasher's seed, high half first
// (zeebo/xxh3's Uint128.Bytes).
func (h *Hasher) Sum(p []byte) [16]byte { return xxh3.Hash128Seed(p, h.seed).Bytes() }

// Sum4 returns the Sum of each of b. With the assembly (Fast) and four
// inputs of the same length over 1 KiB it hashes all four at once;
// otherwise it is four calls of Sum.
func (h *Hasher) Sum4(b *[4][]byte) (s [4][16]byte) {
	n := len(b[0])
	if !useAsm || n <= blockLen || len(b[1]) != n || len(b[2]) != n || len(b[3]) != n {
		for i := range b {
			s[i] = h.Sum(b[i])
		}
		return s
	}
	accs := [4][8]uint64{initAcc, initAcc, initAcc, initAcc}
	nb := (n - 1) / blockLen
	d := [4]*byte{&b[0][0], &b[1][0], &b[2][0], &b[3][0]}
	accumBlocks4(&accs, &d, &h.secret, nb)
	for i := range s {
		s[i] = h.finish(&accs[i], b[i], nb)
	}
	return s
}

// Fast says whether this CPU runs the assembly, so that Sum4 is faster
// than Sum on each input.
func Fast() bool { return useAsm }

// finish accumulates what follows p's nb full blocks (the stripes of the
// last partial block, then the last 64 bytes with the secret's end) and
// merges the accumulators into the 128-bit result.
func (h *Hasher) finish(acc *[8]uint64, p []byte, nb int) [16]byte {
	n := len(p)
	if ns := (n - 1 - nb*blockLen) / stripeLen; ns > 0 {
		accumStripes(acc, &p[nb*blockLen], &h.secret[0], ns)
	}
	accumStripes(acc, &p[n-stripeLen], &h.secret[secretSize-stripeLen-7], 1)
	lo := merge(acc, h.secret[11:], uint64(n)*prime64_1)
	hi := merge(acc, h.secret[secretSize-stripeLen-11:], ^(uint64(n) * prime64_2))
	var s [16]byte
	binary.BigEndian.PutUint64(s[:], hi)
	binary.BigEndian.PutUint64(s[8:], lo)
	return s
}

func merge(acc *[8]uint64, secret []byte, start uint64) uint64 {
	r := start
	for i := 0; i < 4; i++ {
		hi, lo := bits.Mul64(acc[2*i]^binary.LittleEndian.Uint64(secret[16*i:]),
			acc[2*i+1]^binary.LittleEndian.Uint64(secret[16*i+8:]))
		r += hi ^ lo
	}
	r ^= r >> 37
	r *= 0x165667919E3779F9
	return r ^ r>>32
}
