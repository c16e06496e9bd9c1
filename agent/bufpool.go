package agent

import "sync"

// bufPool keeps payload buffers in a few size classes; a write of
// MaxWrite (raw or decompressed) fits the fourth.
type bufPool struct {
	classes [len(poolSizes)]sync.Pool
}

var poolSizes = [...]int{smallFrame, 64 << 10, 1 << 20, MaxWrite + writePrefix, MaxPayload}

func newBufPool() *bufPool { return &bufPool{} }

func (bp *bufPool) get(n int) []byte {
	for i, sz := range poolSizes {
		if n <= sz {
			if b, ok := bp.classes[i].Get().(*[]byte); ok {
				return (*b)[:n]
			}
			return make([]byte, n, sz)
		}
	}
	return make([]byte, n)
}

func (bp *bufPool) put(b []byte) {
	for i, sz := range poolSizes {
		if cap(b) == sz {
			b = b[:0]
			bp.classes[i].Put(&b)
			return
		}
	}
}
