package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/deltasync/deltasync/pageblob"
)

// snapshotJSON is one snapshot in the output of 'snapshots --json'.
type snapshotJSON struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	Size int64     `json:"size"`
	// Kind is recovery-point or prior for the snapshots deltasync took,
	// empty for others.
	Kind string `json:"kind,omitempty"`
}

// cmdSnapshots lists the snapshots of a page blob, oldest first: the
// recovery points seed and sync cut (-snapshot), the prior states they
// kept (-keep-prior), and snapshots taken by anything else.
func cmdSnapshots(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("snapshots", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print one JSON object: the blob and its snapshots")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: deltasync snapshots [flags] URL\n"+
			"lists the snapshots of a page blob (recovery points, prior states, others), oldest first;\n"+
			"listing needs list permission on the container (a SAS for the blob alone cannot list)")
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || !isBlobURL(pos[0]) {
		return usagef("snapshots", "want one page blob URL")
	}
	b, err := pageblob.Open(ctx, pos[0], nil)
	if err != nil {
		return err
	}
	defer b.Close()
	list, err := b.ListSnapshots(ctx)
	if errors.Is(err, pageblob.ErrAuth) {
		return fmt.Errorf("%w (listing snapshots needs list permission on the container: a SAS for the blob alone cannot list)", err)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		out := struct {
			Blob      string         `json:"blob"`
			Snapshots []snapshotJSON `json:"snapshots"`
		}{Blob: b.URL(), Snapshots: []snapshotJSON{}}
		for _, s := range list {
			out.Snapshots = append(out.Snapshots, snapshotJSON{ID: s.ID, Time: s.Time, Size: s.Size, Kind: s.Kind})
		}
		return json.NewEncoder(os.Stdout).Encode(out)
	}
	if len(list) == 0 {
		fmt.Printf("%s has no snapshots\n", b.URL())
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SNAPSHOT\tTIME\tSIZE\tKIND")
	for _, s := range list {
		when := "-"
		if !s.Time.IsZero() {
			when = s.Time.Local().Format("2006-01-02 15:04:05 MST")
		}
		kind := s.Kind
		if kind == "" {
			kind = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.ID, when, bytesHuman(s.Size), kind)
	}
	return w.Flush()
}
