package blockdiff

import (
	"context"
	"fmt"
	"io"

	"github.com/deltasync/deltasync/disk"
)

// CompareSignature compares the source against a signature of the target,
// as CompareHashes does, hashing the source with the signature's algorithm
// and key, at its block size, over its range; the target's size is the
// signature's disk size. Zero BlockSize, Offset and Length in opts are
// taken from the header; other values must equal the header's, and Hints
// must be nil, or the call fails with ErrBadOptions. sig must not have
// been read from yet.
func CompareSignature(ctx context.Context, src io.ReaderAt, srcSize int64, sig *SignatureReader, opts *Options, fn func(disk.Extent) error) (Stats, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	h := sig.Header()
	bad := func(what string, got, want int64) (Stats, error) {
		return Stats{}, fmt.Errorf("%w: %s %d contradicts the signature's %d", ErrBadOptions, what, got, want)
	}
	switch {
	case o.BlockSize != 0 && o.BlockSize != h.BlockSize:
		return bad("block size", int64(o.BlockSize), int64(h.BlockSize))
	case o.Offset != 0 && o.Offset != h.Offset:
		return bad("offset", o.Offset, h.Offset)
	case o.Length != 0 && o.Length != h.Length:
		return bad("length", o.Length, h.Length)
	case o.Hints != nil:
		return Stats{}, fmt.Errorf("%w: hints cannot be used with a signature, which holds every block of its range", ErrBadOptions)
	case sig.next != 0:
		return Stats{}, fmt.Errorf("%w: the signature has already been read from (%d blocks)", ErrBadOptions, sig.next)
	case sig.err != nil && sig.err != io.EOF:
		return Stats{}, sig.err
	}
	o.BlockSize, o.Offset, o.Length = h.BlockSize, h.Offset, h.Length
	return CompareHashes(ctx, src, srcSize, Hasher{Alg: h.Alg, Key: h.Key}, sig, h.DiskSize, &o, fn)
}
