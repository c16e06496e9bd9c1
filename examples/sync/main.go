// Command sync shows delta synchronisation on two image files in a
// temporary directory: a sync that compares both disks whole, then
// continuous replication in cycles, hinted by a dirty-range feed, each
// cycle leaving a recovery point.
//
//	go run ./examples/sync
package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/replicate"
	"github.com/deltasync/deltasync/transfer"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sync:", err)
		os.Exit(1)
	}
}

const size = 64 << 20

func run() error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "deltasync-sync-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srcPath, dstPath := filepath.Join(dir, "source.img"), filepath.Join(dir, "target.img")
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{2}).Read(data)
	if err := os.WriteFile(srcPath, data, 0o644); err != nil {
		return err
	}
	// The target is an old copy of the source: 1% of it differs.
	rng := rand.New(rand.NewPCG(1, 2))
	old := append([]byte(nil), data...)
	for range size / 100 / (64 << 10) {
		off := rng.IntN(size/(64<<10)) * (64 << 10)
		old[off] ^= 0xff
	}
	if err := os.WriteFile(dstPath, old, 0o644); err != nil {
		return err
	}

	src, err := localdisk.OpenSource(srcPath, localdisk.SourceOptions{AllowLive: true})
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := localdisk.OpenTarget(dstPath, localdisk.TargetOptions{})
	if err != nil {
		return err
	}
	defer dst.Close()

	// 1. A sync: both disks compared whole, only differences written.
	st, err := transfer.Sync(ctx, src, dst, &transfer.Options{NoJournal: true})
	if err != nil {
		return err
	}
	fmt.Printf("sync:    compared %d MiB, wrote %d KiB in %d extents\n", st.Compared>>20, st.Written>>10, st.Extents)

	// 2. Replication in cycles. The program that writes the source marks
	// what it writes in a dirty map (a real deployment fills it from
	// device-mapper era or thin_delta); each cycle compares and sends
	// only those ranges, and cuts a recovery point (a copy of the image).
	dm, err := replicate.OpenDirtyMap(filepath.Join(dir, "source.dirty"), size, 0)
	if err != nil {
		return err
	}
	defer dm.Close()
	r, err := replicate.New(replicate.Config{
		Source: replicate.Quiesced(src, nil), // nothing writes during a cycle here
		Target: &replicate.FileTarget{Disk: dst, Dir: dir},
		Dirty:  dm,
		Policy: replicate.Policy{KeepLast: 2, KeepHourly: -1},
	})
	if err != nil {
		return err
	}
	w, err := os.OpenFile(srcPath, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer w.Close()
	for i := range 4 {
		if i > 0 { // the workload writes 1% of the disk
			p := make([]byte, 64<<10)
			for range size / 100 / len(p) {
				rand.NewChaCha8([32]byte{byte(i)}).Read(p)
				off := int64(rng.IntN(size/len(p)) * len(p))
				if _, err := w.WriteAt(p, off); err != nil {
					return err
				}
				dm.Mark(off, int64(len(p)))
			}
		}
		rep, err := r.Cycle(ctx)
		if err != nil {
			return err
		}
		how := "hinted by the " + rep.Reason
		if rep.Full {
			how = "compared whole (" + rep.Reason + ")"
		}
		fmt.Printf("cycle %d: %s: compared %d KiB, sent %d KiB, points kept %d, deleted %d\n",
			rep.Cycle, how, rep.Stats.Compared>>10, rep.Bytes()>>10, len(r.Status().Points), len(rep.Deleted))
	}
	return nil
}
