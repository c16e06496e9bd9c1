// Command seed seeds a new target disk from a source disk: the first full
// copy, in which blocks of zeros are not written at all. It works on two
// image files in a temporary directory and prints what it did.
//
//	go run ./examples/seed
package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "deltasync-seed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// A 32 MiB source disk: every other MiB holds data, the rest zeros.
	const size = 32 << 20
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	for off := 0; off < size; off += 2 << 20 {
		rng.Read(data[off : off+1<<20])
	}
	srcPath := filepath.Join(dir, "source.img")
	if err := os.WriteFile(srcPath, data, 0o644); err != nil {
		return err
	}

	src, err := localdisk.OpenSource(srcPath, localdisk.SourceOptions{})
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := localdisk.OpenTarget(filepath.Join(dir, "target.img"), localdisk.TargetOptions{Create: true})
	if err != nil {
		return err
	}
	defer dst.Close()

	st, err := transfer.Seed(ctx, src, dst, &transfer.Options{NoJournal: true, Verify: true})
	if err != nil {
		return err
	}
	fmt.Printf("source: %d MiB\n", size>>20)
	fmt.Printf("target grown from %d to %d bytes\n", st.ResizedFrom, dst.Size())
	fmt.Printf("written: %d MiB of data; zero blocks not written: %d MiB\n", st.Written>>20, (size-st.Written)>>20)
	fmt.Printf("target proven empty (not read): %v\n", st.ProvenEmpty)
	fmt.Printf("verified: %v\n", st.Verified)
	return nil
}
