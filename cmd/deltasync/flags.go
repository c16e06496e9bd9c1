package main

import (
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/deltasync/deltasync/blockdiff"
	"github.com/deltasync/deltasync/localdisk"
	"github.com/deltasync/deltasync/transfer"
)

// size is a flag value in bytes that takes K, M, G, T suffixes (powers of
// 1024, with or without "iB").
type size int64

func (s *size) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *size) Set(v string) error {
	n, err := parseSize(v)
	*s = size(n)
	return err
}

func parseSize(v string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(v)), "IB"), "B")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q (want a number with an optional K, M, G or T suffix)", v)
	}
	return n * mult, nil
}

// runFlags are the flags of seed and sync.
type runFlags struct {
	blockSize, refine, memory, bwlimit, offset, length        size
	journalBytes                                              size
	concurrency, compareConcurrency                           int
	journalDir                                                string
	noJournal, discardJournal, verify, json, allowLive, quiet bool
	truncate, direct, noMmap, keepCache                       bool
	zeroMode, fsync, directReads                              string
	cmd                                                       string    // the command, for usage errors
	noPoint                                                   string    // why no recovery point was cut (points.go)
	blob                                                      blobFlags // page blob targets (blob.go)

	// agent:// disks (agent.go)
	agent agentFlags
	// one index of a fleet or a sliced disk (index.go)
	idx indexFlags
}

func newFlagSet(name string, rf *runFlags) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	rf.cmd = name
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: deltasync %s [flags] SRC DST\n", name)
		if name == "seed" {
			fmt.Fprint(w, "Fill a new target with SRC's data; zero blocks are not written. A target that\n"+
				"exists and is not proven empty is synced instead (compared, only what differs\n"+
				"written), and the summary says so.\n")
		} else {
			fmt.Fprint(w, "Make an existing DST identical to SRC, writing only the blocks that differ.\n")
		}
		fmt.Fprint(w, "An interrupted run (Ctrl-C, SIGTERM: exit 130, 143) resumes when the same\n"+
			"command is run again. A value of 0 for a flag means its default.\n"+sizesNote)
		fs.PrintDefaults()
	}
	fs.Var(&rf.blockSize, "block-size", "comparison block size: a multiple of 512 up to 4M (0: the default, 64K)")
	fs.Var(&rf.refine, "refine", "refine differing blocks to this size (a multiple of 512 dividing the block size; 0: off)")
	fs.IntVar(&rf.concurrency, "concurrency", 0, "writer goroutines (0: the default, 4)")
	fs.IntVar(&rf.compareConcurrency, "compare-concurrency", 0, "comparison workers (0: the default, max(4, CPUs))")
	fs.Var(&rf.memory, "memory", "memory budget of write buffers (0: the default, 64M)")
	fs.Var(&rf.bwlimit, "bwlimit", "bandwidth limit, bytes per second written, e.g. 20M (0: none)")
	fs.Var(&rf.offset, "offset", "work only from this offset (a multiple of 512)")
	fs.Var(&rf.length, "length", "work only on this many bytes from -offset (0: to the end)")
	fs.StringVar(&rf.journalDir, "journal-dir", "", "folder of resume journals (default "+journalDirDefault()+")")
	fs.Var(&rf.journalBytes, "journal-bytes", "bytes compared between journal checkpoints (0: the default, 64M; at least the block size)")
	fs.BoolVar(&rf.noJournal, "no-journal", false, "keep no journal: an interrupted run starts over")
	fs.BoolVar(&rf.discardJournal, "discard-bad-journal", false, "delete a journal that does not match this run instead of failing")
	fs.BoolVar(&rf.verify, "verify", false, "re-read both disks after the run (the target from the device) and prove them equal")
	fs.BoolVar(&rf.json, "json", false, "print one JSON object with the run's figures on stdout")
	fs.BoolVar(&rf.quiet, "q", false, "print nothing on stderr but errors: no summary line, no progress bar, no resuming note")
	fs.BoolVar(&rf.allowLive, "allow-live", false, "accept a source that is mounted or changes during the run (crash-inconsistent copy)")
	fs.BoolVar(&rf.truncate, "truncate", false, "shrink a target longer than the source (default: its tail is kept)")
	fs.BoolVar(&rf.direct, "direct", false, "open the target with O_DIRECT")
	fs.BoolVar(&rf.noMmap, "no-mmap", false, "read with pread instead of memory mappings")
	fs.StringVar(&rf.directReads, "direct-reads", "never", "how local disks are read: never (through the page cache), auto (O_DIRECT where not cached: less CPU, no cache eviction, slower on some disks), always (O_DIRECT)")
	fs.BoolVar(&rf.keepCache, "keep-cache", false, "keep a block device's pages in the page cache (default: dropped behind the comparison)")
	fs.StringVar(&rf.fsync, "fsync", "end", "when the target is flushed: end (durable when the command returns), checkpoint (also before every journal save), none (never, like cp and rsync)")
	fs.StringVar(&rf.zeroMode, "zero-mode", "punch", "how a file target clears zero ranges: punch (sparse), zero-range (keeps blocks), write")
	rf.blob.register(fs)
	rf.agent.register(fs)
	rf.idx.register(fs)
	return fs
}

