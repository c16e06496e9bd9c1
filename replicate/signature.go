package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// A point's signature (Config.SignatureDir) is the keyed BLAKE3 hashes
// of the blocks of the source view the point was synced from: what the
// replication meant the point to hold. Comparing a point, or a disk
// restored from it, with the signature (VerifyPoint) proves it holds
// that without the source. The file holds its key: keep it private.

// SignaturePath returns the path of point id's signature in dir.
func SignaturePath(dir, id string) string {
	return filepath.Join(dir, id+".sig")
}

// writeSignature writes the signature of point pt, made from view v.
// When the newest earlier point's signature (prevID) exists for the
// same disk size and block size and the cycle had hints, only the
// hinted blocks are hashed (read from v) and the others are copied from
// it; otherwise every block of v is hashed. The file is written to a
// temporary name, synced and renamed.
func (d *member) writeSignature(ctx context.Context, v View, pt Point, prevID string, hints []disk.Range) error {
	if err := os.MkdirAll(d.sigDir, 0o700); err != nil {
		return err
	}
	bs := d.opts.BlockSize
	if bs == 0 {
		bs = blockdiff.DefaultBlockSize
	}
	path := SignaturePath(d.sigDir, pt.ID)
	tmp, err := os.CreateTemp(d.sigDir, "."+pt.ID+".sig.tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = d.mergeSignature(ctx, tmp, v, bs, prevID, hints)
	if errors.Is(err, errNoPrevSignature) {
		if _, err = tmp.Seek(0, io.SeekStart); err == nil {
			err = tmp.Truncate(0)
		}
		if err == nil {
			var key blockdiff.Key
			if key, err = blockdiff.NewKey(); err == nil {
				_, err = blockdiff.WriteSignature(ctx, tmp, v, v.Size(), blockdiff.Hasher{Alg: blockdiff.BLAKE3, Key: key}, &blockdiff.Options{BlockSize: bs})
			}
		}
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("replicate: disk %q: the signature of point %s: %w", d.name, pt.ID, err)
	}
	return nil
}

var errNoPrevSignature = errors.New("no earlier signature to build on")

// mergeSignature writes to w the earlier signature prevID with the
// hinted blocks hashed again from v, or returns errNoPrevSignature.
func (d *member) mergeSignature(ctx context.Context, w io.Writer, v View, bs int, prevID string, hints []disk.Range) error {
	if hints == nil || prevID == "" {
		return errNoPrevSignature
	}
	f, err := os.Open(SignaturePath(d.sigDir, prevID))
	if err != nil {
		return errNoPrevSignature
	}
	defer f.Close()
	sr, err := blockdiff.NewSignatureReader(f)
	if err != nil {
		return errNoPrevSignature
	}
	defer sr.Close()
	hdr := sr.Header()
	if hdr.BlockSize != bs || hdr.DiskSize != v.Size() || hdr.Offset != 0 || (hdr.Length != 0 && hdr.Length != hdr.DiskSize) {
		return errNoPrevSignature
	}
	sw, err := blockdiff.NewSignatureWriter(w, blockdiff.SignatureHeader{Alg: hdr.Alg, BlockSize: bs, DiskSize: hdr.DiskSize, Key: hdr.Key})
	if err != nil {
		return err
	}
	h := blockdiff.Hasher{Alg: hdr.Alg, Key: hdr.Key}
	changed := disk.Normalize(hints)
	buf := make([]byte, bs)
	for i := 0; ; {
		if err := ctx.Err(); err != nil {
			return err
		}
		bh, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the signature of point %s: %w", prevID, err)
		}
		end := bh.Off + int64(bh.Len)
		for i < len(changed) && changed[i].End() <= bh.Off {
			i++
		}
		if i < len(changed) && changed[i].Off < end { // the block was hinted: hash it again
			p := buf[:bh.Len]
			if _, err := readFullAt(ctx, v, p, bh.Off); err != nil {
				return fmt.Errorf("reading view %s at %d: %w", v.ID(), bh.Off, err)
			}
			bh = blockdiff.BlockHash{Off: bh.Off, Len: bh.Len}
			if allZero(p) {
				bh.Zero = true
			} else {
				bh.Sum = h.Sum(p)
			}
		}
		if err := sw.Add(bh); err != nil {
			return err
		}
	}
	return sw.Close()
}

func readFullAt(ctx context.Context, src disk.Source, p []byte, off int64) (int, error) {
	n, err := disk.ReadAt(ctx, src, p, off)
	if n == len(p) {
		return n, nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func allZero(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

// VerifyPoint compares a disk (a point opened with OpenPoint, or a disk
// restored from one) with the point's signature at path, and returns
// the bytes that differ (0: the disk holds what the replication synced
// into the point).
func VerifyPoint(ctx context.Context, src disk.Source, path string) (differ int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sr, err := blockdiff.NewSignatureReader(f)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	defer sr.Close()
	st, err := blockdiff.CompareSignature(ctx, src, src.Size(), sr, nil, func(disk.Extent) error { return nil })
	return st.Differ, err
}
