package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/replicate"
	rblob "github.com/deltasync/deltasync/replicate/blob"
	"github.com/deltasync/deltasync/transfer"
)

// cmdPoints lists, restores and deletes the recovery points of a
// replication target.
func cmdPoints(ctx context.Context, args []string) error {
	var rf runFlags
	fs := flag.NewFlagSet("points", flag.ContinueOnError)
	rf.cmd = "points"
	pointsDir := fs.String("points-dir", "", "image file DST: the folder of its points, as given to 'deltasync replicate' (default: DST's folder)")
	fs.BoolVar(&rf.json, "json", false, "print JSON on stdout")
	fs.BoolVar(&rf.quiet, "q", false, "print nothing on stderr but errors")
	rf.blob.register(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: deltasync points list DST
       deltasync points restore DST POINT TO
       deltasync points delete DST POINT
The recovery points 'deltasync replicate' keeps on DST (an image file: sparse
copies beside it or in -points-dir; a page blob: its snapshots). restore writes
the point into TO (an image file, a block device or a page blob; a missing file
or blob is created, an existing one gets only the differences); restore is the
way to a test failover without touching DST. delete deletes one point.
`)
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("points", "want list, restore or delete")
	}
	want := map[string]int{"list": 2, "restore": 4, "delete": 3}
	n, ok := want[pos[0]]
	if !ok {
		return usagef("points", "unknown action %q: want list, restore or delete", pos[0])
	}
	if len(pos) != n {
		return usagef("points", "%s wants %d arguments, got %d", pos[0], n-1, len(pos)-1)
	}
	pts, closer, err := openPoints(pos[1], *pointsDir)
	if err != nil {
		return sided("target", err)
	}
	defer closer()
	switch pos[0] {
	case "list":
		list, err := pts.ListPoints(ctx)
		if err != nil {
			return err
		}
		if rf.json {
			if list == nil {
				list = []replicate.Point{}
			}
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(list)
		}
		for _, p := range list {
			fmt.Printf("%s  %s  %s\n", p.ID, p.Time.UTC().Format(time.RFC3339Nano), bytesHuman(p.Size))
		}
		if len(list) == 0 && !rf.quiet {
			fmt.Fprintln(os.Stderr, "no recovery points on", shown(pos[1]))
		}
		return nil
	case "delete":
		if err := pts.DeletePoint(ctx, pos[2]); err != nil {
			return err
		}
		if !rf.quiet {
			fmt.Fprintf(os.Stderr, "deleted point %s of %s\n", pos[2], shown(pos[1]))
		}
		return nil
	}
	// restore
	src, err := pts.OpenPoint(ctx, pos[2])
	if err != nil {
		return sided("source", fmt.Errorf("point %s: %w", pos[2], err))
	}
	defer src.Close()
	rf.blob.srcSize = src.Size()
	dst, err := openTarget(pos[3], &rf, true)
	if err != nil {
		return sided("target", err)
	}
	// No journal: an interrupted restore starts over (a point is
	// read-only, so it costs time, never correctness).
	st, err := transfer.Seed(ctx, src, dst, &transfer.Options{Verify: true, NoJournal: true})
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if !rf.quiet {
		fmt.Fprintf(os.Stderr, "restored point %s of %s to %s and verified it: %s\n", pos[2], shown(pos[1]), shown(pos[3]), summary("seed", st))
	}
	if rf.json {
		return printJSON("restore", pos[1]+"@"+pos[2], pos[3], st, &rf.blob, "", nil)
	}
	return nil
}

// openPoints opens the recovery points of a replication target without
// writing it (no lease is taken on a page blob).
func openPoints(arg, pointsDir string) (replicate.Points, func() error, error) {
	if isBlobURL(arg) {
		octx, stop := openContext()
		defer stop()
		b, err := pageblob.Open(octx, arg, nil)
		if err != nil {
			return nil, nil, err
		}
		return rblob.Target{Blob: b}, b.Close, nil
	}
	d, err := localdisk.OpenSource(arg, localdisk.SourceOptions{AllowLive: true})
	if err != nil {
		return nil, nil, err
	}
	return &replicate.FileTarget{Disk: d, Dir: pointsDir}, d.Close, nil
}
