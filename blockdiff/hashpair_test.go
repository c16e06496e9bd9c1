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
)

// TestHashBlocksIsXXH3 checks every XXH3 block hash HashBlocks reports,
// computed two blocks at a time where it can, against zeebo/xxh3's
// Hash128Seed of that block alone: the values in signatures and on the
// agent's wire stay XXH3-128, whatever the pairing. Block sizes that are
// not a multiple of 1 KiB, a short last block, zero blocks and blocks
// split at a range's edge are all in the mix.
func TestHashBlocksIsXXH3(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for it := 0; it < 20; it++ {
		d := randomImage(r, 1+r.IntN(3<<20))
		key, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		h := Hasher{Alg: XXH3, Key: key}
		o := &Options{BlockSize: 512 * (1 + r.IntN(160))}
		if it%4 == 3 {
			o.Offset = int64(r.IntN(len(d)/512+1)) * 512
		}
		seed := binary.LittleEndian.Uint64(key[:8])
		n := 0
		for _, bh := range sigHashes(t, d, h, o) {
			p := d[bh.Off : bh.Off+int64(bh.Len)]
			if bh.Zero {
				if !isZero(p) {
					t.Fatalf("block at %d marked zero, is not", bh.Off)
				}
				continue
			}
			want := xxh3.Hash128Seed(p, seed).Bytes()
			if !bytes.Equal(bh.Sum[:16], want[:]) || bh.Sum != h.Sum(p) {
				t.Fatalf("size %d, block size %d: block at %d (len %d) hash %x, want %x", len(d), o.BlockSize, bh.Off, bh.Len, bh.Sum[:16], want)
			}
			n++
		}
		if n == 0 && o.Offset == 0 && len(d) > o.BlockSize {
			t.Fatalf("size %d: no block hashed", len(d))
		}
	}
}

// TestHashFaultIsError truncates a mapped file under HashBlocks: the
// SIGBUS, raised inside the hashing loop, must come back as a FaultError.
// allData (direct_test.go) claims data everywhere, as a device's map
// does, so the missing pages are read rather than skipped as holes.
func TestHashFaultIsError(t *testing.T) {
	dir := t.TempDir()
	const size = 64 << 20
	p := filepath.Join(dir, "d")
	f := writeFile(t, p, bytes.Repeat([]byte{7}, size))
	if err := os.Truncate(p, 1<<20); err != nil {
		t.Fatal(err)
	}
	key, _ := NewKey()
	err := HashBlocks(context.Background(), allData{f}, size, Hasher{Alg: XXH3, Key: key}, nil, func(BlockHash) error { return nil })
	var fe *FaultError
	if !errors.As(err, &fe) || !errors.Is(err, ErrFault) {
		t.Fatalf("err = %v, want FaultError", err)
	}
	t.Logf("got: %v", err)
}
