package blockdiff

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/zeebo/blake3"
	"github.com/zeebo/xxh3"

	"github.com/deltasync/deltasync/disk"
)

// BenchmarkHashes measures the candidate block hashes on one 64 KiB block
// in cache: the reason XXH3 is the default (see the package doc).
func BenchmarkHashes(b *testing.B) {
	block := make([]byte, 64<<10)
	rand.NewChaCha8([32]byte{1}).Read(block)
	key, _ := NewKey()
	for _, c := range []struct {
		name string
		fn   func([]byte)
	}{
		{"xxh3-128", func(p []byte) { xxh3.Hash128Seed(p, 42) }},
		{"xxhash64", func(p []byte) { xxhash.Sum64(p) }},
		{"blake3-keyed", func(p []byte) { Hasher{BLAKE3, key}.Sum(p) }},
		{"blake3", func(p []byte) { blake3.Sum256(p) }},
		{"sha256", func(p []byte) { sha256.Sum256(p) }},
		{"zero-check", func(p []byte) { isZero(p) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(block)))
			for b.Loop() {
				c.fn(block)
			}
		})
	}
}

func benchPair(b *testing.B, size int, frac float64) (src, dst []byte) {
	r := rand.New(rand.NewPCG(1, 1))
	src = make([]byte, size)
	rand.NewChaCha8([32]byte{2}).Read(src)
	dst = append([]byte(nil), src...)
	for i := 0; i < int(float64(size/DefaultBlockSize)*frac); i++ {
		dst[r.IntN(size)] ^= 1
	}
	return src, dst
}

// BenchmarkCompare compares two 256 MiB disks differing in 1% of blocks,
// in memory (buffered path) and as files in the page cache (mapped path).
func BenchmarkCompare(b *testing.B) {
	const size = 256 << 20
	src, dst := benchPair(b, size, 0.01)
	dir := b.TempDir()
	sp, dp := filepath.Join(dir, "s"), filepath.Join(dir, "d")
	if err := os.WriteFile(sp, src, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(dp, dst, 0o644); err != nil {
		b.Fatal(err)
	}
	sf, _ := os.Open(sp)
	df, _ := os.Open(dp)
	defer sf.Close()
	defer df.Close()
	for _, c := range []struct {
		name string
		s, d interface {
			ReadAt([]byte, int64) (int, error)
		}
		noMmap bool
	}{
		{"memory", bytes.NewReader(src), bytes.NewReader(dst), false},
		{"file-mmap", sf, df, false},
		{"file-pread", sf, df, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(2 * size) // both sides are read
			b.ReportAllocs()
			for b.Loop() {
				_, err := Compare(context.Background(), c.s, size, c.d, size, &Options{NoMmap: c.noMmap}, func(disk.Extent) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHashBlocks hashes a 256 MiB in-memory disk with each algorithm.
func BenchmarkHashBlocks(b *testing.B) {
	const size = 256 << 20
	src, _ := benchPair(b, size, 0)
	key, _ := NewKey()
	for _, alg := range []HashAlgorithm{XXH3, BLAKE3} {
		b.Run(fmt.Sprint(alg), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				if err := HashBlocks(context.Background(), bytes.NewReader(src), size, Hasher{alg, key}, nil, func(BlockHash) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
