package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/disk"
	"github.com/deltasync/deltasync/transfer"
)

// cmdVerify compares two disks: exit 0 if and only if they are identical
// (same size, same bytes; with -source-length, the target's bytes past
// the source's end are counted apart, not compared; with -vhd, a fixed
// VHD is the disk inside it). Either may be a path, a page blob URL or an
// agent:// disk; an agent disk hashes its own blocks (keyed, with a fresh
// random key) so it is not read across the network.
func cmdVerify(ctx context.Context, args []string) (err error) {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	var rf runFlags
	fs.Var(&rf.blockSize, "block-size", "comparison block size (0: the default, 64K)")
	asJSON := fs.Bool("json", false, "print one JSON object with the result")
	// How far the comparison went, for an interruption's message, and
	// the JSON object of a failure.
	var pos []string
	var compared, total int64
	defer func() {
		if err == nil || errors.Is(err, errDiffer) || errors.Is(err, errHelp) {
			return
		}
		err = interrupted(err, compared, total, "rerun the same command to verify again")
		if *asJSON {
			src, dst := "", ""
			if len(pos) == 2 {
				src, dst = pos[0], pos[1]
			}
			json.NewEncoder(os.Stdout).Encode(map[string]any{"identical": false, "bytes_compared": compared, "error": failure(err, src, dst)})
		}
	}()
	fs.BoolVar(&rf.allowLive, "allow-live", false, "read disks that are mounted or in use")
	hashName := fs.String("hash", "xxh3", "block hash when a disk hashes itself (agent://): xxh3 or blake3")
	registerVHD(fs, &rf.blob.vhd, false)
	sourceLength := fs.Bool("source-length", false, "compare only the source's length: a longer target (an image on a larger device) is identical when its first bytes are; "+
		"its excess is reported apart (bytes_excess in --json)")
	rf.agent.register(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: deltasync verify [flags] SRC DST\nexit status 0: identical; 1: they differ; 2: error; 130, 143: interrupted\n"+sizesNote)
		fs.PrintDefaults()
	}
	if pos, err = parseArgs(fs, args); err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("verify", "want SRC and DST, got %d arguments", len(pos))
	}
	alg := blockdiff.XXH3
	switch *hashName {
	case "xxh3":
	case "blake3":
		alg = blockdiff.BLAKE3
	default:
		return fmt.Errorf("-hash %q: want xxh3 or blake3", *hashName)
	}
	var ds [2]disk.Source
	for i := range ds {
		d, closer, err := openSource(pos[i], &rf)
		if err != nil {
			return fmt.Errorf("%s: %w", [2]string{"source", "target"}[i], err)
		}
		defer closer.Close()
		ds[i] = d
		// Read what the device holds, not what this host cached.
		if cd, ok := d.(disk.CacheDropper); ok {
			_ = cd.DropCache(0, 0)
		}
	}
	if err := checkSides(ds[0], ds[1]); err != nil {
		return err
	}
	var first *disk.Extent
	var differ, excess, extents int64
	fn := func(e disk.Extent) error {
		if e.Kind == disk.Excess {
			// The target's bytes past the source's end.
			excess += e.Len
			if *sourceLength {
				return nil
			}
		}
		if first == nil {
			first = &e
		}
		differ += e.Len
		extents++
		return nil
	}
	total = ds[0].Size()
	o := &blockdiff.Options{BlockSize: int(rf.blockSize), Progress: func(n int64) { compared += n }}
	var st blockdiff.Stats
	if bh, ok := ds[1].(transfer.BlockHasher); ok {
		key, kerr := blockdiff.NewKey()
		if kerr != nil {
			return kerr
		}
		h := blockdiff.Hasher{Alg: alg, Key: key}
		hctx, cancel := context.WithCancel(ctx)
		defer cancel()
		it, herr := bh.HashBlocks(hctx, h, o)
		if herr != nil {
			return herr
		}
		st, err = blockdiff.CompareHashes(ctx, ds[0], ds[0].Size(), h, it, ds[1].Size(), o, fn)
	} else {
		st, err = blockdiff.Compare(ctx, ds[0], ds[0].Size(), ds[1], ds[1].Size(), o, fn)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		out := map[string]any{"identical": first == nil, "bytes_compared": st.Compared, "bytes_differ": differ, "bytes_excess": excess, "extents": extents, "seconds": st.Elapsed.Seconds()}
		if first != nil {
			out["first_difference"] = first.Off
		}
		if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
			return err
		}
	}
	srcSize := ds[0].Size()
	switch {
	case first != nil && differ == excess:
		return fmt.Errorf("%w: first difference at offset %d (excess, %d bytes): identical over the source's %d bytes; the target has %d bytes more (-source-length compares only the source's length)",
			errDiffer, first.Off, excess, srcSize, excess)
	case first != nil && excess > 0:
		return fmt.Errorf("%w: first difference at offset %d (%s, %d bytes); %d bytes differ in %d extents, %d of them the target's bytes past the source's end",
			errDiffer, first.Off, first.Kind, first.Len, differ, extents, excess)
	case first != nil:
		return fmt.Errorf("%w: first difference at offset %d (%s, %d bytes); %d bytes differ in %d extents", errDiffer, first.Off, first.Kind, first.Len, differ, extents)
	}
	if !*asJSON {
		if excess > 0 {
			fmt.Printf("identical over the source's %d bytes (%s compared in %.2fs); the target has %d bytes more, not compared (-source-length)\n",
				srcSize, bytesHuman(st.Compared), st.Elapsed.Seconds(), excess)
		} else {
			fmt.Printf("identical: %s compared in %.2fs\n", bytesHuman(st.Compared), st.Elapsed.Seconds())
		}
	}
	return nil
}
