package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
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
	stateDir := fs.String("state-dir", "", "the replication's state folder, where its points' signatures are (default "+replicateDirDefault()+")")
	name := fs.String("name", "", "the replication's name (default: DST's file or blob name, as replicate takes it); for a group, the group's")
	member := fs.String("member", "", "a group's disk: the name of DST in the group file (its points' signatures are the group's)")
	fs.BoolVar(&rf.json, "json", false, "print JSON on stdout")
	fs.BoolVar(&rf.quiet, "q", false, "print nothing on stderr but errors")
	rf.blob.register(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: deltasync points list DST
       deltasync points restore DST POINT TO
       deltasync points delete DST POINT
       deltasync points verify DST POINT
       deltasync points groups GROUP
The recovery points 'deltasync replicate' keeps on DST (an image file: sparse
copies beside it or in -points-dir; a page blob: its snapshots). restore writes
the point into TO (an image file, a block device or a page blob; a missing file
or blob is created, an existing one gets only the differences); restore is the
way to a test failover without touching DST, and is checked against the
point's signature when the replication kept one. verify compares a point with
its signature (the hashes of what the replication synced into it): exit 0 if it
holds exactly that, 1 if not. delete deletes one point. groups lists the group
points of 'deltasync replicate -config' (in -state-dir): each names the point of
every member, frozen together; restore each member's point to restore the group.
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
	want := map[string]int{"list": 2, "restore": 4, "delete": 3, "verify": 3, "groups": 2}
	n, ok := want[pos[0]]
	if !ok {
		return usagef("points", "unknown action %q: want list, restore, verify or delete", pos[0])
	}
	if len(pos) != n {
		return usagef("points", "%s wants %d arguments, got %d", pos[0], n-1, len(pos)-1)
	}
	if *stateDir == "" {
		*stateDir = replicateDirDefault()
	}
	if pos[0] == "groups" {
		return listGroupPoints(ctx, *stateDir, pos[1], rf.json)
	}
	if *name == "" {
		*name = defaultName(pos[1])
	}
	sigDir := filepath.Join(*stateDir, *name+".signatures")
	if *member != "" {
		sigDir = filepath.Join(sigDir, *member)
	}
	sigOf := func(id string) string { return replicate.SignaturePath(sigDir, id) }
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
		os.Remove(sigOf(pos[2]))
		if !rf.quiet {
			fmt.Fprintf(os.Stderr, "deleted point %s of %s\n", pos[2], shown(pos[1]))
		}
		return nil
	case "verify":
		src, err := pts.OpenPoint(ctx, pos[2])
		if err != nil {
			return sided("source", fmt.Errorf("point %s: %w", pos[2], err))
		}
		defer src.Close()
		differ, err := replicate.VerifyPoint(ctx, src, sigOf(pos[2]))
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("point %s has no signature in %s (points cut before signatures were kept, or another -state-dir or -name)", pos[2], filepath.Dir(sigOf(pos[2])))
		}
		if err != nil {
			return err
		}
		if differ != 0 {
			fmt.Fprintf(os.Stderr, "deltasync: point %s of %s differs from its signature in %s: it is not what was replicated\n", pos[2], shown(pos[1]), bytesHuman(differ))
			return errDiffer
		}
		if !rf.quiet {
			fmt.Fprintf(os.Stderr, "point %s of %s holds exactly what was replicated into it (its signature %s)\n", pos[2], shown(pos[1]), sigOf(pos[2]))
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
	sigChecked := false
	if err == nil {
		// Proof against what was replicated, not only against the point.
		switch differ, verr := replicate.VerifyPoint(ctx, dst, sigOf(pos[2])); {
		case errors.Is(verr, os.ErrNotExist):
		case verr != nil:
			err = fmt.Errorf("the restore is done but checking it against the point's signature failed: %w", verr)
		case differ != 0:
			err = fmt.Errorf("the restored disk differs from what was replicated into point %s in %s (its signature): the point itself is not what was replicated", pos[2], bytesHuman(differ))
		default:
			sigChecked = true
		}
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if !rf.quiet {
		how := "verified it against the point"
		if sigChecked {
			how += " and against its signature (what was replicated)"
		}
		fmt.Fprintf(os.Stderr, "restored point %s of %s to %s and %s: %s\n", pos[2], shown(pos[1]), shown(pos[3]), how, summary("seed", st))
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

// listGroupPoints prints the manifests of group name, oldest first.
func listGroupPoints(ctx context.Context, stateDir, name string, asJSON bool) error {
	dir := filepath.Join(stateDir, name+".manifests")
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("no group %q in %s (%v): check the name and -state-dir", name, stateDir, err)
	}
	ms, err := replicate.DirManifests{Dir: dir}.List(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		if ms == nil {
			ms = []replicate.Manifest{}
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ms)
	}
	for _, m := range ms {
		fmt.Printf("%s  frozen %s\n", m.ID, m.Frozen.UTC().Format(time.RFC3339Nano))
		for _, d := range m.Disks {
			fmt.Printf("  %-12s point %s  %s\n", d.Name, d.Point, bytesHuman(d.Size))
		}
	}
	return nil
}
