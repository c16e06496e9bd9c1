package transfer

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/deltasync/deltasync/blockdiff"
)

// hashingDisk is a memDisk that hashes its own blocks, as a remote agent
// does; it counts the bytes read through ReadAt by the engine.
type hashingDisk struct {
	*memDisk
	readAt atomic.Int64
	hashes atomic.Int64
}

func (h *hashingDisk) ReadAt(p []byte, off int64) (int, error) {
	h.readAt.Add(int64(len(p)))
	return h.memDisk.ReadAt(p, off)
}

// ReadAtContext is ReadAt: the memDisk's own would not be counted.
func (h *hashingDisk) ReadAtContext(_ context.Context, p []byte, off int64) (int, error) {
	return h.ReadAt(p, off)
}

type chanIter struct {
	ch   <-chan blockdiff.BlockHash
	errc <-chan error
}

func (c *chanIter) Next() (blockdiff.BlockHash, error) {
	if b, ok := <-c.ch; ok {
		return b, nil
	}
	if err := <-c.errc; err != nil {
		return blockdiff.BlockHash{}, err
	}
	return blockdiff.BlockHash{}, io.EOF
}

func (h *hashingDisk) HashBlocks(ctx context.Context, hs blockdiff.Hasher, o *blockdiff.Options) (blockdiff.HashIterator, error) {
	snapshot := h.Bytes()
	ch := make(chan blockdiff.BlockHash, 64)
	errc := make(chan error, 1)
	go func() {
		defer close(ch)
		errc <- blockdiff.HashBlocks(ctx, bytes.NewReader(snapshot), int64(len(snapshot)), hs, o, func(b blockdiff.BlockHash) error {
			h.hashes.Add(1)
			select {
			case ch <- b:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	return &chanIter{ch: ch, errc: errc}, nil
}

// TestSyncThroughTargetHashes syncs against a target that hashes its own
// blocks: the comparison reads none of the target, and the result is
// identical (proved by a verification that also goes through hashes, and
// by comparing the bytes here).
func TestSyncThroughTargetHashes(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	const bs = 4096
	for i, alg := range []blockdiff.HashAlgorithm{blockdiff.XXH3, blockdiff.BLAKE3, blockdiff.XXH3} {
		src := randImage(rng, 2<<20+512*rng.IntN(8), bs)
		old := mutate(rng, src, bs, 40)
		if i == 2 {
			old = old[:len(old)-5*bs] // the target grows
		}
		d := &hashingDisk{memDisk: newMemDisk(bytes.Clone(old), "dst")}
		st, err := Sync(context.Background(), newMemDisk(bytes.Clone(src), "src"), d,
			&Options{BlockSize: bs, HashAlgorithm: alg, Verify: true, Journal: &MemStore{}})
		if err != nil {
			t.Fatalf("%v: %v", alg, err)
		}
		if !bytes.Equal(d.Bytes(), src) || !st.Verified {
			t.Fatalf("%v: target differs at %d", alg, firstDiff(d.Bytes(), src))
		}
		if d.hashes.Load() == 0 {
			t.Fatalf("%v: the target hashed nothing", alg)
		}
		// Only the rounding of an unaligned source end may read the
		// target; comparison and verification must not.
		if n := d.readAt.Load(); n > int64(bs) {
			t.Fatalf("%v: the engine read %d bytes of a hashing target", alg, n)
		}
	}
}
