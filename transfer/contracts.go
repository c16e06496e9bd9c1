package transfer

import (
	"context"

	"github.com/deltasync/deltasync/blockdiff"
)

// BlockHasher hashes a disk's blocks near its data (an agent next to a
// remote disk): the engine then hashes its own side with the same keyed
// Hasher and compares hashes (blockdiff.CompareHashes), so the disk is not
// read across the network. HashBlocks starts hashing the blocks of opts'
// range (BlockSize, Offset, Length, Hints) and returns their hashes as a
// stream in ascending order, as blockdiff.HashBlocks would produce them;
// the stream ends with io.EOF, or an error, and stops when ctx is
// cancelled. Fallback: the disk is read and compared byte for byte.
type BlockHasher interface {
	HashBlocks(ctx context.Context, h blockdiff.Hasher, opts *blockdiff.Options) (blockdiff.HashIterator, error)
}
