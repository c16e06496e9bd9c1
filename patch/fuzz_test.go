package patch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
)

// fixedSignature is a signature made with a fixed key and time, so that
// the patches made from it are the same in every run.
func fixedSignature(t testing.TB, base []byte, alg blockdiff.HashAlgorithm, bs int) []byte {
	t.Helper()
	var sig bytes.Buffer
	key := blockdiff.Key{1, 2, 3, 4, 5, 6, 7, 8}
	sw, err := blockdiff.NewSignatureWriter(&sig, blockdiff.SignatureHeader{
		Alg: alg, BlockSize: bs, DiskSize: int64(len(base)), Key: key, Created: time.Unix(1e9, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if err := blockdiff.HashBlocks(context.Background(), bytes.NewReader(base), int64(len(base)),
		blockdiff.Hasher{Alg: alg, Key: key}, &blockdiff.Options{BlockSize: bs, Concurrency: 1}, sw.Add); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	return sig.Bytes()
}

// fuzzPatches returns small valid patches, the same in every run: each
// kind of record, raw and compressed data, both algorithms.
func fuzzPatches(t testing.TB) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	var out [][]byte
	for _, c := range []struct {
		base, size, bs int
		alg            blockdiff.HashAlgorithm
	}{
		{6000, 6000, 512, blockdiff.XXH3},
		{3000, 7000, 512, blockdiff.BLAKE3},
		{7000, 2500, 1024, blockdiff.XXH3},
		{0, 2000, 512, blockdiff.XXH3},
		{2000, 0, 512, blockdiff.XXH3},
	} {
		base := image(rng, c.base)
		src := mutate(rng, base, c.size, c.bs)
		for i := 0; i+64 <= len(src) && i < 1500; i++ {
			src[i] = "compressible "[i%13] // so that some data is compressed
		}
		p, _ := diffSig(t, fixedSignature(t, base, c.alg, c.bs), src, &WriteOptions{Created: time.Unix(2e9, 0), RecordSize: 2 * c.bs})
		out = append(out, p)
	}
	return out
}

// FuzzPatchReader reads anything as a patch: it must not panic, must
// refuse what is not a valid patch with ErrCorrupt, and accept only the
// valid patches it was seeded with (any other input that reads as valid
// would be corruption that went unnoticed).
func FuzzPatchReader(f *testing.F) {
	valid := fuzzPatches(f)
	for _, p := range valid {
		f.Add(p)
		f.Add(p[:len(p)/2])
		b := bytes.Clone(p)
		b[len(b)/3] ^= 4
		f.Add(b)
	}
	f.Add([]byte("DSYNCPAT"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rd, err := NewReader(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("header refused without ErrCorrupt: %v", err)
			}
			return
		}
		h := rd.Header()
		end := int64(-1)
		for {
			rec, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				var fe *FormatError
				if !errors.As(err, &fe) || !errors.Is(err, ErrCorrupt) {
					t.Fatalf("refused without a *FormatError: %v", err)
				}
				return
			}
			if rec.Kind == Data && int64(len(rec.Data)) != rec.Len || rec.Len <= 0 || rec.End() > max(h.BaseSize, h.ResultSize) {
				t.Fatalf("bad record %v [%d,+%d) with %d bytes", rec.Kind, rec.Off, rec.Len, len(rec.Data))
			}
			if rec.Kind == Data || rec.Kind == Zero {
				if rec.Off < end {
					t.Fatalf("record at %d before the end %d of the previous one", rec.Off, end)
				}
				end = rec.End()
			}
		}
		for _, v := range valid {
			if bytes.Equal(v, b) {
				return
			}
		}
		t.Fatalf("accepted a patch of %d bytes that is none of the valid ones", len(b))
	})
}