func (rf *runFlags) durability() (transfer.Durability, error) {
	switch rf.fsync {
	case "end", "":
		return transfer.DurableEnd, nil
	case "checkpoint":
		return transfer.DurableCheckpoint, nil
	case "none":
		return transfer.DurableNone, nil
	}
	return 0, usagef(rf.cmd, "-fsync %q: want end, checkpoint or none", rf.fsync)
}

// directMode parses -direct-reads.
func directMode(s string) (blockdiff.DirectMode, error) {
	switch s {
	case "never", "":
		return blockdiff.DirectNever, nil
	case "auto":
		return blockdiff.DirectAuto, nil
	case "always":
		return blockdiff.DirectAlways, nil
	}
	return 0, fmt.Errorf("-direct-reads %q: want never, auto or always", s)
}

// journalDirDefault is the journal folder used without -journal-dir, as
// -h shows it: transfer.DefaultStateDir, resolved now.
func journalDirDefault() string {
	d, err := transfer.DefaultStateDir()
	if err != nil {
		return "$XDG_STATE_HOME/deltasync or ~/.local/state/deltasync: " + err.Error()
	}
	return d + ", from $XDG_STATE_HOME or ~/.local/state"
}

// journalDir is the folder this run keeps its journals in.
func (rf *runFlags) journalFolder() string {
	if rf.journalDir != "" {
		return rf.journalDir
	}
	d, _ := transfer.DefaultStateDir()
	return d
}

// journalPath is the file of the journal key in this run's folder
// (transfer.DirStore's naming).
func (rf *runFlags) journalPath(key string) string {
	return filepath.Join(rf.journalFolder(), key+".journal")
}

func (rf *runFlags) options() (transfer.Options, error) {
	for _, f := range []struct {
		name string
		v    int
	}{{"concurrency", rf.concurrency}, {"compare-concurrency", rf.compareConcurrency}} {
		if f.v < 0 {
			return transfer.Options{}, usagef(rf.cmd, "-%s %d: want a positive number, or 0 for the default", f.name, f.v)
		}
	}
	dur, err := rf.durability()
	if err != nil {
		return transfer.Options{}, err
	}
	if _, _, err := rf.blob.keep.policy(); err != nil {
		return transfer.Options{}, usagef(rf.cmd, "%v", err)
	}
	dm, err := directMode(rf.directReads)
	if err != nil {
		return transfer.Options{}, err
	}
	o := transfer.Options{
		BlockSize:          int(rf.blockSize),
		RefineSize:         int(rf.refine),
		Concurrency:        rf.concurrency,
		CompareConcurrency: rf.compareConcurrency,
		MemoryBudget:       int64(rf.memory),
		BandwidthLimit:     int64(rf.bwlimit),
		Offset:             int64(rf.offset),
		Length:             int64(rf.length),
		Verify:             rf.verify,
		AllowLive:          rf.allowLive,
		TruncateExcess:     rf.truncate,
		NoJournal:          rf.noJournal,
		JournalBytes:       int64(rf.journalBytes),
		DiscardBadJournal:  rf.discardJournal,
		NoMmap:             rf.noMmap,
		DirectReads:        dm,
		Durability:         dur,
	}
	if rf.journalDir != "" {
		o.Journal = transfer.DirStore{Dir: rf.journalDir}
	}
	return o, nil
}

func (rf *runFlags) zero() (localdisk.ZeroMode, error) {
	switch rf.zeroMode {
	case "punch", "":
		return localdisk.PunchHoleMode, nil
	case "zero-range":
		return localdisk.ZeroRangeMode, nil
	case "write":
		return localdisk.WriteZerosMode, nil
	}
	return 0, usagef(rf.cmd, "-zero-mode %q: want punch, zero-range or write", rf.zeroMode)
}
