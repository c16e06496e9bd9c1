package agent

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/deltasync/deltasync/blockdiff"
)

// seedStream is a well-formed session: writes (raw and compressed), a
// zeroing, a hash stream with credit, a read, a resize, a flush, bye.
func seedStream(t testing.TB) []byte {
	var b []byte
	b = append(b, writeFrame(0, bytes.Repeat([]byte{1}, 1024))...)
	z := mustZstdTB(t, bytes.Repeat([]byte("ab"), 2048))
	p := []byte{flagCompressed}
	p = appendVarints(p, 4096, 4096)
	b = append(b, frame(mWrite, 0, append(p, z...))...)
	b = append(b, frame(mZero, 0, appendVarints(nil, 8192, 4096))...)
	h := []byte{byte(blockdiff.XXH3)}
	h = append(h, make([]byte, 32)...)
	h = appendU32(h, 4096)
	h = appendU64(h, 0)
	h = appendU64(h, 0)
	h = appendU32(h, minCredit)
	h = append(h, 1)
	h = appendVarints(h, 1, 0, 4096)
	b = append(b, frame(mHash, 3, h)...)
	b = append(b, frame(mCredit, 3, appendU32(nil, 8))...)
	b = append(b, frame(mRead, 4, appendVarints(nil, 0, 8192))...)
	b = append(b, frame(mAlloc, 5, appendVarints(nil, 0, 1<<16))...)
	b = append(b, frame(mVersion, 6, nil)...)
	b = append(b, frame(mResize, 7, appendVarints(nil, 1<<17))...)
	b = append(b, frame(mFlush, 8, nil)...)
	b = append(b, frame(mCancel, 3, nil)...)
	b = append(b, frame(mBye, 0, nil)...)
	return b
}

func mustZstdTB(t testing.TB, p []byte) []byte {
	c, err := newCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	return c.enc.EncodeAll(p, nil)
}

// FuzzSession feeds arbitrary bytes to an authenticated session on an
// in-memory disk, as both a target and a source session: it must end,
// without a panic, whatever the bytes.
func FuzzSession(f *testing.F) {
	f.Add(seedStream(f), true)
	f.Add(seedStream(f)[:100], false)
	f.Add([]byte{mWrite, 0xff, 0xff, 0xff, 0, 0, 0, 0}, true)
	cd, err := newCodec()
	if err != nil {
		f.Fatal(err)
	}
	s := &Server{o: ServerOptions{WriteTimeout: time.Second, Logf: func(string, ...any) {}}, codec: cd}
	f.Fuzz(func(t *testing.T, data []byte, write bool) {
		md := newMemDisk(make([]byte, 64<<10))
		ss := newSession(s, md, write)
		w := bufio.NewWriter(io.Discard)
		done := make(chan error, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		go func() { done <- ss.run(ctx, bytes.NewReader(data), w, func(time.Time) {}, func() {}) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Fatal("the session did not end")
		}
	})
}

// FuzzFrames decodes arbitrary bytes as frames and every message kind.
func FuzzFrames(f *testing.F) {
	f.Add(seedStream(f))
	f.Add(helloFrame(modeWrite, "token", "disk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			typ, id, p, err := readFrame(r, MaxPayload, func(_ uint8, n int) []byte { return make([]byte, n) })
			if err != nil {
				return
			}
			_, _ = parseHello(p)
			_, _ = parseHash(p)
			if o, err := parseOp(typ, id, p); err == nil && o.typ == mWrite && (o.n < 1 || o.n > MaxWrite) {
				t.Fatalf("accepted a write of %d bytes", o.n)
			}
			d := dec{b: p}
			_ = readStatus(&d, "x", 0, 0)
		}
	})
}

// FuzzDecodeHashes decodes arbitrary hash batches: whatever it accepts
// ascends, stays within the block size and the credit.
func FuzzDecodeHashes(f *testing.F) {
	enc := newHashEncoder(blockdiff.XXH3, 4096)
	for i := range 10 {
		enc.add(blockdiff.BlockHash{Off: int64(i) * 4096, Len: 4096, Zero: i%3 == 0, Sum: blockdiff.Sum{byte(i)}})
	}
	p, _ := enc.take()
	f.Add(bytes.Clone(p), uint16(8), uint16(100), int64(0))
	f.Add([]byte{0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f}, uint16(1), uint16(1000), int64(0))
	f.Fuzz(func(t *testing.T, p []byte, bs8 uint16, limit uint16, prev int64) {
		bs := int64(bs8%8192+1) * 512
		if prev < 0 {
			prev = -prev
		}
		if prev < 0 {
			prev = 0
		}
		out, end, err := decodeHashes(p, 16, bs, prev, int(limit), nil)
		if err != nil {
			return
		}
		if len(out) > int(limit) {
			t.Fatalf("%d blocks, credit %d", len(out), limit)
		}
		at := prev
		for _, b := range out {
			if b.Off < at || b.Len < 1 || int64(b.Len) > bs {
				t.Fatalf("bad block %+v after %d", b, at)
			}
			at = b.Off + int64(b.Len)
		}
		if at != end {
			t.Fatalf("end %d, last block ends %d", end, at)
		}
	})
}

// TestHashWireRoundTrip encodes random streams of block hashes (gaps,
// short blocks, zero runs) in random batches and decodes them back.
func TestHashWireRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 200 {
		bs := int64(512 * (1 + rng.IntN(16)))
		alg := blockdiff.XXH3
		if iter%2 == 1 {
			alg = blockdiff.BLAKE3
		}
		var in []blockdiff.BlockHash
		off := int64(rng.IntN(4)) * 512
		for range 1 + rng.IntN(300) {
			if rng.IntN(10) == 0 {
				off += int64(rng.IntN(5)) * bs // a gap (hints)
			}
			l := stdLen(off, bs)
			if rng.IntN(8) == 0 {
				l = int64(1 + rng.IntN(int(l))) // a short block
			}
			bh := blockdiff.BlockHash{Off: off, Len: int32(l), Zero: rng.IntN(3) > 0}
			if !bh.Zero {
				for i := range alg.Size() {
					bh.Sum[i] = byte(rng.Uint32())
				}
			}
			in = append(in, bh)
			off += l
		}
		enc := newHashEncoder(alg, bs)
		var got []blockdiff.BlockHash
		prev := int64(0)
		for i, bh := range in {
			enc.add(bh)
			if rng.IntN(20) == 0 || i == len(in)-1 {
				p, n := enc.take()
				var err error
				before := len(got)
				got, prev, err = decodeHashes(p, alg.Size(), bs, prev, n, got)
				if err != nil {
					t.Fatalf("iter %d: %v", iter, err)
				}
				if len(got)-before != n {
					t.Fatalf("iter %d: %d blocks decoded, %d encoded", iter, len(got)-before, n)
				}
			}
		}
		if len(got) != len(in) {
			t.Fatalf("iter %d: %d blocks back of %d", iter, len(got), len(in))
		}
		for i := range in {
			if in[i] != got[i] {
				t.Fatalf("iter %d block %d: %+v became %+v", iter, i, in[i], got[i])
			}
		}
	}
}
