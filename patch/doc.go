// Package patch is the offline form of a sync: a patch made on the
// source's side from the target's signature, carried any way one likes,
// and applied to the target later, with no connection between the two.
//
//	deltasync sign DISK -o SIG         (blockdiff.WriteSignature, on the target's side)
//	deltasync diff SRC SIG -o PATCH    (Write, on the source's side)
//	deltasync apply PATCH DST          (Apply, on the target's side)
//
// # Words
//
//   - The base is the disk a signature was made from, the one a patch
//     applies to. The result is the disk a patch makes: the source it was
//     made from.
//   - A patch is a versioned, checksummed stream (see Version for the
//     format, byte by byte): a header, records, and a trailer.
//   - A record is a resize (grow the target first), data (the result's
//     bytes of a range, compressed with zstd when that pays), zero (a
//     range that reads as zeros: cleared, not written) or truncate (cut
//     the target last). Data and zero records cover whole blocks of the
//     signature's grid, at ascending offsets.
//   - A Digest names a disk's content as its block hashes see it. A patch
//     carries two: the base digest (that of the signature it was made
//     from, see SignatureDigest) and the result digest (the source's,
//     hashed with the same algorithm, key and block size).
//   - The base check is what Apply does before writing: it hashes the
//     target and proves that it is the patch's base, or already its result.
//
// # What a patch holds, and who may read it
//
// A patch holds the source's bytes where they differ from the base, and
// the signature's hash key: Apply must hash the target with that key to
// prove it is the base, and a key derived from it would not do, since the
// base digest is made of hashes keyed with it. So a patch also reveals
// the keyed hashes of the base's blocks that it rewrites, and whoever holds
// it can test guesses of the base's blocks and, with XXH3, which is not
// cryptographic, craft colliding blocks (see blockdiff). Keep a patch as
// private as the disks it is made of, as a signature is kept. Its checksums
// detect accidents (a bad disk, a cut transfer, a file of another kind),
// not tampering.
//
// # The base check, and applying again
//
// Apply reads the patch twice. The first pass reads it whole and checks
// every record's checksum and place and the trailer, and hashes the target
// (one read of it) with the patch's key. For each block of the signature's
// grid it takes the base hash from the patch when a record covers the block
// (a record carries the base hashes of the blocks it covers), else from the
// target, and checks that these make the patch's base digest. So every block
// the patch does not rewrite is proven to be the base's, and the blocks it
// rewrites are not looked at: they are overwritten whole. In the same pass,
// the blocks the patch covers are hashed from its records and the others
// taken from the target, and these must make the patch's result digest: the
// patch is proven, before anything is written, to turn this target into its
// result. A target whose every block has the result's hash is already the
// result, and is left alone.
//
// That is what makes an interrupted Apply safe to run again, with no
// journal: the records are offset-addressed writes and clearings, applied
// in order, so a rerun writes the same bytes at the same places again. An
// interrupted run leaves the blocks it did not rewrite as they were, and
// blocks it did rewrite, whole or torn, in any state, which the check
// ignores. The sizes follow the same rule: a target grows before anything is
// written and is cut after everything is written and flushed, so the target
// of a rerun has the base's size or the result's, and when it has the
// result's size and is smaller than the base, everything was written, and
// the target must already be the result. A journal
// (transfer.JournalStore) was the other way: it would let a rerun skip
// the base check, but it trusts a record kept beside the target rather than
// the target itself, is lost with the machine, and needs the target's
// identity; the check needs nothing but the target and the patch.
//
// ApplyOptions.NoBaseCheck skips hashing the target: the patch is still
// read whole and checked before anything is written, but the target is
// then trusted to be the base. ApplyOptions.Verify reads the target back
// after the apply and proves it is the result.
//
// # Memory
//
// Write streams: it holds blockdiff's hashing workers and about three data
// records (1 MiB each by default), never the patch; Apply holds two
// records and blockdiff's workers. Neither depends on the disks' size.
//
// # Not supported
//
// Signatures of a range of a disk (blockdiff.Options Offset and Length)
// are refused: a patch describes whole disks.
package patch
