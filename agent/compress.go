package agent

import (
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Data in write frames and read replies is zstd-compressed, one zstd frame
// per message, when that pays; else it is sent raw. Whether it pays is
// estimated cheaply first: a few samples spread over the data are
// compressed, and only data whose samples shrink is compressed whole (and
// kept only if it shrank). Random or already compressed data thus costs a
// few microseconds, not a full compression, and goes raw.
const (
	flagCompressed = 0x01

	// minCompress: smaller data is sent raw.
	minCompress = 1 << 10
	// sampleSize, sampleEvery and samples: the estimate compresses
	// sampleSize bytes from one place per sampleEvery bytes of data (a
	// 16th of it), from at least one and at most samples places.
	sampleSize  = 4 << 10
	sampleEvery = 64 << 10
	samples     = 4
	// sampleRatio: samples must shrink below this fraction of their size
	// for the whole to be compressed.
	sampleRatio = 0.90
	// keepRatio: compressed data is sent only below this fraction of the
	// raw size.
	keepRatio = 0.97
)

// codec compresses and decompresses data; safe for concurrent use.
type codec struct {
	enc     *zstd.Encoder
	dec     *zstd.Decoder
	scratch sync.Pool // *[]byte for the estimate's samples
}

func newCodec() (*codec, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(MaxPayload), zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderConcurrency(0))
	if err != nil {
		enc.Close()
		return nil, err
	}
	return &codec{enc: enc, dec: dec}, nil
}

func (c *codec) close() {
	c.enc.Close()
	c.dec.Close()
}

// worthCompressing estimates from samples whether p compresses.
func (c *codec) worthCompressing(p []byte) bool {
	if len(p) < minCompress {
		return false
	}
	if len(p) <= 2*sampleSize {
		return true // small: just try
	}
	k := min(max(len(p)/sampleEvery, 1), samples)
	sp, _ := c.scratch.Get().(*[]byte)
	if sp == nil {
		sp = new([]byte)
	}
	defer c.scratch.Put(sp)
	scratch := *sp
	defer func() { *sp = scratch[:0] }()
	in, out := 0, 0
	first, step := (len(p)-sampleSize)/2, 0 // one sample: the middle
	if k > 1 {
		first, step = 0, (len(p)-sampleSize)/(k-1)
	}
	for i := range k {
		s := p[first+i*step : first+i*step+sampleSize]
		scratch = c.enc.EncodeAll(s, scratch[:0])
		in += len(s)
		out += len(scratch)
	}
	return float64(out) < sampleRatio*float64(in)
}

// compress appends p compressed to b and returns true when that pays;
// else it returns b unchanged and false.
func (c *codec) compress(b, p []byte) ([]byte, bool) {
	if !c.worthCompressing(p) {
		return b, false
	}
	start := len(b)
	z := c.enc.EncodeAll(p, b)
	if float64(len(z)-start) < keepRatio*float64(len(p)) {
		return z, true
	}
	return z[:start], false
}

// decode decompresses z, which must give exactly n bytes, into dst.
func (c *codec) decode(z []byte, dst []byte) error {
	n := len(dst)
	out, err := c.dec.DecodeAll(z, dst[:0:n])
	if err != nil {
		return protoErr("undecodable compressed data: %v", err)
	}
	if len(out) != n {
		return protoErr("compressed data gives %d bytes, not %d", len(out), n)
	}
	if n > 0 && &out[0] != &dst[0] {
		return fmt.Errorf("%w: decoder reallocated", ErrProtocol)
	}
	return nil
}
