package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/localdisk"
)

// cmdVerify compares two disks byte for byte: exit 0 if and only if they
// are identical (same size, same bytes).
func cmdVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	var bs size
	fs.Var(&bs, "block-size", "comparison block size (default 64K)")
	asJSON := fs.Bool("json", false, "print one JSON object with the result")
	allowLive := fs.Bool("allow-live", false, "read disks that are mounted or in use")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: deltasync verify [flags] SRC DST\nexit status 0: identical; 1: they differ; 2: error")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return fmt.Errorf("verify wants SRC and DST")
	}
	var ds [2]*localdisk.Disk
	for i := range ds {
		d, err := localdisk.OpenSource(fs.Arg(i), localdisk.SourceOptions{AllowLive: *allowLive})
		if err != nil {
			return err
		}
		defer d.Close()
		ds[i] = d
		// Read what the device holds, not what this host cached.
		_ = d.DropCache(0, 0)
	}
	var first *blockdiff.Extent
	var differ int64
	st, err := blockdiff.Compare(ctx, ds[0], ds[0].Size(), ds[1], ds[1].Size(), &blockdiff.Options{BlockSize: int(bs)}, func(e blockdiff.Extent) error {
		if first == nil {
			first = &e
		}
		differ += e.Len
		return nil
	})
	if err != nil {
		return err
	}
	if *asJSON {
		out := map[string]any{"identical": first == nil, "bytes_compared": st.Compared, "bytes_differ": differ, "extents": st.Extents, "seconds": st.Elapsed.Seconds()}
		if first != nil {
			out["first_difference"] = first.Off
		}
		if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
			return err
		}
	}
	if first != nil {
		return fmt.Errorf("%w: first difference at offset %d (%s, %d bytes); %d bytes differ in %d extents", errDiffer, first.Off, first.Kind, first.Len, differ, st.Extents)
	}
	if !*asJSON {
		fmt.Printf("identical: %s compared in %.2fs\n", bytesHuman(st.Compared), st.Elapsed.Seconds())
	}
	return nil
}
