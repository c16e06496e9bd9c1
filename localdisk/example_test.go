//go:build linux

package localdisk_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/deltasync/deltasync/localdisk"
)

// A new image file as a target: created empty, grown sparse with Resize,
// written, cleared with ZeroRange, flushed.
func ExampleOpenTarget() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "localdisk-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.img")

	d, err := localdisk.OpenTarget(path, localdisk.TargetOptions{Create: true})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	if err := d.Resize(ctx, 1<<20); err != nil {
		log.Fatal(err)
	}
	if _, err := d.WriteAt([]byte("hello, disk"), 4096); err != nil {
		log.Fatal(err)
	}
	ranges, _ := d.AllocatedRanges(ctx, 0, d.Size())
	fmt.Println("allocated:", ranges)

	// A second target on the same file is refused.
	_, err = localdisk.OpenTarget(path, localdisk.TargetOptions{})
	fmt.Println("second opener locked out:", errors.Is(err, localdisk.ErrLocked))

	if err := d.ZeroRange(ctx, 4096, 4096); err != nil {
		log.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	ranges, _ = d.AllocatedRanges(ctx, 0, d.Size())
	fmt.Println("allocated after ZeroRange:", ranges)
	// Output:
	// allocated: [{4096 4096}]
	// second opener locked out: true
	// allocated after ZeroRange: []
}
