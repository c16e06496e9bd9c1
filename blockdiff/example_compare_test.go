package blockdiff_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// Compare streams the extents where two disks differ: Data to copy,
// Zero to clear, Excess past the source's end.
func ExampleCompare() {
	src := make([]byte, 256<<10)
	dst := make([]byte, 288<<10) // 32 KiB longer
	copy(src[4096:], "new data") // a block the target lacks
	dst[64<<10] = 1              // data where the source has zeros
	_, err := blockdiff.Compare(context.Background(),
		bytes.NewReader(src), int64(len(src)), bytes.NewReader(dst), int64(len(dst)),
		&blockdiff.Options{BlockSize: 4096}, func(e disk.Extent) error {
			fmt.Println(e)
			return nil
		})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// data[4096,+4096)
	// zero[65536,+4096)
	// excess[262144,+32768)
}
