package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"

	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// cmdDemo runs the main job on two demo images: seed a new target, change a
// few percent of the source, sync only the differences, verify.
func cmdDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	sz := size(512 << 20)
	fs.Var(&sz, "size", "size of the demo disk")
	change := fs.Float64("change", 3, "percent of 64 KiB blocks changed before the sync")
	dir := fs.String("dir", "", "folder for the images (default: a temporary folder, removed afterwards)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: deltasync demo [flags]\nseed a demo disk, change a few percent of it, sync the differences, verify\n"+sizesNote)
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("demo", "takes no arguments")
	}
	if sz <= 0 || sz%512 != 0 {
		return fmt.Errorf("-size %d: want a positive multiple of 512", sz)
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "deltasync-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	} else if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	srcPath, dstPath := filepath.Join(*dir, "source.img"), filepath.Join(*dir, "target.img")
	_ = os.Remove(dstPath)
	fmt.Printf("demo disks in %s\n", *dir)
	data, err := makeDemoDisk(srcPath, int64(sz))
	if err != nil {
		return err
	}
	fmt.Printf("source.img: %s, of which %s data and the rest zeros\n", bytesHuman(int64(sz)), bytesHuman(data))

	opts := transfer.Options{Journal: transfer.DirStore{Dir: filepath.Join(*dir, "state")}}
	st, err := runDemo(ctx, transfer.Seed, srcPath, dstPath, &opts, true)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	fmt.Printf("1. seed   %s\n", line(st))
	fmt.Printf("          target.img occupies %s on disk: zero blocks were not written\n", bytesHuman(allocated(dstPath)))

	changed, err := changeDemoDisk(srcPath, *change/100)
	if err != nil {
		return err
	}
	fmt.Printf("2. change %s of source.img rewritten in %.1f%% of its 64 KiB blocks (some now zeros)\n", bytesHuman(changed), *change)

	opts.Verify = true
	st, err = runDemo(ctx, transfer.Sync, srcPath, dstPath, &opts, false)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	fmt.Printf("3. sync   %s\n", line(st))
	if !st.Verified {
		return fmt.Errorf("sync ended without verification")
	}
	fmt.Printf("4. verify target.img re-read from the device and compared: identical (%.2fs)\n", st.Verify.Seconds())
	return nil
}

func line(st transfer.Stats) string {
	rate := float64(st.Compared) / max(st.Copy.Seconds(), 1e-9)
	return fmt.Sprintf("compared %s in %.2fs (%s/s): wrote %s, cleared %s, skipped %s as equal, %d extents",
		bytesHuman(st.Compared), st.Copy.Seconds(), bytesHuman(int64(rate)), bytesHuman(st.Written), bytesHuman(st.Zeroed), bytesHuman(st.Equal), st.Extents)
}

func runDemo(ctx context.Context, fn func(context.Context, disk.Source, disk.Target, *transfer.Options) (transfer.Stats, error), src, dst string, o *transfer.Options, create bool) (transfer.Stats, error) {
	s, err := localdisk.OpenSource(src, localdisk.SourceOptions{})
	if err != nil {
		return transfer.Stats{}, err
	}
	defer s.Close()
	var state string
	if ds, ok := o.Journal.(transfer.DirStore); ok {
		state = ds.Dir // the watchdog records beside the journals
	}
	d, err := localdisk.OpenTarget(dst, localdisk.TargetOptions{Create: create, StateDir: state})
	if err != nil {
		return transfer.Stats{}, err
	}
	st, err := fn(ctx, s, d, o)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return st, err
}

// makeDemoDisk writes a sparse image: random data in about 60% of its
// 1 MiB pieces, holes elsewhere. It returns the bytes of data.
func makeDemoDisk(path string, n int64) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Truncate(n); err != nil {
		return 0, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	noise := rand.NewChaCha8([32]byte{'d', 'e', 'm', 'o'})
	buf := make([]byte, 1<<20)
	var data int64
	for off := int64(0); off < n; off += int64(len(buf)) {
		if rng.IntN(10) < 4 {
			continue
		}
		b := buf[:min(int64(len(buf)), n-off)]
		noise.Read(b)
		if _, err := f.WriteAt(b, off); err != nil {
			return 0, err
		}
		data += int64(len(b))
	}
	return data, f.Sync()
}

// changeDemoDisk rewrites frac of the source's 64 KiB blocks: most with new
// data, one in eight with zeros.
func changeDemoDisk(path string, frac float64) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	const bs = 64 << 10
	blocks := fi.Size() / bs
	rng := rand.New(rand.NewPCG(3, 4))
	noise := rand.NewChaCha8([32]byte{'c', 'h', 'g'})
	buf := make([]byte, bs)
	seen := map[int64]bool{}
	for want := int(float64(blocks) * frac); len(seen) < want; {
		b := rng.Int64N(blocks)
		if seen[b] {
			continue
		}
		seen[b] = true
		if rng.IntN(8) == 0 {
			clear(buf)
		} else {
			noise.Read(buf)
		}
		if _, err := f.WriteAt(buf, b*bs); err != nil {
			return 0, err
		}
	}
	return int64(len(seen)) * bs, f.Sync()
}

func allocated(path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return -1
	}
	return st.Blocks * 512
}
