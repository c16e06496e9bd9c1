// Package blockdiff finds where two disks differ, block by block, at the
// speed of the disks.
//
//	st, err := blockdiff.Compare(ctx, src, srcSize, dst, dstSize,
//		&blockdiff.Options{BlockSize: 64 << 10},
//		func(e disk.Extent) error {
//			fmt.Println(e) // data[4096,+65536), zero[...), excess[...)
//			return nil
//		})
//	// st.Compared, st.Equal: bytes gone over and found equal
//
// When the target is far away, each side hashes its own blocks
// (HashBlocks) and CompareHashes compares the hashes; a signature
// (WriteSignature) is those hashes kept in a file.
//
// # Words
//
//   - A disk is an io.ReaderAt and a size: an image file, a block device, a
//     page blob, anything that reads at offsets.
//   - A block is the unit of comparison, BlockSize bytes (default 64 KiB,
//     a multiple of 512, at most 4 MiB) on an absolute grid: block i is
//     [i*BlockSize, (i+1)*BlockSize), clipped to the disk and the range.
//   - An Extent is an offset, a length and a Kind: Data (copy the source's
//     bytes), Zero (the source reads as zeros: clear, do not send zeros) or
//     Excess (only the target extends here). Adjacent extents of one kind
//     are merged; extents come out in ascending order, as a stream.
//   - A chunk is the unit of work of one worker, several blocks long.
//   - A hash key is the random per-run key of the keyed block hash (the
//     word seed is kept for seeding a target).
//   - A signature is a disk's block hashes as a versioned, checksummed,
//     compressed stream (see WriteSignature).
//
// # Modes
//
// Compare is exact: both disks are in this process and their bytes are
// compared. Both are read at the same offsets at the same time by
// Concurrency workers, with ReadAhead chunks prefetched, so several reads
// are outstanding on each side. Files and block devices are read through
// memory mappings of bounded windows (no copy into user space, no
// anonymous memory; a SIGBUS from a truncated file or a failing device is
// returned as a *FaultError), with the kernel's reads of chunks not yet
// cached started ahead (posix_fadvise WILLNEED; cachestat tells which are
// cached), other readers into pooled buffers. Options.Direct reads cold
// chunks with O_DIRECT instead: a third of the CPU time and no page-cache
// eviction, but slower on the disks measured (docs/bench/figures.md), so
// not the default.
//
// Hash mode is for a side that can only give hashes, because it is far
// away: HashBlocks runs next to that disk and streams its block hashes;
// CompareHashes hashes the local source the same way and compares the two
// streams. Blocks of zeros are recognised exactly on both sides, never by
// hash.
//
// # Collision odds
//
// A differing block is missed only if its two hashes collide. Blocks are
// compared position by position, so the birthday bound does not apply: for
// an ideal 128-bit hash each differing block is missed with probability
// 2^-128, and a whole 8 TiB disk of 64 KiB blocks (2^27 blocks, all
// differing) with probability below 2^-101.
//
// XXH3 (the default, XXH3-128 with a 64-bit seed taken from the hash key)
// approaches those odds for data nobody chose to collide, and streams
// about three times as fast as xxhash64 and four times as fast as BLAKE3
// (BenchmarkHashes; the figures are in docs/bench/figures.md): hashing
// stays below the disk's speed. On a CPU with AVX-512, blocks of equal
// length are hashed four at a time (internal/xxh3multi): several streams
// from memory keep more loads in flight than one. The values are
// XXH3-128's either way. XXH3 is
// not cryptographic: whoever knows the seed can construct two blocks with
// one hash, and someone who can write data to the source (a tenant of the
// VM) could then plant a block the sync would skip. The random per-run key
// is what makes that hard: the seed is chosen after the data is written
// and is never shown to it, so colliding blocks cannot be prepared in
// advance. Where the data can be chosen by an adversary who may learn the
// key (a signature file is public to whoever reads it), use BLAKE3: keyed
// BLAKE3 is a MAC, 256 bits, and no collision is known or expected.
//
// # Sizes
//
// Disks of any size are compared; a last block shorter than BlockSize is
// compared over its real length. Writers that need 512-byte multiples
// (page blobs) refuse other sizes themselves. When sizes differ, the
// source's tail is reported as Data and Zero extents and the target's tail
// as one Excess extent.
//
// # Memory
//
// Memory is bounded by Options, never by the disk size: the buffered path
// holds at most 2*ChunkSize*Concurrency bytes of buffers; the mapped path
// maps at most Concurrency windows of ChunkSize bytes per side at a time
// (file pages, which the kernel can drop, not anonymous memory).
package blockdiff
