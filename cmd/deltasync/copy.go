package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"syscall"

	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// result is the JSON object printed by --json.
type result struct {
	Command       string `json:"command"`
	Source        string `json:"source"`
	Target        string `json:"target"`
	BytesCompared int64  `json:"bytes_compared"`
	BytesEqual    int64  `json:"bytes_equal"`
	BytesWritten  int64  `json:"bytes_written"`
	BytesZeroed   int64  `json:"bytes_zeroed"`
	Extents       int64  `json:"extents"`
	SourceRead    int64  `json:"source_bytes_read"`
	TargetRead    int64  `json:"target_bytes_read"`
	Resumed       bool   `json:"resumed"`
	ResumedFrom   int64  `json:"resumed_from"`
	// JournalDiscardedReason says why a journal found for this run was
	// not trusted (the run then compared everything).
	JournalDiscardedReason string  `json:"journal_discarded_reason,omitempty"`
	Verified               bool    `json:"verified"`
	CopySeconds            float64 `json:"copy_seconds"`
	FlushSeconds           float64 `json:"flush_seconds"`
	VerifySeconds          float64 `json:"verify_seconds"`
	Seconds                float64 `json:"seconds"`
	// Page blob targets (blob.go): the snapshot keeping the target's
	// state from before the run, and the recovery point the run cut.
	PriorSnapshot string `json:"prior_snapshot,omitempty"`
	RecoveryPoint string `json:"recovery_point,omitempty"`
	// NoRecoveryPoint says why a run with -snapshot cut none: it wrote
	// nothing (points.go).
	NoRecoveryPoint string `json:"no_recovery_point,omitempty"`
	// DeletedRecoveryPoints are the old recovery points -keep-* deleted.
	DeletedRecoveryPoints []string `json:"deleted_recovery_points,omitempty"`
	// Page blob sides: the kind of credential of each (sas, shared-key,
	// connection-string, azure-ad, emulator; never the secret), and why
	// the server-side copy fell back to reading and writing.
	SourceCredential string `json:"source_credential,omitempty"`
	TargetCredential string `json:"target_credential,omitempty"`
	CopyFallback     string `json:"copy_fallback,omitempty"`
	// Error is what ended a run that failed (failure.go); the figures
	// above are then those of the work done until it stopped.
	Error *jsonError `json:"error,omitempty"`
}

func cmdCopy(ctx context.Context, name string, args []string) error {
	var rf runFlags
	fs := newFlagSet(name, &rf)
	pos, err := parseArgs(fs, args)
	var label string
	if err == nil {
		var src, dst string
		src, dst, label, err = rf.idx.resolve(name, pos)
		pos = []string{src, dst}
	}
	if err == nil && rf.idx.on() && (rf.offset != 0 || rf.length != 0) {
		err = usagef(name, "-index picks the range itself: give no -offset or -length")
	}
	if err != nil {
		// A usage error may stop the parse before -json: look for it.
		rf.json = rf.json || slices.Contains(args, "-json") || slices.Contains(args, "--json")
		if rf.json && !errors.Is(err, errHelp) {
			printJSON(name, "", "", transfer.Stats{}, &rf.blob, "", failure(err, "", ""))
		}
		return err
	}
	srcArg, dstArg := pos[0], pos[1]
	rw := &runWatch{w: os.Stderr, quiet: rf.quiet, lo: int64(rf.offset), journal: rf.journalPath}
	st, err := copyDisks(ctx, name, srcArg, dstArg, &rf, rw)
	if err != nil {
		err = explain(err, &rf)
		// How far it went: what its journal calls done, from where a
		// rerun resumes.
		at, total := rw.position()
		then := "rerun the same command to resume"
		switch {
		case st.Journaled && st.JournalWatermark >= rw.lo:
			at = st.JournalWatermark - rw.lo
		case rf.noJournal:
			then = "no journal was kept (-no-journal): a rerun starts over"
		}
		err = interrupted(err, at, total, then)
		if rf.json {
			printJSON(name, srcArg, dstArg, st, &rf.blob, "", failure(err, srcArg, dstArg))
		}
		return err
	}
	if !rf.quiet {
		// One line on stderr, terminal or not (with -json too: stdout
		// carries the object).
		prefix := ""
		if label != "" {
			prefix = label + ": "
		}
		fmt.Fprintln(os.Stderr, prefix+summary(name, st)+rf.blob.credentialNote())
	}
	if rf.json {
		return printJSON(name, srcArg, dstArg, st, &rf.blob, rf.noPoint, nil)
	}
	return nil
}

