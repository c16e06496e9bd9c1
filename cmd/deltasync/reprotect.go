package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/deltasync/deltasync/pageblob"
	"github.com/deltasync/deltasync/replicate"
)

const reprotectUsage = `usage: deltasync reprotect [flags] FAILED-OVER ORIGINAL
Reprotect (failback), as Azure Site Recovery does it: make the disk a failover
ran on (FAILED-OVER, now the source) replicate back to the original disk
(ORIGINAL), sending only what differs:
  - ORIGINAL missing: it is created and seeded (zero blocks not sent);
  - ORIGINAL exists: its prior state is kept first (a point: a snapshot of a
    page blob, a copy of an image file), then only the differences are sent;
    with -common (page blobs that still share the failover's recovery point),
    the differences are the union of both sides' changes since it, and nothing
    else is compared.
Each phase is printed with its bytes and seconds (-json: one object on stdout).
Then it stops (-then stop), or goes on replicating in cycles exactly as
'deltasync replicate FAILED-OVER ORIGINAL' with the same flags (-then replicate).

Exit status: 0 done (or, with -then replicate, stopped by SIGINT or SIGTERM
after a clean stop); 2 an error; 130 or 143 interrupted before replication.
`

func cmdReprotect(ctx context.Context, args []string) error {
	var rf replFlags
	fs := newReplicateFlags(&rf, "reprotect", reprotectUsage)
	common := fs.String("common", "", "page blobs: SOURCE_SNAPSHOT,TARGET_SNAPSHOT, the failover's recovery point as a snapshot on each side")
	then := fs.String("then", "stop", "when the differences are sent: stop, or replicate (in cycles, as 'deltasync replicate')")
	asJSON := fs.Bool("json", false, "print one JSON object with the phases on stdout")
	pos, err := parseArgs(fs, args)
	if err == nil && len(pos) != 2 {
		err = usagef("reprotect", "want FAILED-OVER and ORIGINAL, got %d arguments", len(pos))
	}
	if err == nil && *then != "stop" && *then != "replicate" {
		err = usagef("reprotect", "-then %q: want stop or replicate", *then)
	}
	var cp *replicate.CommonPoint
	if err == nil && *common != "" {
		a, b, ok := strings.Cut(*common, ",")
		if !ok || a == "" || b == "" {
			err = usagef("reprotect", "-common %q: want SOURCE_SNAPSHOT,TARGET_SNAPSHOT", *common)
		}
		cp = &replicate.CommonPoint{SourceID: a, TargetID: b}
	}
	if err != nil {
		return err
	}
	srcArg, dstArg := pos[0], pos[1]
	x, policy, err := newReplication(&rf, srcArg, dstArg)
	if err != nil {
		return err
	}
	rep, err := x.reprotect(ctx, &rf, policy, cp, srcArg, dstArg)
	if rep != nil {
		printPhases(rep)
		if *asJSON {
			printReprotectJSON(rep, err)
		}
	}
	if err != nil {
		x.close(context.WithoutCancel(ctx))
		if x.lock != nil {
			x.lock.Close()
		}
		return interrupted(err, -1, 0, "rerun the same command (a rerun keeps the original's state as it is then, as another prior-state point)")
	}
	x.r = rep.Replicator
	if *then == "replicate" {
		return x.serve(ctx, &rf, srcArg, dstArg)
	}
	x.writeStatus("stopped")
	cerr := x.close(context.WithoutCancel(ctx))
	x.lock.Close()
	if cerr != nil {
		return fmt.Errorf("saving the state: %w", cerr)
	}
	return nil
}

func (x *replication) reprotect(ctx context.Context, f *replFlags, policy replicate.Policy, cp *replicate.CommonPoint, srcArg, dstArg string) (*replicate.ReprotectReport, error) {
	if err := x.lockState(); err != nil {
		return nil, err
	}
	rf := &f.rf
	o, err := rf.options()
	if err != nil {
		return nil, err
	}
	freezer, size, err := x.openSource(ctx, f, srcArg)
	if err != nil {
		return nil, sided("source", err)
	}
	rf.blob.srcSize = size
	missing, err := targetMissing(dstArg)
	if err != nil {
		return nil, sided("target", err)
	}
	var tgt replicate.Target
	blob := isBlobURL(dstArg)
	if !missing {
		if tgt, blob, err = x.openTarget(ctx, f, dstArg); err != nil {
			return nil, sided("target", err)
		}
	}
	cfg, err := x.config(f, policy, o, blob)
	if err != nil {
		return nil, err
	}
	cfg.Reserve = 1 // the prior state
	if cp != nil {
		cfg.Reserve++ // the common point
	}
	rc := replicate.ReprotectConfig{Source: freezer, Target: tgt, Common: cp, Replication: cfg}
	if missing {
		x.log.Info("the original is missing: it is created and seeded", "target", shown(dstArg))
		rc.Create = func(ctx context.Context, n int64) (replicate.Target, error) {
			rf.blob.srcSize = n
			t, _, err := x.openTarget(ctx, f, dstArg)
			return t, err
		}
	}
	return replicate.Reprotect(ctx, rc)
}

// targetMissing reports whether the original disk does not exist.
func targetMissing(arg string) (bool, error) {
	if isBlobURL(arg) {
		octx, stop := openContext()
		defer stop()
		b, err := pageblob.Open(octx, arg, nil)
		if errors.Is(err, pageblob.ErrNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return false, b.Close()
	}
	if isAgentURL(arg) {
		return false, fmt.Errorf("%s: an agent:// original keeps no recovery points: run reprotect on its machine", arg)
	}
	_, err := os.Stat(arg)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	return false, err
}

func printPhases(rep *replicate.ReprotectReport) {
	for _, p := range rep.Phases {
		fmt.Fprintf(os.Stderr, "reprotect: %-18s %10s sent %10s read %8.3f s  %s\n", p.Name, bytesHuman(p.Sent), bytesHuman(p.Read), p.Duration.Seconds(), p.Detail)
	}
}

func printReprotectJSON(rep *replicate.ReprotectReport, err error) {
	type phase struct {
		Name    string  `json:"name"`
		Detail  string  `json:"detail"`
		Seconds float64 `json:"seconds"`
		Sent    int64   `json:"sent"`
		Read    int64   `json:"read"`
	}
	out := struct {
		Phases     []phase `json:"phases"`
		Seeded     bool    `json:"seeded"`
		PriorState string  `json:"prior_state,omitempty"`
		Error      string  `json:"error,omitempty"`
	}{Phases: []phase{}, Seeded: rep.Seeded, PriorState: rep.PriorState.ID}
	for _, p := range rep.Phases {
		out.Phases = append(out.Phases, phase{p.Name, p.Detail, p.Duration.Seconds(), p.Sent, p.Read})
	}
	if err != nil {
		out.Error = message(err)
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
