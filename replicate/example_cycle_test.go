package replicate_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/replicate"
)

// A Replicator's cycles: the first copies what differs (here, all of a new
// target); after the source changes, the next writes only the changed
// block (a local source without a dirty-range feed is compared whole).
// Each cycle leaves a recovery point of the target.
func ExampleReplicator_Cycle() {
	dir, _ := os.MkdirTemp("", "replicate-example")
	defer os.RemoveAll(dir)
	img := make([]byte, 1<<20)
	for i := range img {
		img[i] = byte(i*7 + i/4096)
	}
	srcPath := filepath.Join(dir, "source.img")
	os.WriteFile(srcPath, img, 0o644)

	src, err := localdisk.OpenSource(srcPath, localdisk.SourceOptions{AllowLive: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer src.Close()
	dst, err := localdisk.OpenTarget(filepath.Join(dir, "target.img"), localdisk.TargetOptions{Create: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dst.Close()
	r, err := replicate.New(replicate.Config{
		Source: replicate.Quiesced(src, nil), // the source is quiet while a cycle freezes it
		Target: &replicate.FileTarget{Disk: dst, Dir: dir},
		Policy: replicate.Policy{KeepLast: 2, KeepHourly: -1},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close(context.Background())
	for i := range 2 {
		if i == 1 {
			f, _ := os.OpenFile(srcPath, os.O_WRONLY, 0)
			f.WriteAt([]byte("changed"), 300<<10)
			f.Close()
		}
		rep, err := r.Cycle(context.Background())
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("cycle %d: compared %d, written %d, point cut: %v\n", rep.Cycle, rep.Stats.Compared, rep.Stats.Written, rep.Point.ID != "")
	}
	// Output:
	// cycle 1: compared 1048576, written 1048576, point cut: true
	// cycle 2: compared 1048576, written 65536, point cut: true
}
