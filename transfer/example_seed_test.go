package transfer_test

import (
	"context"
	"fmt"

	"github.com/deltasync/deltasync/disk/disktest"
	"github.com/deltasync/deltasync/transfer"
)

// Seeding a new target: only the source's data is written; its zeros are
// not sent, since a new target (one a Zeroer with nothing allocated, as
// disktest's in-memory disk) already reads as zeros.
func ExampleSeed() {
	img := make([]byte, 1<<20)
	for i := range 64 << 10 {
		img[i] = byte(i%251 + 1) // 64 KiB of data, then zeros
	}
	src := disktest.NewMem(img)
	dst := disktest.NewMem(nil) // empty: Seed grows it (a Resizer)

	st, err := transfer.Seed(context.Background(), src, dst, &transfer.Options{BlockSize: 4096, Verify: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("target size:", dst.Size())
	fmt.Println("written:", st.Written, "zeroed:", st.Zeroed)
	fmt.Println("verified:", st.Verified)
	// Output:
	// target size: 1048576
	// written: 65536 zeroed: 0
	// verified: true
}
