package transfer_test

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/deltasync/deltasync/transfer"
)

// memImage is a disk in memory: enough for a Source or a Target.
type memImage struct {
	mu sync.Mutex
	b  []byte
}

func (m *memImage) Size() int64 { return int64(len(m.b)) }

func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.b[off:], p), nil
}

func Example() {
	const block = 4096
	src := &memImage{b: make([]byte, 1<<20)}
	for i := range 64 << 10 {
		src.b[i] = byte(i%251 + 1) // 64 KiB of data, then zeros
	}
	dst := &memImage{b: make([]byte, 1<<20)}
	copy(dst.b, src.b)
	dst.b[100] ^= 0xff             // one changed byte: one block to copy
	copy(dst.b[8*block:], "stale") // another
	dst.b[512<<10] = 1             // data where the source has zeros: cleared
	dst.b[512<<10+2*block] = 1     // and another, not adjacent

	st, err := transfer.Sync(context.Background(), src, dst, &transfer.Options{BlockSize: block, Verify: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("compared:", st.Compared)
	fmt.Println("equal:", st.Equal)
	fmt.Println("extents:", st.Extents)
	fmt.Println("written:", st.Written, "in", st.Writes, "writes")
	fmt.Println("zeroed:", st.Zeroed, "in", st.Zeroes, "writes of zeros")
	fmt.Println("verified:", st.Verified, "journaled:", st.Journaled)
	// Output:
	// compared: 1048576
	// equal: 1032192
	// extents: 4
	// written: 8192 in 2 writes
	// zeroed: 8192 in 2 writes of zeros
	// verified: true journaled: false
}
