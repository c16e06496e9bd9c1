package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
)

// child runs one measured operation in this process and prints its own
// counters as one JSON object.
func child(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("child: no operation")
	}
	ctx := context.Background()
	var res any
	var err error
	switch op := args[0]; op {
	case "floor":
		res, err = readFloor(args[1:])
	case "compare":
		res, err = childCompare(ctx, args[1:])
	case "uploadpages":
		res, err = childUploadPages(ctx, args[1:])
	default:
		return fmt.Errorf("child: unknown operation %q", op)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// readFloor reads every file given, all in parallel, with plain 1 MiB
// reads: the least any tool that reads them all must spend.
func readFloor(paths []string) (map[string]any, error) {
	var wg sync.WaitGroup
	errs := make([]error, len(paths))
	var total int64
	var mu sync.Mutex
	for i, p := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(p)
			if err != nil {
				errs[i] = err
				return
			}
			defer f.Close()
			buf := make([]byte, 1<<20)
			var n int64
			for {
				m, rerr := f.Read(buf)
				n += int64(m)
				if rerr == io.EOF {
					break
				}
				if rerr != nil {
					err = rerr
					break
				}
			}
			mu.Lock()
			total += n
			mu.Unlock()
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return map[string]any{"bytes_read": total}, nil
}

func childCompare(ctx context.Context, args []string) (map[string]any, error) {
	if len(args) != 3 {
		return nil, fmt.Errorf("compare SRC DST BLOCKSIZE")
	}
	var bs int
	fmt.Sscan(args[2], &bs)
	var o blockdiff.Options
	fmt.Sscan(os.Getenv("BENCH_CONCURRENCY"), &o.Concurrency)
	fmt.Sscan(os.Getenv("BENCH_CHUNK"), &o.ChunkSize)
	fmt.Sscan(os.Getenv("BENCH_READAHEAD"), &o.ReadAhead)
	fmt.Sscan(os.Getenv("BENCH_DIRECT"), &o.Direct)
	o.BlockSize = bs
	src, ssize, err := openSized(args[0])
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dst, dsize, err := openSized(args[1])
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	var differ int64
	st, err := blockdiff.Compare(ctx, src, ssize, dst, dsize, &o, func(e disk.Extent) error {
		differ += e.Len
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"bytes_compared": st.Compared, "bytes_differ": differ, "extents": st.Extents, "seconds": st.Elapsed.Seconds()}, nil
}

func openSized(p string) (*os.File, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, err
	}
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, n, nil
}