// copyDisks opens both disks and runs Seed or Sync between them; rw
// follows the run's progress.
func copyDisks(ctx context.Context, name, srcArg, dstArg string, rf *runFlags, rw *runWatch) (transfer.Stats, error) {
	o, err := rf.options()
	if err != nil {
		return transfer.Stats{}, err
	}
	if sameDisk(srcArg, dstArg) {
		return transfer.Stats{}, fmt.Errorf("%w: %s and %s are one file or device", transfer.ErrSameDisk, srcArg, dstArg)
	}
	_, keep, _ := rf.blob.keep.policy()
	if keep && (!isBlobURL(dstArg) || !rf.blob.snapshot) {
		return transfer.Stats{}, usagef(name, "-keep-* deletes old recovery points of a page blob target cut with -snapshot; %s has none (for files, use 'deltasync replicate')", shown(dstArg))
	}
	src, srcCloser, err := openSource(srcArg, rf)
	if err != nil {
		return transfer.Stats{}, sided("source", err)
	}
	defer srcCloser.Close()
	rf.blob.srcSize = src.Size()
	if rf.idx.on() && rf.idx.fleet == "" {
		off, n, ok := slice(rf.idx.index, rf.idx.count, src.Size(), sliceUnit(int64(o.BlockSize)))
		if !ok {
			fmt.Fprintf(os.Stderr, "deltasync: index %d/%d: the slice is empty (%d bytes in %d slices): nothing to do\n", rf.idx.index, rf.idx.count, src.Size(), rf.idx.count)
			return transfer.Stats{}, nil
		}
		o.Offset, o.Length = off, n
		rf.offset, rf.length = size(off), size(n)
		rw.lo = off
	}
	rw.size = max(0, src.Size()-o.Offset)
	if o.Length > 0 {
		rw.size = min(rw.size, o.Length)
	}
	// seed creates a missing file target; sync wants one that exists.
	dst, err := openTarget(dstArg, rf, name == "seed")
	if err != nil {
		if name == "sync" && errors.Is(err, fs.ErrNotExist) {
			return transfer.Stats{}, sided("target", fmt.Errorf("%w (use 'deltasync seed' for a new target)", err))
		}
		return transfer.Stats{}, sided("target", err)
	}
	if err := checkSides(src, dst); err != nil {
		dst.Close()
		return transfer.Stats{}, err
	}
	if keep {
		if bt, ok := dst.(*blobTarget); !ok || bt.managed {
			dst.Close()
			return transfer.Stats{}, usagef(name, "-keep-* deletes old recovery points of a page blob target cut with -snapshot; %s has none (for files, use 'deltasync replicate')", shown(dstArg))
		}
	}
	// A block device's pages are dropped behind the comparison so a sync
	// does not evict the host's working set (-keep-cache keeps them).
	o.DropBehind = !rf.keepCache && (isBlockDevice(src) || isBlockDevice(dst))
	if isTerminal(os.Stderr) && !rf.json && !rf.quiet {
		rw.bar = newProgressBar(os.Stderr, int64(rf.bwlimit))
	}
	o.Progress = rw
	run := transfer.Sync
	if name == "seed" {
		run = transfer.Seed
	}
	points := watchPoints(ctx, dst)
	st, err := run(ctx, src, dst, &o)
	rw.finish(st, err)
	if err == nil {
		if rf.noPoint = points.skip(ctx, st); rf.noPoint == "" {
			err = finishTarget(ctx, dst)
		}
	}
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return st, err
}

