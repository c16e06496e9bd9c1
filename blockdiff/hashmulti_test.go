package blockdiff

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/zeebo/xxh3"

	"github.com/deltasync/deltasync/internal/xxh3multi"
)

// TestHashBlocksIsXXH3 checks every XXH3 block hash hashBlocks reports,
// computed four blocks at a time where it can (one by one at a chunk's
// end), against zeebo/xxh3's
// Hash128Seed of that block alone: the values in signatures and on the
// agent's wire stay XXH3-128, whatever the pairing. In the mix: block
// sizes that are not a multiple of 1 KiB, a short first block (Offset)
// and a short last one, zero blocks, a block split in two where the
// target ends (CompareHashes's splitAt), several chunks, and both an
// in-memory reader and a mapped file.
func TestHashBlocksIsXXH3(t *testing.T) {
	if !xxh3multi.Fast() {
		t.Log("no AVX-512 here: blocks are hashed one at a time")
	}
	seed := rand.Uint64()
	r := rand.New(rand.NewPCG(seed, 6))
	dir := t.TempDir()
	for it := 0; it < 24; it++ {
		d := randomImage(r, 1+r.IntN(3<<20))
		var key Key
		binary.LittleEndian.PutUint64(key[:], r.Uint64())
		h := Hasher{Alg: XXH3, Key: key}
		o := &Options{BlockSize: 512 * (1 + r.IntN(160)), ChunkSize: 1 << (16 + r.IntN(7)), Direct: DirectNever}
		if it%4 == 3 {
			o.Offset = int64(r.IntN(len(d)/512+1)) * 512
		}
		c, err := o.config()
		if err != nil {
			t.Fatal(err)
		}
		if it%3 == 1 {
			c.splitAt = int64(r.IntN(len(d) + 1))
		}
		var rd interface {
			ReadAt([]byte, int64) (int, error)
		} = bytes.NewReader(d)
		if it%2 == 1 {
			rd = writeFile(t, filepath.Join(dir, "d"), d)
		}
		var hs []BlockHash
		if err := hashBlocks(context.Background(), rd, int64(len(d)), h, &c, func(bh BlockHash) error {
			hs = append(hs, bh)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		xs := binary.LittleEndian.Uint64(key[:8])
		n := 0
		for _, bh := range hs {
			p := d[bh.Off : bh.Off+int64(bh.Len)]
			if bh.Zero {
				if !isZero(p) {
					t.Fatalf("seed %d: block at %d marked zero, is not", seed, bh.Off)
				}
				continue
			}
			want := xxh3.Hash128Seed(p, xs).Bytes()
			if !bytes.Equal(bh.Sum[:16], want[:]) || bh.Sum != h.Sum(p) {
				t.Fatalf("seed %d: size %d, block size %d, split at %d: block at %d (len %d) hash %x, want %x",
					seed, len(d), o.BlockSize, c.splitAt, bh.Off, bh.Len, bh.Sum[:16], want)
			}
			n++
		}
		if n == 0 && o.Offset == 0 && len(d) > o.BlockSize {
			t.Fatalf("seed %d: size %d: no block hashed", seed, len(d))
		}
	}
}

// TestHashFaultIsError truncates a mapped file under HashBlocks: the
// SIGBUS, raised while blocks are hashed, must come back as a FaultError.
// allData (direct_test.go) claims data everywhere, as a device's map
// does, so the missing pages are read rather than skipped as holes. Each
// cut leaves the first page of the block it falls in, so the fault is
// raised inside the hashing of: four blocks at once (16-19); blocks left
// over at the disk's end (60, 61); blocks left over at a chunk's end (60,
// 61, 63, zero block 62 skipped).
func TestHashFaultIsError(t *testing.T) {
	const bs = 64 << 10 // the default block size; 64 blocks a chunk
	for _, tc := range []struct {
		size, cut int64
		zero      int // a zero block, or -1
	}{
		{16 << 20, 19*bs + 4096, -1},
		{62 * bs, 61*bs + 4096, -1},
		{16 << 20, 63*bs + 4096, 62},
	} {
		d := bytes.Repeat([]byte{7}, int(tc.size))
		if tc.zero >= 0 {
			clear(d[tc.zero*bs : (tc.zero+1)*bs])
		}
		p := filepath.Join(t.TempDir(), "d")
		f := writeFile(t, p, d)
		if err := os.Truncate(p, tc.cut); err != nil {
			t.Fatal(err)
		}
		key, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		// One worker, so the fault is the first chunk's.
		o := &Options{Direct: DirectNever, Concurrency: 1}
		err = HashBlocks(context.Background(), allData{f}, tc.size, Hasher{Alg: XXH3, Key: key}, o, func(BlockHash) error { return nil })
		var fe *FaultError
		if !errors.As(err, &fe) || !errors.Is(err, ErrFault) {
			t.Fatalf("cut at %d: err = %v, want FaultError", tc.cut, err)
		}
		t.Logf("cut at %d: %v", tc.cut, err)
	}
}