// sameDisk reports whether src and dst name the same file (the same path,
// a hard link, a symbolic link) or the same block device (device nodes
// with one device number). Opening would refuse most such pairs anyway,
// but with a misleading "held by another opener" (the source's shared
// lock or O_EXCL), and -allow-live would let the run go on, reading and
// writing one disk. Errors are left to the opens, which report them.
func sameDisk(src, dst string) bool {
	a, err := os.Stat(src)
	if err != nil {
		return false
	}
	b, err := os.Stat(dst)
	if err != nil {
		return false
	}
	if os.SameFile(a, b) {
		return true
	}
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && a.Mode()&fs.ModeDevice != 0 && a.Mode()&fs.ModeCharDevice == 0 &&
		b.Mode()&fs.ModeDevice != 0 && b.Mode()&fs.ModeCharDevice == 0 && sa.Rdev == sb.Rdev
}

// printJSON prints the --json object of a run: its figures (partial
// when the run failed) and, when it failed, fail.
func printJSON(name, src, dst string, st transfer.Stats, bf *blobFlags, noPoint string, fail *jsonError) error {
	return json.NewEncoder(os.Stdout).Encode(result{
		Error:   fail,
		Command: name, Source: shown(src), Target: shown(dst),
		BytesCompared: st.Compared, BytesEqual: st.Equal, BytesWritten: st.Written, BytesZeroed: st.Zeroed,
		Extents: st.Extents, SourceRead: st.SourceRead, TargetRead: st.TargetRead,
		Resumed: st.Resumed, ResumedFrom: st.ResumedFrom, JournalDiscardedReason: st.JournalDiscardedReason, Verified: st.Verified,
		CopySeconds: st.Copy.Seconds(), FlushSeconds: st.Flush.Seconds(), VerifySeconds: st.Verify.Seconds(),
		Seconds:       st.Elapsed.Seconds(),
		PriorSnapshot: bf.priorSnapshot, RecoveryPoint: bf.recoveryPoint, NoRecoveryPoint: noPoint, DeletedRecoveryPoints: bf.deleted,
		SourceCredential: bf.srcCredential, TargetCredential: bf.dstCredential, CopyFallback: bf.copyFallback,
	})
}

func summary(name string, st transfer.Stats) string {
	s := fmt.Sprintf("%s: compared %s, wrote %s, zeroed %s, %d extents, in %.2fs (%s/s)",
		name, bytesHuman(st.Compared), bytesHuman(st.Written), bytesHuman(st.Zeroed), st.Extents,
		st.Elapsed.Seconds(), bytesHuman(int64(float64(st.Compared)/max(st.Elapsed.Seconds(), 1e-9))))
	if st.Resumed {
		s += fmt.Sprintf("; resumed at %s", bytesHuman(st.ResumedFrom))
	}
	if st.JournalDiscarded {
		s += "; journal not trusted (" + st.JournalDiscardedReason + "), compared everything"
	}
	if name == "seed" && !st.ProvenEmpty {
		s += "; the target was not proven empty, so it was synced (compared, only what differs written)"
	}
	if st.Verified {
		s += "; verified identical"
	}
	return s
}

func bytesHuman(n int64) string {
	f := float64(n)
	for _, u := range []string{"B", "KiB", "MiB", "GiB", "TiB"} {
		if f < 1024 || u == "TiB" {
			if u == "B" {
				return fmt.Sprintf("%d B", n)
			}
			return fmt.Sprintf("%.1f %s", f, u)
		}
		f /= 1024
	}
	return ""
}

// isBlockDevice reports whether d is a local block device.
func isBlockDevice(d any) bool {
	ld, ok := d.(*localdisk.Disk)
	return ok && ld.Kind() == localdisk.BlockDevice
}
